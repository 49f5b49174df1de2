"""Punching faults: a peer that never answers, stray probes with a wrong session from a
third host, lost signal messages and an answer with a wrong session id; each attempt
fails (or carries on) cleanly within its deadline and no socket is left open."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import socket
from collections.abc import Sequence
from typing import Any

import pytest

from tests.lab.punch_helpers import expect_failure, node_conf, open_fds
from warpgate import Node, auto_connect
from warpgate.sansio.address import NodeAddress
from warpgate.sansio.punch_messages import ANSWER, OFFER, is_punch_message
from warpgate.sansio.punch_probe import PROBE, Probe

pytestmark = pytest.mark.lab


async def _silent_peer(stun: str, address: concurrent.futures.Future[bytes], hold: float) -> None:
    # A peer without the punch methods: offers reach it and are never answered.
    conf = node_conf("silent", stun, plugins={"signal": ["memory"], "disable": ["udp-punch"]})
    async with Node(port=0, conf=conf) as node:
        await node.start()
        address.set_result(node.address())
        await asyncio.sleep(hold)


async def _requester(stun: str, address: concurrent.futures.Future[bytes]) -> dict[str, Any]:
    conf = node_conf("asker", stun, punch_signal_timeout=1.0)
    async with Node(port=0, conf=conf) as node:
        await node.start()
        peer = await asyncio.wrap_future(address)
        outcome, took = await expect_failure(
            node, peer, transport="udp", methods=["udp_punch"], timeout=4
        )
    return {"outcome": outcome, "took": took}


async def test_peer_that_never_answers_fails_within_the_deadline_without_leaks(
    lab_factory: Any,
) -> None:
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    before = open_fds()
    _silent, asked = await asyncio.gather(
        lab.arun("b", _silent_peer, stun, address, 8.0, timeout=60),
        lab.arun("a", _requester, stun, address, timeout=60),
    )
    await asyncio.sleep(0.2)
    assert open_fds() <= before  # both nodes closed: every socket they opened is closed
    assert "udp_punch/udp via signalling (probe) -> failed after" in asked["outcome"], asked
    assert asked["took"] < 3.0  # the 1 s signal timeout, not the 4 s overall deadline


def _spray(target: tuple[str, int], count: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(Probe(PROBE, bytes([i % 256]) * 16, i).encode(), target)
            s.sendto(b"\xe0garbage", target)
    return count


async def _punch_pair_with_strays(lab: Any, stun: str) -> dict[str, Any]:
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()

    async def serve() -> dict[str, Any]:
        async with Node(port=0, conf=node_conf("srv", stun)) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=20)
            await link.send(b"ok:" + await link.recv(timeout=20))
            await asyncio.wrap_future(done)
            method = node.traversal_methods["udp_punch"]
            return {"ignored": method.puncher.ignored}

    async def dial() -> dict[str, Any]:
        try:
            async with Node(port=0, conf=node_conf("cli", stun)) as node:
                await node.start()
                peer = await asyncio.wrap_future(address)
                # A third host sprays the peer's mapped port with wrong-session probes.
                nat_b = lab.wan_address("nat_b")
                port = next(
                    i.ext_port
                    for i in NodeAddress.decode(peer).interfaces
                    if str(i.ext_ip) == nat_b
                )
                await asyncio.to_thread(lab.call, "pub", _spray, (nat_b, port), 50)
                link, method = await auto_connect(
                    node, peer, transport="udp", methods=["udp_punch"], timeout=15
                )
                await link.send(b"x")
                return {"method": method, "echo": await link.recv(timeout=10)}
        finally:
            done.set_result(True)

    served, dialled = await asyncio.gather(
        lab.arun("b", serve, timeout=60), lab.arun("a", dial, timeout=60)
    )
    return {**served, **dialled}


async def test_stray_probes_with_a_wrong_session_change_nothing(lab_factory: Any) -> None:
    lab = lab_factory(("full-cone", "full-cone"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    got = await _punch_pair_with_strays(lab, stun)
    assert got["method"] == "udp_punch" and got["echo"] == b"ok:x"
    assert got["ignored"] >= 50  # every stray probe dropped and counted


# --- lost and tampered signal messages in the real exchange ------------------------------


class FaultySignal:
    """Wraps a node's signal transport: drops the punch messages of the chosen types
    (as a lossy network would: the sender thinks it sent them) or replaces their session
    id with a random one (a wrong nonce).  Everything else passes through."""

    def __init__(
        self,
        inner: Any,
        *,
        drop: frozenset[int] = frozenset(),
        tamper: frozenset[int] = frozenset(),
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.drop, self.tamper = drop, tamper
        self.dropped = self.tampered = 0

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    async def send(self, peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        kind = payload[1] if is_punch_message(payload) else None
        if kind in self.drop:
            self.dropped += 1
            return
        if kind in self.tamper:
            self.tampered += 1
            payload = payload[:2] + secrets.token_bytes(16) + payload[18:]
        await self.inner.send(peer_key, payload, hints=hints)


def _wrap(node: Node, faults: dict[str, frozenset[int]]) -> FaultySignal:
    name, inner = next(iter(node.signal_transports.items()))
    wrapper = FaultySignal(inner, **faults)
    node.signal_transports[name] = wrapper
    return wrapper


async def _faulty_responder(
    stun: str,
    address: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    faults: dict[str, frozenset[int]],
) -> dict[str, Any]:
    conf = node_conf("faulty-srv", stun, punch_timeout=2.0)
    async with Node(port=0, conf=conf) as node:
        await node.start()
        wrapper = _wrap(node, faults)
        address.set_result(node.address())
        await asyncio.wrap_future(done)
        method = node.traversal_methods["udp_punch"]
        # Its own side of the session ends within punch_timeout, sockets and state gone.
        for _ in range(60):
            if not method.coordinator.sessions and not method.puncher.states:
                break
            await asyncio.sleep(0.1)
        return {
            "sessions": len(method.coordinator.sessions),
            "states": len(method.puncher.states),
            "dropped": wrapper.dropped,
            "tampered": wrapper.tampered,
        }


async def _faulty_requester(
    stun: str,
    address: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    faults: dict[str, frozenset[int]],
) -> dict[str, Any]:
    conf = node_conf("faulty-cli", stun, punch_signal_timeout=1.0)
    try:
        async with Node(port=0, conf=conf) as node:
            await node.start()
            wrapper = _wrap(node, faults)
            peer = await asyncio.wrap_future(address)
            await asyncio.sleep(0.2)
            before = open_fds()
            outcome, took = await expect_failure(
                node, peer, transport="udp", methods=["udp_punch"], timeout=4
            )
            method = node.traversal_methods["udp_punch"]
            return {
                "outcome": outcome,
                "took": took,
                "fds_during": open_fds() - before,
                "sessions": len(method.coordinator.sessions),
                "states": len(method.puncher.states),
                "dropped": wrapper.dropped,
            }
    finally:
        done.set_result(True)


@pytest.mark.parametrize(
    ("requester_faults", "responder_faults"),
    [
        ({"drop": frozenset({OFFER})}, {}),
        ({}, {"drop": frozenset({ANSWER})}),
        ({}, {"tamper": frozenset({ANSWER})}),
    ],
    ids=["offer-lost", "answer-lost", "answer-with-a-wrong-session"],
)
async def test_lost_or_tampered_signal_messages_fail_cleanly(
    lab_factory: Any,
    requester_faults: dict[str, frozenset[int]],
    responder_faults: dict[str, frozenset[int]],
) -> None:
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    before = open_fds()
    served, asked = await asyncio.gather(
        lab.arun("b", _faulty_responder, stun, address, done, responder_faults, timeout=60),
        lab.arun("a", _faulty_requester, stun, address, done, requester_faults, timeout=60),
    )
    await asyncio.sleep(0.2)
    assert open_fds() <= before  # both nodes closed: nothing they opened is left
    assert "udp_punch/udp via signalling (probe) -> failed after" in asked["outcome"], asked
    assert "did not answer" in asked["outcome"], asked
    assert asked["took"] < 3.0, asked  # the 1 s signal timeout, not the 4 s deadline
    assert asked["fds_during"] <= 0, asked  # the failed attempt itself left nothing open
    assert asked["sessions"] == asked["states"] == 0, asked
    assert served["sessions"] == served["states"] == 0, served  # the peer gave up too
    assert asked["dropped"] + served["dropped"] + served["tampered"] >= 1


# --- birthday probing: the requester fails after the path is confirmed -------------------


async def _hard_responder(
    stun: str,
    address: concurrent.futures.Future[bytes],
    started: concurrent.futures.Future[int],
    done: concurrent.futures.Future[bool],
) -> dict[str, Any]:
    conf = node_conf("hard", stun, punch_timeout=3.0)
    async with Node(port=0, conf=conf) as node:
        await node.start()
        address.set_result(node.address())
        method = node.traversal_methods["udp_punch"]
        await asyncio.wrap_future(done)
        # Its session holds every birthday socket until the handshake that never comes,
        # then the punch timeout releases them all.
        for _ in range(80):
            if not method.coordinator.sessions and not method.puncher._sockets:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        return {
            "sessions": len(method.coordinator.sessions),
            "sockets": len(method.puncher._sockets),
            "fds_after": open_fds(),
            "fds_before": await asyncio.wrap_future(started),
        }


async def _failing_easy_requester(
    stun: str,
    address: concurrent.futures.Future[bytes],
    started: concurrent.futures.Future[int],
    done: concurrent.futures.Future[bool],
) -> dict[str, Any]:
    try:
        async with Node(port=0, conf=node_conf("easy", stun)) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            await asyncio.sleep(0.3)
            started.set_result(open_fds())
            confirmed = []

            async def dial(listener: Any, remote: Any, **_kw: Any) -> Any:
                confirmed.append(remote)  # the path was found; the handshake "fails"
                raise ConnectionError("handshake refused (test)")

            node.udp.dial = dial  # type: ignore[method-assign]
            outcome, _took = await expect_failure(
                node, peer, transport="udp", methods=["udp_punch"], timeout=8
            )
            return {"outcome": outcome, "confirmed": confirmed}
    finally:
        done.set_result(True)


async def test_birthday_sockets_are_released_when_the_handshake_never_comes(
    lab_factory: Any,
) -> None:
    lab = lab_factory(("port-restricted", "symmetric"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    started: concurrent.futures.Future[int] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    before = open_fds()
    hard, easy = await asyncio.gather(
        lab.arun("b", _hard_responder, stun, address, started, done, timeout=60),
        lab.arun("a", _failing_easy_requester, stun, address, started, done, timeout=60),
    )
    await asyncio.sleep(0.2)
    assert easy["confirmed"] and "handshake refused" in easy["outcome"], easy
    assert hard["sessions"] == hard["sockets"] == 0, hard
    # All 256 birthday sockets closed while the node still runs, and nothing after.
    assert hard["fds_after"] <= hard["fds_before"], hard
    assert open_fds() <= before
