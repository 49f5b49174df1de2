"""The ``turn`` traversal method on loopback, through a real coturn: two nodes connect
by relay only, the link works both ways, the relay carries only ciphertext, closing the
link releases the allocation, and a relay that goes away closes the link with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import CoturnFactory, conf
from warpgate import Node, auto_connect
from warpgate.connect import ConnectError
from warpgate.link.link import Link, LinkPath
from warpgate.plugin import hookimpl
from warpgate.turn import TurnClient, TurnError
from warpgate.turn.coturn import Coturn

SECRET = b"the relay must never see this sentence in the clear"


@pytest.fixture
def coturn(coturn_factory: CoturnFactory) -> Coturn:
    return coturn_factory()


class PathWatcher:
    """A plugin that records (node, old kind, new kind) for every link path change."""

    def __init__(self, changes: list[tuple[str, str, str]]) -> None:
        self.changes = changes

    @hookimpl
    def warpgate_link_path_changed(
        self, node: Node, link: object, old: LinkPath, new: LinkPath
    ) -> None:
        self.changes.append((node.conf["identity_name"], old.kind, new.kind))


def _turn_conf(name: str, server: Coturn, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "turn_servers": [f"{server.host}:{server.port}"],
        "turn_username": server.username,
        "turn_password": server.password,
        "sig_pipe_no": 1,
        "plugins": {"signal": ["memory"]},
    }
    return conf(name, **{**settings, **extra})


@contextlib.asynccontextmanager
async def _turn_pair(
    server: Coturn, *, watch: list[tuple[str, str, str]] | None = None, **alice_extra: object
) -> AsyncIterator[tuple[Node, Node]]:
    """alice (with ``alice_extra`` conf) and bob, started, relaying through ``server``;
    with ``watch``, their link path changes are recorded there."""

    def plugins() -> list[object]:
        return [PathWatcher(watch)] if watch is not None else []

    async with (
        Node(
            ip="127.0.0.1",
            port=0,
            conf=_turn_conf("alice", server, **alice_extra),
            plugins=plugins(),
        ) as a,
        Node(ip="127.0.0.1", port=0, conf=_turn_conf("bob", server), plugins=plugins()) as b,
    ):
        await a.start()
        await b.start()
        yield a, b


@pytest.fixture
async def relay_pair(coturn: Coturn) -> AsyncIterator[tuple[Node, Node]]:
    async with _turn_pair(coturn) as pair:
        yield pair


async def test_relayed_link_round_trip_and_paths(
    relay_pair: tuple[Node, Node], coturn: Coturn
) -> None:
    a, b = relay_pair
    link, method = await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
    assert method == "turn" and link.path.kind == "relay" and link.path.transport == "udp"
    assert link.path.local[0] == coturn.host and link.path.local[1] != a.listen_port
    inbound = await b.accept(timeout=3)
    assert inbound.remote_key == a.public_key
    assert inbound.path.kind == "relay" and inbound.path.method == "turn"
    assert inbound.path.remote == link.path.local  # bob talks to alice's relayed address
    for i in range(20):
        await link.send(b"%d " % i + SECRET)
    got = {await inbound.recv(3) for _ in range(20)}
    assert got == {b"%d " % i + SECRET for i in range(20)}
    await inbound.send(b"reply")
    assert await link.recv(3) == b"reply"
    assert await link.ping(timeout=3) > 0


async def test_the_relay_sees_only_ciphertext(relay_pair: tuple[Node, Node]) -> None:
    """Capture every byte alice's TURN client exchanges with coturn: the secret never
    appears, in either direction, though it crossed the relay both ways."""
    a, b = relay_pair
    seen: list[bytes] = []
    original_send = TurnClient.send
    original_recv = TurnClient._datagram

    def spy_send(self: TurnClient, peer: tuple[str, int], data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        real = transport.sendto

        def capture(raw: bytes, *args: object) -> None:
            seen.append(bytes(raw))
            real(raw, *args)

        transport.sendto = capture  # type: ignore[method-assign]
        try:
            original_send(self, peer, data)
        finally:
            transport.sendto = real  # type: ignore[method-assign]

    def spy_recv(self: TurnClient, data: bytes) -> None:
        seen.append(bytes(data))
        original_recv(self, data)

    TurnClient.send = spy_send  # type: ignore[method-assign]
    TurnClient._datagram = spy_recv  # type: ignore[method-assign]
    try:
        link, _ = await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        inbound = await b.accept(timeout=3)
        await link.send(SECRET)
        assert await inbound.recv(3) == SECRET
        await inbound.send(SECRET[::-1])
        assert await link.recv(3) == SECRET[::-1]
    finally:
        TurnClient.send = original_send  # type: ignore[method-assign]
        TurnClient._datagram = original_recv  # type: ignore[method-assign]
    wire = b"".join(seen)
    assert len(seen) >= 4
    for needle in (SECRET, SECRET[::-1], SECRET[:16], SECRET[::-1][:16]):
        assert needle not in wire


async def test_closing_the_link_releases_the_allocation(coturn_factory: CoturnFactory) -> None:
    """With a quota of one allocation, a second relayed link is possible only once the
    first one's allocation was released by closing it."""
    server = coturn_factory(user_quota=1)
    async with _turn_pair(server) as (a, b):
        link, _ = await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        with pytest.raises(ConnectError, match="quota"):
            await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        await link.close()
        deadline = time.monotonic() + 6
        while True:
            try:
                second, _ = await auto_connect(
                    a, b.address(), methods=["turn"], transport="udp", timeout=8
                )
                break
            except ConnectError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        assert second.path.kind == "relay"


async def test_wrong_password_is_a_clear_connect_error(coturn: Coturn) -> None:
    async with _turn_pair(coturn, turn_password="wrong") as (a, b):
        begin = time.monotonic()
        with pytest.raises(ConnectError, match="rejected the credentials"):
            await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        assert time.monotonic() - begin < 3


async def test_relay_gone_mid_link_closes_the_link_with_a_reason(coturn: Coturn) -> None:
    async with _turn_pair(coturn, turn_keepalive=1.0, turn_timeout=2.0) as (a, b):
        link, _ = await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        coturn.stop()
        begin = time.monotonic()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await link.recv(timeout=8)  # returns (raises) once the link closes
        assert link.closed and time.monotonic() - begin < 5
        assert "relay lost" in link._close_reason
        with pytest.raises(ConnectionError):
            await link.send(b"after the relay went away")


async def test_candidates_need_a_server_and_a_visible_peer(relay_pair: tuple[Node, Node]) -> None:
    a, b = relay_pair
    from warpgate.sansio.address import parse_address

    peer = parse_address(b.address())
    turn = a.traversal_methods["turn"]
    assert [c.cost for c in turn.candidates(peer, transport="udp")] == [50.0]
    assert [c.transport for c in turn.candidates(peer, transport="tcp")] == ["tcp"]
    turn_servers, turn.servers = turn.servers, []
    try:
        assert turn.candidates(peer, transport="udp") == []
        # A public relay cannot see a peer by its loopback/LAN address, and the peer
        # measured no external address: over UDP the peer is asked for it, over TCP the
        # permission must come first, so there is no candidate.
        turn.servers = [("203.0.113.10", 3478)]
        assert [c.note for c in turn.candidates(peer, transport="udp")] == [
            "relay, peer's address asked"
        ]
        assert turn.candidates(peer, transport="tcp") == []
        with_ext = dataclasses.replace(
            peer,
            interfaces=[
                dataclasses.replace(i, ext_ip=ipaddress.ip_address("198.51.100.20"))
                for i in peer.interfaces
            ],
        )
        assert len(turn.candidates(with_ext, transport="udp")) == 1
    finally:
        turn.servers = turn_servers


async def test_tcp_relay_rfc6062_gives_a_stream_link(relay_pair: tuple[Node, Node]) -> None:
    """transport="tcp" through the relay: a TCP allocation, the peer connects to the
    relayed address, ConnectionBind, and the TCP link handshake over the data
    connection; large messages and streams work as on any TCP link."""
    a, b = relay_pair
    link, method = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
    assert method == "turn" and link.path.transport == "tcp" and link.path.kind == "relay"
    inbound = await b.accept(timeout=3)
    assert inbound.remote_key == a.public_key and inbound.path.kind == "relay"
    big = SECRET * 20_000  # ~1 MB: more than any datagram
    await link.send(big)
    assert await inbound.recv(5) == big
    await inbound.send(b"reply")
    assert await link.recv(3) == b"reply"
    await link.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        await inbound.recv(3)
    assert inbound.closed


async def test_relay_first_link_upgrades_to_direct_without_losing_messages(
    coturn: Coturn,
) -> None:
    """turn_relay_first: the link is relayed at once, then both ends prove the direct
    path (loopback here) and move to it; the hook reports each change, and messages
    sent all along arrive once each."""
    changes: list[tuple[str, str, str]] = []

    async with _turn_pair(coturn, watch=changes, turn_relay_first=True) as (a, b):
        turn = a.traversal_methods["turn"]
        for _ in range(100):  # relay-first keeps an allocation ready (bounded wait)
            if turn._warm is not None:
                break
            await asyncio.sleep(0.02)
        warm = turn._warm
        assert warm is not None and warm.allocation is not None
        link, method = await auto_connect(a, b.address(), transport="udp", timeout=8)
        assert method == "turn", link.trace
        # (The link may already be direct here: loopback proves the path in a moment.)
        relay_path = turn.upgrades[link].relay_path
        assert relay_path.kind == "relay"
        assert relay_path.local == warm.allocation.relayed, "the warm allocation was used"
        inbound = await b.accept(timeout=3)
        sent = 0
        received: list[bytes] = []
        for _ in range(1000):  # bounded: ~10 s (a loaded CI machine is slow to prove it)
            await link.send(b"m%d" % sent)
            sent += 1
            with contextlib.suppress(TimeoutError):
                received.append(await inbound.recv(0.01))
            if link.path.kind == "direct" and inbound.path.kind == "direct":
                break
        assert link.path.kind == "direct" and inbound.path.kind == "direct"
        assert link.path.remote == ("127.0.0.1", b.listen_port)
        assert ("alice", "relay", "direct") in changes and ("bob", "relay", "direct") in changes
        await link.send(b"last")
        while True:
            msg = await inbound.recv(3)
            if msg == b"last":
                break
            received.append(msg)
        assert sorted(received, key=lambda m: int(m[1:])) == [b"m%d" % i for i in range(sent)]
        await inbound.send(b"back direct")
        assert await link.recv(3) == b"back direct"
        # While direct, bob still pings over the relay now and then, keeping his NAT's
        # mapping toward it (and so the fallback path) alive: alice's TURN client hears it.
        b.traversal_methods["turn"].upgrades[inbound].settings.relay_keepalive = 0.2
        client = warm  # the allocation this link uses
        heard = client._last_heard
        await asyncio.sleep(1.0)
        assert client._last_heard > heard


async def test_a_direct_link_outlives_its_relay(coturn: Coturn) -> None:
    """Once a relay-first link went direct, losing the relay does not close it."""
    fast = {"turn_relay_first": True, "turn_keepalive": 0.5, "turn_timeout": 1.0}
    async with _turn_pair(coturn, **fast) as (a, b):
        link, method = await auto_connect(a, b.address(), transport="udp", timeout=8)
        inbound = await b.accept(timeout=3)
        upgrade = a.traversal_methods["turn"].upgrades[link]
        for _ in range(150):  # bounded: 3 s
            if link.path.kind == "direct":
                break
            await asyncio.sleep(0.02)
        assert method == "turn" and link.path.kind == "direct"
        coturn.stop()
        for _ in range(200):  # bounded: 4 s; the TURN client notices within ~1.5 s
            if upgrade.relay_lost:
                break
            await asyncio.sleep(0.02)
        assert upgrade.relay_lost and not link.closed
        await link.send(b"still here")
        assert await inbound.recv(3) == b"still here"


async def test_closing_the_node_releases_its_allocations(coturn_factory: CoturnFactory) -> None:
    """A node that closes with relayed links open releases their allocations, and its
    warm one: with a quota of two, a new node can allocate twice right after."""
    server = coturn_factory(user_quota=2)
    async with Node(ip="127.0.0.1", port=0, conf=_turn_conf("bob", server)) as b:
        await b.start()
        a = Node(ip="127.0.0.1", port=0, conf=_turn_conf("alice", server, turn_relay_first=True))
        await a.start()
        await auto_connect(a, b.address(), methods=["turn"], transport="udp", timeout=8)
        await a.close()  # a relayed link and (relay-first) a warm allocation
        clients: list[TurnClient] = []
        try:
            for _ in range(2):
                clients.append(await _allocate_with_patience(server))
            assert all(c.allocation is not None for c in clients)
        finally:
            for client in clients:
                await client.aclose()


async def _allocate_with_patience(server: Coturn) -> TurnClient:
    """Allocate, retrying while coturn still counts released allocations (about 1 s)."""
    for _ in range(20):
        client = TurnClient(server.address, server.username, server.password)
        try:
            await client.allocate()
            return client
        except TurnError as exc:
            assert exc.code == 486
            await asyncio.sleep(0.25)
    raise AssertionError("the quota never freed up")


async def test_turn_passes_the_traversal_method_conformance_check(coturn: Coturn) -> None:
    from warpgate.testing.conformance import check_traversal_method

    done = await check_traversal_method(
        "turn",
        conf={
            "turn_servers": [f"{coturn.host}:{coturn.port}"],
            "turn_username": coturn.username,
            "turn_password": coturn.password,
        },
    )
    assert "tcp: authenticated link, message round trip" in done
    assert "udp: authenticated link, message round trip" in done
    assert "closed without leaving tasks" in done


async def test_relay_first_stream_link_moves_to_direct_in_order(coturn: Coturn) -> None:
    """transport="tcp" through the relay, then the same link moves to a direct TCP link
    (loopback here) while messages flow both ways: every message arrives once, in order,
    and the relayed link and its allocation are released."""
    changes: list[tuple[str, str, str]] = []

    async with _turn_pair(coturn, watch=changes) as (a, b):
        link, method = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        assert method == "turn" and link.path.kind == "relay" and link.path.transport == "tcp"
        inbound = await b.accept(timeout=3)
        # On loopback the move may be under way already: the inner link is the relayed one.
        assert inbound.relayed.path.kind == "relay"  # type: ignore[attr-defined]
        assert inbound.remote_key == a.public_key
        relayed = link.relayed  # type: ignore[attr-defined]

        async def flood(sender: object, count: int, tag: bytes) -> None:
            for i in range(count):
                await sender.send(tag + b"%d" % i)  # type: ignore[attr-defined]
                if i >= count // 3 and i % 10 == 0:  # a first burst, then a steady flow
                    await asyncio.sleep(0.005)

        async def drain(receiver: object, count: int) -> list[bytes]:
            return [await receiver.recv(5) for _ in range(count)]  # type: ignore[attr-defined]

        n = 400
        got_b, got_a, _, _ = await asyncio.gather(
            drain(inbound, n), drain(link, n), flood(link, n, b"a"), flood(inbound, n, b"b")
        )
        assert got_b == [b"a%d" % i for i in range(n)]
        assert got_a == [b"b%d" % i for i in range(n)]
        for _ in range(100):  # bounded: 2 s
            if link.path.kind == "direct" and inbound.path.kind == "direct":
                break
            await asyncio.sleep(0.02)
        assert link.path.kind == "direct" and inbound.path.kind == "direct"
        assert ("alice", "relay", "direct") in changes and ("bob", "relay", "direct") in changes
        assert not relayed.closed, "the relayed link stays as the standby for a fallback"
        # The move happened mid-stream: bob read part of alice's messages on each link.
        on = inbound.delivered_from  # type: ignore[attr-defined]
        assert on["relay"] > 0 and on["direct"] > 0 and on["relay"] + on["direct"] == n
        await link.send(b"after the move")
        assert await inbound.recv(3) == b"after the move"
        # Liveness is the inner links': a keepalive loop sees the wrapper hear the peer
        # (where links track it: Link.last_received).
        if hasattr(Link, "send_keepalive"):
            heard = link.last_received  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
            await link.ping(timeout=3)
            assert link.last_received > heard  # type: ignore[attr-defined]
        await link.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await inbound.recv(3)
        assert inbound.closed
        assert relayed.closed, "closing the link releases the standby relay"
