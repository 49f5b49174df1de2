"""The asyncio TURN client against a real coturn on loopback: allocation with long-term
credentials, permissions, Send/Data indications, channels, refreshes and keepalives, a
stale nonce (438), and the bad cases: wrong password, allocation quota reached, server
gone mid-allocation -- each a clear error in bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import CoturnFactory, start_coturn
from warpgate.turn import TurnClient, TurnClosed, TurnError
from warpgate.turn.coturn import Coturn

Addr = tuple[str, int]


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    """One coturn for the tests that neither stop it nor change its settings."""
    with contextlib.ExitStack() as stack:
        yield start_coturn(stack)


def _peer_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, Addr]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        data, addr = await loop.sock_recvfrom(sock, 4096)
    return data, (addr[0], addr[1])


def _client(
    server: Coturn, **kwargs: object
) -> tuple[TurnClient, asyncio.Queue[tuple[Addr, bytes]]]:
    got: asyncio.Queue[tuple[Addr, bytes]] = asyncio.Queue()
    client = TurnClient(
        server.address,
        str(kwargs.pop("username", server.username)),
        str(kwargs.pop("password", server.password)),
        on_data=lambda peer, data: got.put_nowait((peer, data)),
        **kwargs,  # type: ignore[arg-type]
    )
    return client, got


def _close_reason() -> tuple[asyncio.Future[str], Callable[[str], object]]:
    """A future for the reason a client closed, and the ``on_closed`` that sets it."""
    closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    return closed, lambda reason: closed.done() or closed.set_result(reason)


async def test_relays_both_ways_by_indication_then_channel(coturn: Coturn) -> None:
    client, got = _client(coturn)
    peer = _peer_socket()
    try:
        alloc = await client.allocate()
        assert alloc.relayed[0] == "127.0.0.1" and alloc.mapped == client.local
        me = peer.getsockname()
        # Without a permission the relay drops the peer's datagram.
        peer.sendto(b"too early", alloc.relayed)
        await asyncio.sleep(0.2)
        assert got.empty()
        await client.create_permission([me])
        peer.sendto(b"hello relay", alloc.relayed)
        assert await asyncio.wait_for(got.get(), 2) == (me, b"hello relay")
        client.send(me, b"by send indication")
        assert await _recv(peer) == (b"by send indication", alloc.relayed)
        channel = await client.bind_channel(me)
        assert channel == 0x4000
        client.send(me, b"by channel" * 100)
        assert await _recv(peer) == (b"by channel" * 100, alloc.relayed)
        peer.sendto(b"back by channel", alloc.relayed)
        assert await asyncio.wait_for(got.get(), 2) == (me, b"back by channel")
    finally:
        await client.aclose()
        peer.close()
    with pytest.raises(TurnClosed):
        client.send(me, b"after close")


async def test_keepalive_refreshes_keep_the_allocation(coturn: Coturn) -> None:
    client, got = _client(coturn, keepalive=0.3)
    peer = _peer_socket()
    try:
        alloc = await client.allocate()
        await client.bind_channel(peer.getsockname())
        await asyncio.sleep(2.5)
        assert client.refreshes >= 2 and not client.closed
        peer.sendto(b"still here", alloc.relayed)
        assert (await asyncio.wait_for(got.get(), 2))[1] == b"still here"
    finally:
        await client.aclose()
        peer.close()


async def test_wrong_password_is_a_clear_error_at_once(coturn_factory: CoturnFactory) -> None:
    server = coturn_factory()
    client, _ = _client(server, password="not-the-password")
    begin = time.monotonic()
    with pytest.raises(TurnError, match="rejected the credentials") as info:
        await client.allocate()
    assert info.value.code == 401 and time.monotonic() - begin < 2
    assert client.closed


async def test_quota_reached_is_a_clear_error(coturn_factory: CoturnFactory) -> None:
    server = coturn_factory(user_quota=1)
    first, _ = _client(server)
    second, _ = _client(server)
    try:
        await first.allocate()
        with pytest.raises(TurnError, match="quota") as info:
            await second.allocate()
        assert info.value.code == 486
        await first.aclose()  # releases the allocation: coturn frees the quota about 1 s later
        for _ in range(20):
            third, _ = _client(server)
            try:
                await third.allocate()
                break
            except TurnError as exc:
                assert exc.code == 486
                await asyncio.sleep(0.25)
        assert third.allocation is not None
        await third.aclose()
    finally:
        await first.aclose()


async def test_stale_nonce_is_renewed_transparently(coturn_factory: CoturnFactory) -> None:
    server = coturn_factory(extra="stale-nonce=1\n")
    client, got = _client(server)
    peer = _peer_socket()
    try:
        alloc = await client.allocate()
        first_nonce = client.auth.nonce
        await asyncio.sleep(2.2)
        await client.create_permission([peer.getsockname()])  # answered 438, then signed again
        assert client.auth.nonce != first_nonce
        peer.sendto(b"after 438", alloc.relayed)
        assert (await asyncio.wait_for(got.get(), 2))[1] == b"after 438"
    finally:
        await client.aclose()
        peer.close()


async def test_server_gone_mid_allocation_closes_in_bounded_time(
    coturn_factory: CoturnFactory,
) -> None:
    server = coturn_factory()
    closed, on_closed = _close_reason()
    client, _ = _client(server, keepalive=1.0, timeout=2.0, on_closed=on_closed)
    try:
        await client.allocate()
        server.stop()
        begin = time.monotonic()
        reason = await asyncio.wait_for(closed, 6.0)
        assert time.monotonic() - begin < 4.5
        assert "relay lost" in reason and "127.0.0.1" in reason
        with pytest.raises(TurnClosed):
            client.send(("127.0.0.1", 9), b"x")
    finally:
        await client.aclose()


async def test_no_server_listening_fails_fast() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()
    probe.close()
    client = TurnClient(dead, "u", "p", timeout=3.0)
    begin = time.monotonic()
    with pytest.raises(TurnError, match="unreachable|did not answer"):
        await client.allocate()
    assert time.monotonic() - begin < 3.5


async def test_tcp_allocation_relays_a_peer_connection(coturn: Coturn) -> None:
    """RFC 6062: a TCP allocation over a TCP control connection; a peer connects to the
    relayed address, ConnectionAttempt names it, ConnectionBind turns a second
    connection into a byte pipe to it."""
    from warpgate.turn.tcp_relay import open_data_connection

    attempts: asyncio.Queue[tuple[int, Addr]] = asyncio.Queue()
    client = TurnClient(
        coturn.address,
        coturn.username,
        coturn.password,
        protocol="tcp",
        on_connection_attempt=lambda cid, peer: attempts.put_nowait((cid, peer)),
    )
    loop = asyncio.get_running_loop()
    try:
        alloc = await client.allocate()
        with pytest.raises(TurnError, match="data connections"):
            client.send(("127.0.0.1", 9), b"no datagrams on a TCP allocation")
        await client.create_permission([("127.0.0.1", 0)])
        reader, writer = await asyncio.open_connection(*alloc.relayed)
        cid, peer = await asyncio.wait_for(attempts.get(), 3)
        assert peer == writer.get_extra_info("sockname")[:2]
        with pytest.raises(TurnError):
            await open_data_connection(client, cid + 1, timeout=3)  # an unknown id
        sock = await open_data_connection(client, cid, timeout=3)
        await loop.sock_sendall(sock, b"x" * 100_000)
        assert await asyncio.wait_for(reader.readexactly(100_000), 3) == b"x" * 100_000
        writer.write(b"back")
        await writer.drain()
        assert await asyncio.wait_for(loop.sock_recv(sock, 10), 3) == b"back"
        sock.close()
        writer.close()
    finally:
        await client.aclose()


async def test_tcp_control_connection_lost_closes_the_allocation(
    coturn_factory: CoturnFactory,
) -> None:
    server = coturn_factory()
    closed, on_closed = _close_reason()
    client, _ = _client(server, protocol="tcp", on_closed=on_closed)
    try:
        await client.allocate()
        server.stop()
        reason = await asyncio.wait_for(closed, 3.0)  # the server's FIN, at once
        assert "relay lost" in reason
    finally:
        await client.aclose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_loopback_coturn_does_not_outlive_a_killed_user(tmp_path: Path) -> None:
    """A process that starts a loopback coturn and is killed (no cleanup runs) leaves no
    coturn running: the server gets SIGTERM when its starter dies."""
    code = (
        "import os\n"
        "from warpgate.turn.coturn import loopback_coturn\n"
        "server = loopback_coturn().__enter__()\n"
        "print(server.process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the starter did not run")
    if "CoturnUnavailable" in out.stderr:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    assert not _running(pid), f"coturn {pid} outlived the process that started it"


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
