"""The simultaneous-open machinery of ``tcp_punch`` on loopback (no lab needed): both
ends meet on one connection, a stray connection from another address is closed and
counted, a target that refuses fails within the deadline, and no socket is left; and
where the peer aims, from the endpoint a session announces."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address

from tests.lab.punch_helpers import open_fds
from warpgate.punch.tcp import SimultaneousOpen, listening_socket
from warpgate.punch.tcp_method import session_endpoint
from warpgate.sansio.address import NatType, PortAllocation
from warpgate.sansio.punch_messages import Endpoint, PunchTransport
from warpgate.sansio.punch_plan import Strategy, plan


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


async def test_both_ends_get_the_same_connection() -> None:
    before = open_fds()
    la, lb = listening_socket("127.0.0.1"), listening_socket("127.0.0.1")
    a = SimultaneousOpen(la, [("127.0.0.1", _port(lb))], max_sockets=4)
    b = SimultaneousOpen(lb, [("127.0.0.1", _port(la))], max_sockets=4)
    try:
        a.start()
        b.start()
        async with asyncio.timeout(5):
            sa, sb = await asyncio.gather(a.next(), b.next())
    finally:
        await asyncio.gather(a.aclose(), b.aclose())
    with sa, sb:
        assert sa.getsockname() == sb.getpeername() and sa.getpeername() == sb.getsockname()
        sa.send(b"x")
        sb.setblocking(True)
        assert sb.recv(1) == b"x"
    assert open_fds() <= before


async def test_a_stray_connection_is_closed_and_the_peer_still_gets_in() -> None:
    before = open_fds()
    la, lb = listening_socket("127.0.0.1"), listening_socket("127.0.0.1")
    # a aims at b, but only accepts from 127.0.0.1: the stray comes from 127.0.0.2.
    a = SimultaneousOpen(la, [("127.0.0.1", _port(lb))], max_sockets=1)
    b = SimultaneousOpen(lb, [("127.0.0.1", _port(la))], max_sockets=1)
    loop = asyncio.get_running_loop()
    with socket.socket() as stray:
        stray.bind(("127.0.0.2", 0))
        stray.setblocking(False)
        try:
            a.start()
            await loop.sock_connect(stray, ("127.0.0.1", _port(la)))
            for _ in range(100):  # bounded: the accept task runs within a few loops
                if a.strays:
                    break
                await asyncio.sleep(0.01)
            assert a.strays == 1
            b.start()
            async with asyncio.timeout(5):
                sa, sb = await asyncio.gather(a.next(), b.next())
            sa.close()
            sb.close()
        finally:
            await asyncio.gather(a.aclose(), b.aclose())
    assert open_fds() <= before


async def test_a_peer_that_never_opens_fails_within_the_deadline() -> None:
    before = open_fds()
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))  # bound, never listening: SYNs are refused
        target = ("127.0.0.1", _port(closed_port))
        opening = SimultaneousOpen(listening_socket("127.0.0.1"), [target], max_sockets=2)
        loop = asyncio.get_running_loop()
        begin = loop.time()
        try:
            opening.start()
            async with asyncio.timeout(0.8):
                await opening.next()
            raise AssertionError("connected to a port nobody opened")
        except TimeoutError:
            pass
        finally:
            await opening.aclose()
        assert loop.time() - begin < 1.5
    assert open_fds() <= before


def test_the_peer_aims_at_the_session_port_or_the_sequential_prediction() -> None:
    mine = Endpoint(ip_address("203.0.113.5"), 40000, 40000, NatType.PORT_RESTRICTED)
    peer = [Endpoint(ip_address("198.51.100.130"), 1000, 1000, NatType.PORT_RESTRICTED)]
    announced = session_endpoint(mine, 52000)
    got = plan(peer, [announced], PunchTransport.TCP)
    assert got.strategy is Strategy.SIMULTANEOUS_OPEN
    assert got.targets == (("203.0.113.5", 52000),)  # a port-preserving NAT keeps it
    # Behind a sequential allocator the fresh port says nothing: the peer predicts from
    # the mapping STUN saw (40100) and the step (+2).
    seq = Endpoint(
        ip_address("203.0.113.5"), 40100, 40000, NatType.SYMMETRIC, PortAllocation.SEQUENTIAL, 2
    )
    got = plan(peer, [session_endpoint(seq, 52000)], PunchTransport.TCP)
    assert got.strategy is Strategy.SIMULTANEOUS_OPEN
    assert got.targets[:2] == (("203.0.113.5", 40100), ("203.0.113.5", 40102))
