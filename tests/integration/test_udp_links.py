"""UDP links on loopback: handshake, datagram messages, replay and forgery, bad input."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from tests.integration.conftest import keypair
from warpgate import MessageTooLarge, Node, auto_connect
from warpgate.link import udp as udp_mod


async def test_udp_link_round_trip(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, method = await auto_connect(a, b.address(), transport="udp")
    assert method == "direct" and link.path.transport == "udp"
    assert link.path.local == (a.listeners[0].local[0], a.listen_port), "sent from the listener"
    inbound = await b.accept(timeout=2)
    assert inbound.remote_key == a.public_key and inbound.path.transport == "udp"
    await link.send(b"ping")
    assert await inbound.recv(2) == b"ping"
    await inbound.send(b"pong")
    assert await link.recv(2) == b"pong"
    with pytest.raises(MessageTooLarge):
        await link.send(b"x" * (a.conf["udp_max_message"] + 1))


async def test_replayed_and_forged_datagrams_are_dropped(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address(), transport="udp")
    inbound = await b.accept(timeout=2)
    sent: list[bytes] = []
    original = link._send_datagram

    def capture(data: bytes) -> None:
        sent.append(data)
        original(data)

    link._send_datagram = capture  # type: ignore[method-assign]
    await link.send(b"once")
    assert await inbound.recv(2) == b"once"
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw.sendto(sent[0], ("127.0.0.1", b.listen_port))  # replay, from another port
        forged = bytearray(sent[0])
        forged[-1] ^= 1
        raw.sendto(bytes(forged), ("127.0.0.1", b.listen_port))
        raw.sendto(os.urandom(100), ("127.0.0.1", b.listen_port))  # garbage
        raw.sendto(bytes([udp_mod.DATA]) + os.urandom(40), ("127.0.0.1", b.listen_port))
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):
            await inbound.recv(0.2)
        assert inbound._codec.rejected >= 2  # type: ignore[attr-defined]
        await link.send(b"after")
        assert await inbound.recv(2) == b"after", "the link still works"
    finally:
        raw.close()


async def test_handshake_survives_lost_first_messages(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    dropped = {"n": 0}
    send = udp_mod.UdpLinks._send

    def lossy(listener: Any, data: bytes, remote: Any) -> None:
        if data[0] in (udp_mod.HS1, udp_mod.HS3) and dropped["n"] < 2:
            dropped["n"] += 1  # lose the first handshake 1 and the first handshake 3
            return
        send(listener, data, remote)

    monkeypatch.setattr(udp_mod.UdpLinks, "_send", staticmethod(lossy))
    link, _ = await auto_connect(a, b.address(), transport="udp", timeout=5)
    inbound = await b.accept(timeout=2)
    await link.send(b"made it")
    assert await inbound.recv(2) == b"made it"
    assert dropped["n"] == 2


async def test_handshake_flood_is_bounded(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity

    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(udp_mod.MAX_PENDING_RESPONSES + 50):
            hs = LinkHandshake(LinkIdentity.create(*keypair()), initiator=True) if i < 3 else None
            msg1 = hs.start() if hs else os.urandom(32)
            raw.sendto(
                bytes([udp_mod.HS1]) + i.to_bytes(4, "big") + msg1, ("127.0.0.1", b.listen_port)
            )
        await asyncio.sleep(0.3)
        assert len(b.udp._responses) <= udp_mod.MAX_PENDING_RESPONSES
    finally:
        raw.close()


async def test_udp_to_a_silent_port_times_out_cleanly(pair: tuple[Node, Node]) -> None:
    a, _b = pair
    from warpgate import ConnectError
    from warpgate.sansio.address import InterfaceAddress, NodeAddress

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        ghost = NodeAddress(
            public_key=keypair()[1],
            machine_id=a.machine_id,
            interfaces=(InterfaceAddress(nic_ip="127.0.0.1", port=silent.getsockname()[1]),),
        )
        with pytest.raises(ConnectError, match="timed out|deadline"):
            await auto_connect(a, ghost.encode(), transport="udp", timeout=0.8)
    assert not a.udp._dials and not a.udp.links


async def test_the_dialler_has_its_link_after_one_round_trip(pair: tuple[Node, Node]) -> None:
    """The link is returned once handshake message 3 leaves; a message sent at once
    arrives right behind it."""
    a, b = pair
    link, _ = await auto_connect(a, b.address(), transport="udp")
    await link.send(b"right away")
    inbound = await b.accept(timeout=2)
    assert await inbound.recv(2) == b"right away"


async def test_a_lost_third_message_is_sent_again(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    original = b.udp._on_hs3
    dropped = []

    def lose_the_first(*args: Any) -> None:
        if not dropped:
            dropped.append(args)
            return
        original(*args)

    monkeypatch.setattr(b.udp, "_on_hs3", lose_the_first)
    link, _ = await auto_connect(a, b.address(), transport="udp")
    await link.send(b"before the peer has the link")  # kept until message 3 lands
    inbound = await b.accept(timeout=3)  # message 3 came again, after 250 ms
    assert dropped
    assert await inbound.recv(2) == b"before the peer has the link"
    await link.send(b"after the retransmission")
    assert await inbound.recv(2) == b"after the retransmission"


async def test_a_link_the_peer_never_confirms_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.conftest import conf

    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("unconfirmed-a", handshake_timeout=1.0)) as a,
        Node(ip="127.0.0.1", port=0, conf=conf("unconfirmed-b")) as b,
    ):
        await a.start()
        await b.start()
        monkeypatch.setattr(b.udp, "_on_hs3", lambda *args: None)  # message 3 never lands
        link, _ = await auto_connect(a, b.address(), transport="udp")
        async with asyncio.timeout(5):
            while not link.closed:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.05)
        assert "never confirmed" in link._close_reason
