"""The STUN client against tiny responders on 127.0.0.1 built from our own codec:
one that answers, one that never answers, one that answers with the wrong transaction id
or a broken FINGERPRINT, one that refuses, and the same over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from warpgate.sansio import stun
from warpgate.sansio.stun import Attr, ErrorCode, StunClass, StunMessage
from warpgate.stun import BindingTransaction, StunUnavailable, race_bindings, stun_binding

LOCAL = "127.0.0.1"


def answer(request: StunMessage, addr: tuple[str, int], **kw: Any) -> StunMessage:
    attrs: list[tuple[int, Any]] = [(Attr.XOR_MAPPED_ADDRESS, (addr[0], addr[1]))]
    for kind in (Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS):
        if kind.name.lower() in kw:
            attrs.append((kind, kw[kind.name.lower()]))
    attrs.append((Attr.SOFTWARE, "warpgate test responder"))
    return StunMessage(request.method, StunClass.SUCCESS, request.transaction_id, tuple(attrs))


class Responder(asyncio.DatagramProtocol):
    """A STUN Binding responder with a ``mode``:

    ``ok``; ``silent`` (never answers); ``wrong-tid`` (answers, always with another
    transaction id); ``junk-first`` (a wrong-tid answer, a broken FINGERPRINT, a
    non-STUN datagram, then the real answer); ``drop-first`` (ignores the first
    request); ``error`` (420); ``no-mapped`` (success without an address);
    ``unknown-required`` (success with an unknown comprehension-required attribute).
    With ``alt`` set, a CHANGE-REQUEST is answered from that other socket.
    """

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[tuple[float, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.alt: Responder | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            request = stun.decode(data)
        except stun.StunError:
            return
        self.requests.append((time.monotonic(), request.transaction_id))
        if self.mode == "silent" or (self.mode == "drop-first" and len(self.requests) == 1):
            return
        out = self.transport
        change = request.get(Attr.CHANGE_REQUEST)
        if isinstance(change, stun.ChangeRequest) and any(change) and self.alt is not None:
            assert self.alt.transport is not None
            out = self.alt.transport
        origin = out.get_extra_info("sockname")[:2]
        extra: dict[str, Any] = {"response_origin": origin}
        if self.alt is not None:
            extra["other_address"] = self.alt.address
        reply = answer(request, addr, **extra)
        if self.mode == "wrong-tid":
            reply = StunMessage(
                reply.method, reply.cls, stun.new_transaction_id(), reply.attributes
            )
        elif self.mode == "junk-first":
            wrong = StunMessage(
                reply.method, reply.cls, stun.new_transaction_id(), reply.attributes
            )
            out.sendto(stun.encode(wrong), addr)
            broken = bytearray(stun.encode(reply))
            broken[-1] ^= 0xFF
            out.sendto(bytes(broken), addr)
            out.sendto(b"\x80not stun at all", addr)
        elif self.mode == "error":
            reply = StunMessage(
                request.method,
                StunClass.ERROR,
                request.transaction_id,
                ((Attr.ERROR_CODE, ErrorCode(420, "Unknown Attribute")),),
            )
        elif self.mode == "unknown-required":
            reply = StunMessage(
                reply.method, reply.cls, reply.transaction_id, (*reply.attributes, (0x7ABC, b"?"))
            )
        elif self.mode == "no-mapped":
            reply = StunMessage(request.method, StunClass.SUCCESS, request.transaction_id, ())
        out.sendto(stun.encode(reply), addr)


@pytest.fixture
async def responders() -> AsyncIterator[Callable[..., Any]]:
    made: list[asyncio.DatagramTransport] = []
    loop = asyncio.get_running_loop()

    async def make(mode: str = "ok", host: str = LOCAL) -> Responder:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: Responder(mode), local_addr=(host, 0)
        )
        made.append(transport)
        return protocol

    yield make
    for transport in made:
        transport.close()
    await asyncio.sleep(0)


def closed_udp_port() -> tuple[str, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()


# ------------------------------------------------------------------ UDP


async def test_binding_reports_the_mapped_address(responders: Callable[..., Any]) -> None:
    server = await responders()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        result = await stun_binding(server.address, sock=sock, timeout=2)
        assert result.mapped == sock.getsockname()
        assert result.local == sock.getsockname()
        assert sock.getblocking()  # restored, and left open for its owner
    assert result.server == server.address
    assert result.response_origin == server.address
    assert result.other_address is None
    assert result.transport == "udp"
    assert result.software == "warpgate test responder"
    assert 0 <= result.rtt < 1


async def test_binding_with_its_own_socket(responders: Callable[..., Any]) -> None:
    server = await responders()
    result = await stun_binding(server.address, local_addr=(LOCAL, 0), timeout=2)
    assert result.mapped[0] == LOCAL
    assert result.mapped == result.local


async def test_retransmits_on_the_rfc_schedule(responders: Callable[..., Any]) -> None:
    server = await responders("drop-first")
    result = await stun_binding(server.address, timeout=3)
    assert result.mapped[0] == LOCAL
    (t0, tid0), (t1, tid1) = server.requests
    assert tid0 == tid1  # a retransmission, not a new transaction
    assert 0.4 < t1 - t0 < 0.8
    assert result.rtt < 0.3  # measured from the retransmission


async def test_a_silent_server_times_out_within_the_timeout(responders: Callable[..., Any]) -> None:
    server = await responders("silent")
    start = time.monotonic()
    with pytest.raises(StunUnavailable) as info:
        await stun_binding(server.address, timeout=1.8)
    elapsed = time.monotonic() - start
    assert 1.7 < elapsed < 2.5
    host, port = server.address
    assert info.value.outcomes == {f"{host}:{port}": "no answer within 1.8s"}
    # Sent at 0, 0.5 and 1.5 s (RTO 500 ms doubling), then no more.
    times = [t - server.requests[0][0] for t, _ in server.requests]
    assert len(times) == 3
    assert times[1] == pytest.approx(0.5, abs=0.15)
    assert times[2] == pytest.approx(1.5, abs=0.2)


async def test_answers_with_another_transaction_id_are_ignored(
    responders: Callable[..., Any],
) -> None:
    server = await responders("wrong-tid")
    with pytest.raises(StunUnavailable, match="no answer within"):
        await stun_binding(server.address, timeout=0.8)


async def test_junk_before_the_answer_is_ignored(responders: Callable[..., Any]) -> None:
    server = await responders("junk-first")
    result = await stun_binding(server.address, timeout=2)
    assert result.mapped[0] == LOCAL
    assert len(server.requests) == 1


async def test_an_error_response_ends_the_transaction(responders: Callable[..., Any]) -> None:
    server = await responders("error")
    start = time.monotonic()
    with pytest.raises(StunUnavailable, match="420 Unknown Attribute"):
        await stun_binding(server.address, timeout=3)
    assert time.monotonic() - start < 1


async def test_a_success_without_an_address_is_unusable(responders: Callable[..., Any]) -> None:
    server = await responders("no-mapped")
    with pytest.raises(StunUnavailable, match="without a mapped address"):
        await stun_binding(server.address, timeout=2)


async def test_unknown_required_attributes_make_an_answer_unusable(
    responders: Callable[..., Any],
) -> None:
    server = await responders("unknown-required")
    with pytest.raises(StunUnavailable, match="comprehension-required attributes 0x7abc"):
        await stun_binding(server.address, timeout=2)


async def test_a_closed_port_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(StunUnavailable, match="port unreachable"):
        await stun_binding(closed_udp_port(), timeout=3)
    assert time.monotonic() - start < 1


async def test_change_request_is_answered_from_the_other_address(
    responders: Callable[..., Any],
) -> None:
    primary = await responders()
    primary.alt = await responders()
    plain = await stun_binding(primary.address, timeout=2)
    assert plain.response_origin == primary.address
    assert plain.other_address == primary.alt.address
    changed = await stun_binding(primary.address, timeout=2, change_ip=True, change_port=True)
    assert changed.response_origin == primary.alt.address
    assert changed.mapped[0] == LOCAL
    assert primary.alt.requests == []  # the request went to the primary only


async def test_race_is_not_stalled_by_a_dead_server(responders: Callable[..., Any]) -> None:
    dead = await responders("silent")
    liar = await responders("wrong-tid")
    good = await responders()
    start = time.monotonic()
    result = await race_bindings([dead.address, liar.address, good.address], timeout=5)
    assert time.monotonic() - start < 0.5
    assert result.server == good.address
    assert len(dead.requests) == 1  # the others were cancelled, not retransmitted


async def test_race_on_a_shared_socket_reports_that_sockets_mapping(
    responders: Callable[..., Any],
) -> None:
    dead = await responders("silent")
    good = await responders("drop-first")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCAL, 0))
        result = await race_bindings([dead.address, good.address], sock=sock, timeout=3)
        assert result.mapped == sock.getsockname()
    assert result.server == good.address


async def test_race_all_failing_names_every_server(responders: Callable[..., Any]) -> None:
    dead = await responders("silent")
    liar = await responders("wrong-tid")
    refusing = await responders("error")
    start = time.monotonic()
    with pytest.raises(StunUnavailable) as info:
        await race_bindings(
            [dead.address, liar.address, refusing.address, ("203.0.113.999", 3478)],
            timeout=1.0,
        )
    assert time.monotonic() - start < 1.6
    outcomes = info.value.outcomes
    fmt = "{}:{}".format
    assert outcomes[fmt(*dead.address)] == "no answer within 1.0s"
    assert outcomes[fmt(*liar.address)] == "no answer within 1.0s"
    assert "420" in outcomes[fmt(*refusing.address)]
    assert "cannot resolve" in outcomes["203.0.113.999:3478"]
    for server in outcomes:
        assert server in str(info.value)


async def test_race_with_no_servers_is_unavailable() -> None:
    with pytest.raises(StunUnavailable, match="no servers"):
        await race_bindings([])


async def test_a_transaction_fed_by_its_socket_owner(responders: Callable[..., Any]) -> None:
    """A component that owns its socket runs the transaction and feeds it datagrams."""
    server = await responders("junk-first")
    loop = asyncio.get_running_loop()
    txn = BindingTransaction(server.address)
    fed: list[bool] = []

    class Owner(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if stun.is_stun(data):
                fed.append(txn.feed(data, addr))

    transport, _ = await loop.create_datagram_endpoint(Owner, local_addr=(LOCAL, 0))
    try:
        result = await txn.run(lambda data: transport.sendto(data, server.address), timeout=2)
    finally:
        transport.close()
    assert result.mapped == transport.get_extra_info("sockname")[:2]
    assert fed[-1] is True and fed.count(True) == 1  # the wrong-tid answer was refused


# ------------------------------------------------------------------ TCP


@pytest.fixture
async def tcp_responder() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def make(mode: str = "ok") -> tuple[str, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                header = await reader.readexactly(20)
                body = await reader.readexactly(stun.message_length(header) - 20)
                request = stun.decode(header + body)
                peer = writer.get_extra_info("peername")[:2]
                reply = answer(request, peer)
                if mode == "junk-first":
                    wrong = StunMessage(
                        reply.method, reply.cls, stun.new_transaction_id(), reply.attributes
                    )
                    writer.write(stun.encode(wrong))
                if mode == "garbage":
                    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                elif mode != "silent":
                    writer.write(stun.encode(reply))
                await writer.drain()
                if mode == "silent":
                    await asyncio.sleep(10)
                await reader.read()  # until the client closes
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

        server = await asyncio.start_server(handle, LOCAL, 0)
        servers.append(server)
        return server.sockets[0].getsockname()[:2]

    yield make
    for server in servers:
        server.close()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


async def test_binding_over_tcp(tcp_responder: Callable[..., Any]) -> None:
    address = await tcp_responder("junk-first")
    result = await stun_binding(address, transport="tcp", timeout=2)
    assert result.transport == "tcp"
    assert result.mapped == result.local
    assert result.mapped[0] == LOCAL


async def test_tcp_failures_are_unavailable(tcp_responder: Callable[..., Any]) -> None:
    silent = await tcp_responder("silent")
    garbage = await tcp_responder("garbage")
    with pytest.raises(StunUnavailable, match="no answer within"):
        await stun_binding(silent, transport="tcp", timeout=0.5)
    with pytest.raises(StunUnavailable, match="not a STUN stream"):
        await stun_binding(garbage, transport="tcp", timeout=2)
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        closed = probe.getsockname()
    with pytest.raises(StunUnavailable, match="cannot connect"):
        await stun_binding(closed, transport="tcp", timeout=2)


async def test_race_over_tcp(tcp_responder: Callable[..., Any]) -> None:
    silent = await tcp_responder("silent")
    good = await tcp_responder()
    result = await race_bindings([silent, good], transport="tcp", timeout=3)
    assert result.server == good
