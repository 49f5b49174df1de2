"""TCP punching faults in the lab: a peer that never answers the offer, a peer that
answers but whose SYNs never leave its NAT, and a sync message lost on the way.  Each
attempt fails within its deadline and leaves no file descriptor open, on either side."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from tests.lab.punch_helpers import expect_failure, node_conf, open_fds
from tests.lab.test_punch_faults import FaultySignal
from warpgate import Node
from warpgate.sansio.punch_messages import SYNC

pytestmark = pytest.mark.lab

ATTEMPT: dict[str, Any] = {"transport": "tcp", "methods": ["tcp_punch"]}


async def _peer(
    stun: str,
    address: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    extra: dict[str, Any],
) -> int:
    """Stays up until ``done``; returns how many inbound links it got."""
    async with Node(port=0, conf=node_conf("peer", stun, **extra)) as node:
        await node.start()
        address.set_result(node.address())
        await asyncio.wrap_future(done)
        return len(node.links)


async def _requester(
    stun: str,
    address: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    timeout: float,
    settle: float,
) -> dict[str, Any]:
    try:
        conf = node_conf("asker", stun, punch_signal_timeout=1.0)
        async with Node(port=0, conf=conf) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            before = open_fds()
            outcome, took = await expect_failure(node, peer, timeout=timeout, **ATTEMPT)
            await asyncio.sleep(settle)  # the peer's side gives up meanwhile
            after = open_fds()
    finally:
        done.set_result(True)
    return {"outcome": outcome, "took": took, "before": before, "after": after}


async def _run(lab: Any, peer_extra: dict[str, Any], timeout: float, settle: float) -> Any:
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    return await asyncio.gather(
        lab.arun("b", _peer, stun, address, done, peer_extra, timeout=60),
        lab.arun("a", _requester, stun, address, done, timeout, settle, timeout=60),
    )


async def test_peer_that_never_answers(lab_factory: Any) -> None:
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    before = open_fds()
    links, asked = await _run(
        lab, {"plugins": {"signal": ["memory"], "disable": ["tcp-punch"]}}, 4.0, 0.2
    )
    await asyncio.sleep(0.2)
    assert links == 0
    assert "tcp_punch/tcp via signalling (simultaneous-open) -> failed" in asked["outcome"]
    assert asked["took"] < 3.0, asked  # the 1 s signal timeout, not the 4 s deadline
    assert asked["after"] <= asked["before"], asked  # the session's socket is closed
    assert open_fds() <= before


async def test_peer_whose_syns_never_leave_its_nat(lab_factory: Any) -> None:
    """The peer answers and opens, but its NAT drops all its outbound TCP: the
    requester's SYNs are dropped by that NAT too, so nothing connects."""
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    lab._nft(
        lab.netns("nat_b"),
        'add rule ip wgnat filter_fw oifname "wan" meta l4proto tcp drop\n',
    )
    before = open_fds()
    links, asked = await _run(lab, {"punch_timeout": 2.0}, 3.0, 2.5)
    await asyncio.sleep(0.2)
    assert links == 0
    assert "tcp_punch/tcp via signalling (simultaneous-open) -> cancelled" in asked["outcome"]
    assert asked["took"] < 3.5, asked  # the deadline, not a kernel connect timeout
    # Both sides' sockets are closed once each side's deadline passed.
    assert asked["after"] <= asked["before"], asked
    assert open_fds() <= before


async def _sync_losing_requester(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> dict[str, Any]:
    try:
        conf = node_conf("asker", stun, punch_signal_timeout=1.0)
        async with Node(port=0, conf=conf) as node:
            await node.start()
            name, inner = next(iter(node.signal_transports.items()))
            lossy = FaultySignal(inner, drop=frozenset({SYNC}))
            node.signal_transports[name] = lossy
            peer = await asyncio.wrap_future(address)
            before = open_fds()
            outcome, took = await expect_failure(node, peer, timeout=3.0, **ATTEMPT)
            method = node.traversal_methods["tcp_punch"]
            return {
                "outcome": outcome,
                "took": took,
                "fds_during": open_fds() - before,
                "sessions": len(method.coordinator.sessions),
                "dropped": lossy.dropped,
            }
    finally:
        done.set_result(True)


async def _patient_peer(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> dict[str, Any]:
    async with Node(port=0, conf=node_conf("peer", stun, punch_signal_timeout=1.0)) as node:
        await node.start()
        address.set_result(node.address())
        await asyncio.wrap_future(done)
        method = node.traversal_methods["tcp_punch"]
        for _ in range(30):  # its side ends when sync does not come within 1 s
            if not method.coordinator.sessions:
                break
            await asyncio.sleep(0.1)
        return {"sessions": len(method.coordinator.sessions), "links": len(node.links)}


async def test_lost_sync_fails_cleanly_on_both_sides(lab_factory: Any) -> None:
    """The requester's sync never arrives: the peer never starts (its side ends after
    the signal timeout), the requester's SYNs die at the peer's NAT until its deadline."""
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    before = open_fds()
    served, asked = await asyncio.gather(
        lab.arun("b", _patient_peer, stun, address, done, timeout=60),
        lab.arun("a", _sync_losing_requester, stun, address, done, timeout=60),
    )
    await asyncio.sleep(0.2)
    assert asked["dropped"] == 1, asked
    assert "tcp_punch/tcp via signalling (simultaneous-open) -> cancelled" in asked["outcome"]
    assert asked["took"] < 3.5, asked
    assert asked["fds_during"] <= 0, asked  # the failed attempt left nothing open
    assert asked["sessions"] == 0, asked
    assert served == {"sessions": 0, "links": 0}, served
    assert open_fds() <= before
