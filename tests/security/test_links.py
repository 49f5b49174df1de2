"""Claims about links (docs/security.md, "Links"): identity binding, what an on-path
observer sees, tampering and replay."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import conf
from tests.security.conftest import RecordingForwarder
from warpgate import ConnectError, Node, auto_connect
from warpgate.sansio.address import InterfaceAddress, NodeAddress

MARKER = b"attack at dawn, the password is hunter2 " * 4


def _via(node: Node, port: int, key: bytes | None = None) -> bytes:
    """``node``'s address (or a claim that ``key`` lives there) pointing at ``port``."""
    real = NodeAddress.decode(node.address())
    return NodeAddress(
        public_key=key or real.public_key,
        machine_id=real.machine_id,
        interfaces=(InterfaceAddress(nic_ip="127.0.0.1", port=port),),
    ).encode()


async def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - node counters have no event
            await asyncio.sleep(0.02)


async def _replay_gets_no_link(b: Node, recorded: bytes) -> None:
    """Send a recorded dialler's bytes to ``b`` again: dropped, and no link."""
    dropped = b.dropped_connections
    _reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
    writer.write(recorded)
    await writer.drain()
    await _wait(lambda: b.dropped_connections > dropped)
    with pytest.raises(TimeoutError):
        await b.accept(timeout=0.3)
    writer.close()


async def test_mitm_holding_another_key_is_refused(pair: tuple[Node, Node]) -> None:
    """Eve answers at the address Alice dials for Bob: the handshake proves Eve's key,
    not Bob's, so Alice refuses and nothing is exchanged."""
    a, b = pair
    async with Node(ip="127.0.0.1", port=0, conf=conf("eve")) as eve:
        await eve.start()
        with pytest.raises(ConnectError, match="not the expected"):
            await auto_connect(a, _via(b, eve.listen_port), timeout=3)
        assert not a.links
        with pytest.raises(TimeoutError):
            await eve.accept(timeout=0.3)


async def test_mitm_forwarding_bytes_learns_nothing_and_cannot_alter_them(
    pair: tuple[Node, Node], forwarder_factory: Any
) -> None:
    """Through an on-path forwarder the link works, but the forwarder sees neither the
    messages nor either side's identity key (Noise XX encrypts the static keys)."""
    a, b = pair
    wire, _resumed = await _talk_through_a_forwarder(a, b, forwarder_factory)
    assert len(wire) > len(MARKER) * 2  # the traffic did pass through
    for secret in (MARKER, MARKER[::-1], MARKER[:16], a.public_key, b.public_key):
        assert secret not in wire


async def _talk_through_a_forwarder(a: Node, b: Node, forwarder_factory: Any) -> tuple[bytes, bool]:
    """A link a -> b through a recording forwarder, a message each way: every byte the
    forwarder saw, and whether the link was a resumed one."""
    fwd: RecordingForwarder = await forwarder_factory(("127.0.0.1", b.listen_port))
    link, _ = await auto_connect(a, _via(b, fwd.port), methods=["direct"], timeout=5)
    inbound = await b.accept(timeout=5)
    await link.send(MARKER)
    assert await inbound.recv(5) == MARKER
    await inbound.send(MARKER[::-1])
    assert await link.recv(5) == MARKER[::-1]
    await link.close()
    return bytes(fwd.upstream) + bytes(fwd.downstream), link.resumed


async def test_tampered_record_is_never_delivered_and_closes_the_link(
    pair: tuple[Node, Node], forwarder_factory: Any
) -> None:
    a, b = pair
    armed = asyncio.Event()

    def flip_last_byte(data: bytearray) -> None:
        if armed.is_set() and data:
            data[-1] ^= 0x01

    fwd = await forwarder_factory(("127.0.0.1", b.listen_port), flip_last_byte)
    link, _ = await auto_connect(a, _via(b, fwd.port), methods=["direct"], timeout=5)
    inbound = await b.accept(timeout=5)
    await link.send(b"before")
    assert await inbound.recv(5) == b"before"
    armed.set()
    await link.send(MARKER)
    with pytest.raises(ConnectionError):  # LinkClosed: the record failed authentication
        await inbound.recv(5)
    assert "protocol error" in repr(inbound._close_reason)


async def test_recorded_link_replayed_to_the_responder_is_refused(
    pair: tuple[Node, Node], forwarder_factory: Any
) -> None:
    """Replaying a whole recorded connection (handshake and records) gets no link: the
    responder answers with a fresh ephemeral key, so the recorded third message fails."""
    a, b = pair
    fwd = await forwarder_factory(("127.0.0.1", b.listen_port))
    link, _ = await auto_connect(a, _via(b, fwd.port), methods=["direct"], timeout=5)
    inbound = await b.accept(timeout=5)
    await link.send(MARKER)
    assert await inbound.recv(5) == MARKER
    await link.close()
    await _replay_gets_no_link(b, bytes(fwd.upstream))


async def test_replayed_udp_datagram_is_dropped(pair: tuple[Node, Node]) -> None:
    """A captured UDP link datagram sent again (from anywhere) is dropped by the
    receiver's replay window; the message is delivered once."""
    a, b = pair
    link, _ = await auto_connect(a, b.address(), transport="udp", timeout=5)
    inbound = await b.accept(timeout=5)
    sent: list[bytes] = []
    original = link._send_datagram  # type: ignore[attr-defined]

    def capture(data: bytes) -> None:
        sent.append(data)
        original(data)

    link._send_datagram = capture  # type: ignore[attr-defined]
    await link.send(MARKER)
    assert await inbound.recv(5) == MARKER
    assert MARKER not in sent[0]
    rejected = inbound._codec.rejected
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for _ in range(3):
            attacker.sendto(sent[0], ("127.0.0.1", b.listen_port))
    await _wait(lambda: inbound._codec.rejected >= rejected + 3)
    with pytest.raises(TimeoutError):
        await inbound.recv(0.3)
    await link.send(b"after")  # and the link still works
    assert await inbound.recv(5) == b"after"


async def test_forged_udp_datagrams_are_dropped_and_the_link_survives(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address(), transport="udp", timeout=5)
    inbound = await b.accept(timeout=5)
    header = bytes([0xD4]) + inbound.local_index.to_bytes(4, "big")  # type: ignore[attr-defined]
    rejected = inbound._codec.rejected
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for n in range(20):
            attacker.sendto(
                header + n.to_bytes(8, "big") + b"\x01" + os.urandom(40),
                ("127.0.0.1", b.listen_port),
            )
    await _wait(lambda: inbound._codec.rejected >= rejected + 20)
    await link.send(b"genuine")
    assert await inbound.recv(5) == b"genuine"


async def test_mitm_cannot_answer_a_resumed_link(pair: tuple[Node, Node]) -> None:
    """Alice holds a resumption ticket for Bob; Eve answers at Bob's address.  Eve cannot
    answer the resumed handshake (she lacks the ticket), and the full handshake that
    follows proves Eve's key, not Bob's: refused.  Eve's own ticket with Alice is no help."""
    a, b = pair
    link, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    await link.close()
    async with Node(ip="127.0.0.1", port=0, conf=conf("eve")) as eve:
        await eve.start()
        mine, _ = await auto_connect(a, eve.address(), methods=["direct"], timeout=5)
        await mine.close()
        assert a.link_tickets.for_dialling(b.public_key, now=time.monotonic()) is not None
        with pytest.raises(ConnectError, match="not the expected"):
            await auto_connect(a, _via(b, eve.listen_port), methods=["direct"], timeout=3)
        assert not [link for link in a.links if link.remote_key == b.public_key]


async def test_resumed_link_shows_an_observer_no_keys_and_no_payloads(
    pair: tuple[Node, Node], forwarder_factory: Any
) -> None:
    """A resumed link through an on-path forwarder: neither identity key nor any message
    is on the wire.  What the observer does see is the ticket id (16 bytes in clear), which
    ties connections between the same two nodes within a ticket's lifetime."""
    a, b = pair
    first, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    await first.close()
    await b.accept(timeout=5)
    ticket = a.link_tickets.for_dialling(b.public_key, now=time.monotonic())
    assert ticket is not None
    wire, resumed = await _talk_through_a_forwarder(a, b, forwarder_factory)
    assert resumed
    for secret in (MARKER, MARKER[::-1], MARKER[:16], a.public_key, b.public_key, ticket.psk):
        assert secret not in wire
    assert ticket.ticket_id in wire  # the stated metadata


async def test_recorded_resumed_link_replayed_to_the_listener_is_refused(
    pair: tuple[Node, Node], forwarder_factory: Any
) -> None:
    """Replaying a recorded resumed connection: the listener answers message 1 (it cannot
    tell a replay), but the recorded confirmation fails under its fresh ephemeral key, so
    no link is made and nothing reaches accept()."""
    a, b = pair
    first, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    await first.close()
    await b.accept(timeout=5)
    fwd = await forwarder_factory(("127.0.0.1", b.listen_port))
    link, _ = await auto_connect(a, _via(b, fwd.port), methods=["direct"], timeout=5)
    assert link.resumed
    inbound = await b.accept(timeout=5)
    await link.send(MARKER)
    assert await inbound.recv(5) == MARKER
    await link.close()
    await _replay_gets_no_link(b, bytes(fwd.upstream))
