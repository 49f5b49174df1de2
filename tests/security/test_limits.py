"""Denial-of-service limits of a node (docs/security.md, "Denial of service"): what one
attacker can hold, and that real peers are served meanwhile."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from warpgate import Node, auto_connect
from warpgate.link import udp as udp_mod
from warpgate.link.tcp import LINK_MAGIC
from warpgate.node import node as node_mod


async def _echo_round_trip(a: Node, b: Node, transport: str = "tcp") -> None:
    link, _ = await auto_connect(a, b.address(), transport=transport, timeout=5)  # type: ignore[arg-type]
    inbound = await b.accept(timeout=5)
    await link.send(b"ping")
    assert await inbound.recv(5) == b"ping"
    await link.close()
    await inbound.close()


async def test_stalled_tcp_handshakes_are_dropped_after_the_handshake_timeout(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    b.conf["handshake_timeout"] = 0.5
    before = b.dropped_connections
    stalled = [await asyncio.open_connection("127.0.0.1", b.listen_port) for _ in range(40)]
    for _reader, writer in stalled:
        writer.write(LINK_MAGIC)  # then nothing
    await _echo_round_trip(a, b)  # served meanwhile
    async with asyncio.timeout(5):
        while b.dropped_connections < before + 40:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    for reader, writer in stalled:
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the node
        writer.close()


async def test_unaccepted_inbound_links_are_capped(pair: tuple[Node, Node]) -> None:
    """Links nobody accept()s queue up to INBOUND_BACKLOG; more are closed, not kept."""
    a, b = pair
    links = []
    for _ in range(node_mod.INBOUND_BACKLOG + 3):
        link, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
        links.append(link)
    assert b._inbound.qsize() == node_mod.INBOUND_BACKLOG
    async with asyncio.timeout(5):
        while sum(link.closed for link in links) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert "backlog full" in " ".join(link._close_reason for link in links if link.closed)


async def test_udp_handshake_flood_is_bounded_and_real_peers_still_connect(
    pair: tuple[Node, Node],
) -> None:
    """Spoofed first handshake messages hold at most MAX_PENDING_RESPONSES half-open
    handshakes, and a real peer arriving after the flood still gets its link."""
    a, b = pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for i in range(udp_mod.MAX_PENDING_RESPONSES * 2):
            packet = bytes([udp_mod.HS1]) + i.to_bytes(4, "big") + os.urandom(32)
            packet += bytes(udp_mod.HS1_MIN_SIZE - len(packet))  # padded, as real ones are
            attacker.sendto(packet, ("127.0.0.1", b.listen_port))
            if i % 64 == 63:
                await asyncio.sleep(0.01)  # let the node drain its socket
    await asyncio.sleep(0.3)
    assert len(b.udp._responses) <= udp_mod.MAX_PENDING_RESPONSES
    await _echo_round_trip(a, b, "udp")


async def test_udp_handshake_answers_are_never_larger_than_the_request(
    pair: tuple[Node, Node],
) -> None:
    """First handshake messages come from addresses nobody verified: unpadded (short) ones
    get no answer at all, and a padded one's answer is no larger than the request, so a
    node cannot be used to amplify traffic at a forged source."""
    from tests.integration.conftest import keypair
    from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity

    _a, b = pair
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind(("127.0.0.1", 0))
        victim.setblocking(False)
        dropped = b.udp.dropped
        short = bytes([udp_mod.HS1]) + (1).to_bytes(4, "big") + os.urandom(32)
        for _ in range(10):
            victim.sendto(short, ("127.0.0.1", b.listen_port))
        async with asyncio.timeout(5):
            while b.udp.dropped < dropped + 10:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        hs = LinkHandshake(LinkIdentity.create(*keypair()), initiator=True)
        padded = (
            bytes([udp_mod.HS1])
            + (2).to_bytes(4, "big")
            + hs.start(padding=udp_mod.HS1_MIN_SIZE - 5 - 32)
        )
        victim.sendto(padded, ("127.0.0.1", b.listen_port))
        answer = await asyncio.wait_for(loop.sock_recv(victim, 2048), 5)
        # The first datagram back answers the padded request: the short ones got nothing.
        assert answer[0] == udp_mod.HS2 and answer[5:9] == (2).to_bytes(4, "big")
        assert len(answer) <= len(padded)


@pytest.mark.parametrize("size", [1, 40_000, 70_000])
async def test_garbage_on_the_tcp_port_does_not_stop_service(
    pair: tuple[Node, Node], size: int
) -> None:
    a, b = pair
    writers = []
    for _ in range(10):
        _reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
        writer.write(os.urandom(size))
        writers.append(writer)
    await _echo_round_trip(a, b)
    for writer in writers:
        writer.close()


async def test_udp_garbage_flood_is_dropped_and_real_peers_still_connect(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    listener = b.listeners[0]
    junk = [os.urandom(n) for n in (1, 40, 200, 1200)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.setblocking(False)
        for i in range(4000):
            try:
                attacker.sendto(junk[i % 4], ("127.0.0.1", b.listen_port))
            except BlockingIOError:
                await asyncio.sleep(0.001)
    await _echo_round_trip(a, b, "udp")
    assert listener.udp_protocol is not None
    queued = listener.udp_protocol.queue.qsize()
    assert queued <= 1024  # the bound held
    async with asyncio.timeout(5):  # what reached the node was counted and dropped
        while b.dropped_datagrams + listener.udp_protocol.dropped == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_reverse_connect_requests_cannot_pile_up_dial_backs() -> None:
    """Eve signs a hundred reverse-connect requests for her own address, which points at
    a tarpit (accepts, never answers): Bob runs at most MAX_DIAL_BACKS_PER_PEER dial-backs
    for her at once, ignores the rest, and Alice's reverse connect still works."""
    from tests.integration.conftest import conf
    from warpgate.sansio.address import InterfaceAddress, NodeAddress
    from warpgate.sansio.signal_messages import ReverseConnect
    from warpgate_plugins import reverse

    held: list[asyncio.StreamWriter] = []

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # hold the connection, never answer

    pit = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    sig = {"sig_pipe_no": 1, "plugins": {"signal": ["memory"]}}
    try:
        async with (
            Node(ip="127.0.0.1", port=0, conf=conf("bob", **sig)) as bob,
            Node(ip="127.0.0.1", port=0, conf=conf("eve", **sig)) as eve,
            Node(ip="127.0.0.1", port=0, conf=conf("alice", **sig)) as alice,
        ):
            for node in (bob, eve, alice):
                await node.start()
            lure = NodeAddress(
                public_key=eve.public_key,
                machine_id=os.urandom(16),
                interfaces=(
                    InterfaceAddress(nic_ip="127.0.0.1", port=pit.sockets[0].getsockname()[1]),
                ),
            )
            for i in range(100):
                request = ReverseConnect(b"lure-%d" % i, lure).encode()
                await eve.signal_transports["memory"].send(bob.public_key, request)
            method = bob.traversal_methods["reverse"]
            async with asyncio.timeout(5):
                while method.refused < 100 - reverse.MAX_DIAL_BACKS_PER_PEER:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert len(method._tasks) <= reverse.MAX_DIAL_BACKS_PER_PEER
            link, won = await auto_connect(alice, bob.address(), methods=["reverse"], timeout=5)
            assert won == "reverse" and link.remote_key == bob.public_key
    finally:
        for writer in held:
            writer.close()
        pit.close()
        await pit.wait_closed()


async def test_handshakes_in_progress_from_one_address_are_capped() -> None:
    """One host opening many connections that never finish their handshake gets at most
    MAX_PENDING_PER_SOURCE of them held (each may pin a socket and 64 KiB); the rest are
    closed at once, and peers from other addresses are served meanwhile."""
    from tests.integration.conftest import conf, keypair
    from warpgate.link import tcp
    from warpgate.sansio.link_handshake import LinkIdentity

    honest = LinkIdentity.create(*keypair())

    async def dial_from(ip: str, b: Node) -> None:
        link = await tcp.dial_tcp(
            honest,
            ("127.0.0.1", b.listen_port),
            expected_identity=b.public_key,
            method="direct",
            max_message=1 << 20,
            local_ip=ip,
        )
        inbound = await b.accept(timeout=5)
        await link.send(b"served")
        assert await inbound.recv(5) == b"served"
        await link.close()

    async with Node(ip="127.0.0.1", port=0, conf=conf("target", handshake_timeout=30.0)) as b:
        await b.start()
        extra = 20
        stalled = []
        for _ in range(tcp.MAX_PENDING_PER_SOURCE + extra):
            reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
            writer.write(LINK_MAGIC + b"\xff\xff" + bytes(60_000))  # most of a frame, then wait
            stalled.append((reader, writer))
        async with asyncio.timeout(5):
            while b.dropped_connections < extra:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert b.dropped_connections == extra  # exactly the ones over the cap
        await asyncio.wait_for(dial_from("127.0.0.2", b), 5)  # another address: served
        for _reader, writer in stalled:
            writer.close()
        async with asyncio.timeout(5):  # the node notices the closes and frees the slots
            while b.dropped_connections < tcp.MAX_PENDING_PER_SOURCE + extra:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await asyncio.wait_for(dial_from("127.0.0.1", b), 5)  # and the address is served again


async def test_pending_handshakes_are_capped_per_ipv6_64_and_in_all() -> None:
    """The per-source cap counts an IPv6 /64 as one source (a host has the whole /64 to
    pick addresses from), and a cap in all holds against many sources; a slot is freed
    when its handshake ends."""
    from tests.integration.conftest import keypair
    from warpgate.link import tcp
    from warpgate.sansio.link_handshake import LinkIdentity

    identity = LinkIdentity.create(*keypair())
    refused: list[str] = []
    make = tcp.responder_factory(
        lambda: identity,
        max_message=1 << 20,
        encrypt=True,
        handshake_timeout=lambda: 30.0,
        on_link=lambda _link: None,
        on_failure=lambda reason, _peer: refused.append(reason),
        max_pending_per_source=2,
        max_pending=5,
    )

    def arrive(ip: str) -> tcp.LinkConnection:
        conn = make()
        conn.peer = (ip, 4000)
        refusal = conn.admit(conn)  # type: ignore[misc]
        if refusal:
            refused.append(refusal)
        return conn

    same_64 = [arrive(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert refused == ["too many handshakes in progress from 2001:db8:1:2::/64"]
    others = [arrive(f"2001:db8:1:{n}::1") for n in (3, 4, 5, 6)]
    assert refused[-1] == "too many handshakes in progress (5)"  # the sixth pending one
    assert len(refused) == 2
    same_64[0].ready.set_result(None)  # type: ignore[arg-type]  # one handshake ends
    await asyncio.sleep(0)  # its done-callback frees the slot
    refused.clear()
    late = arrive("2001:db8:9::1")
    assert refused == []
    for conn in [*same_64[1:], *others, late]:
        conn.abort_handshake("test over")
