"""Relay-first links in the lab: a UDP link between two port-restricted NATs starts on
the lab's coturn, proves the direct path and moves to it on both ends; a firewall rule
that drops the direct path sends both ends back to the relay within 6.5 s, and messages
keep flowing, never duplicated."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from typing import Any

import pytest

from warpgate import Node, auto_connect
from warpgate.testing.turn_conf import turn_conf
from warpgate.turn import migrate

pytestmark = pytest.mark.lab

TIMEOUT = 20.0
FALLBACK_TARGET = 6.5


def conf(lab: Any, name: str) -> dict[str, Any]:
    return turn_conf(lab, name, turn_relay_first=True)


class Side:
    """What one end saw, shared with the test thread."""

    def __init__(self) -> None:
        self.kinds: list[tuple[float, str]] = []
        self.received: list[int] = []
        self.sent = 0
        self.replayed = 0


async def _until(pred: Any, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def _pump(link: Any, side: Side, stop: asyncio.Event) -> None:
    """Send a numbered message every 20 ms, receive whatever comes, until ``stop``."""

    async def reader() -> None:
        with contextlib.suppress(ConnectionError):
            async for msg in link:
                if msg.startswith(b"n"):
                    side.received.append(int(msg[1:]))

    task = asyncio.create_task(reader())
    last = link.path.kind
    side.kinds.append((time.monotonic(), last))
    try:
        while not stop.is_set():
            await link.send(b"n%d" % side.sent)
            side.sent += 1
            if link.path.kind != last:
                last = link.path.kind
                side.kinds.append((time.monotonic(), last))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
        await asyncio.sleep(0.5)  # the last messages in flight
    finally:
        task.cancel()


async def callee(
    lab: Any,
    address_out: concurrent.futures.Future[bytes],
    side: Side,
    stop: concurrent.futures.Future[None],
) -> None:
    async with Node(port=0, conf=conf(lab, "bob")) as node:
        await node.start()
        address_out.set_result(node.address())
        link = await node.accept(timeout=TIMEOUT)
        await _pump_until(stop, node, link, side)


async def caller(
    lab: Any,
    address_in: concurrent.futures.Future[bytes],
    side: Side,
    stop: concurrent.futures.Future[None],
) -> str:
    async with Node(port=0, conf=conf(lab, "alice")) as node:
        await node.start()
        link, method = await auto_connect(
            node,
            await asyncio.wrap_future(address_in),
            transport="udp",
            methods=["turn"],
            timeout=TIMEOUT,
        )
        await _pump_until(stop, node, link, side)
        return method


async def _wait_then_set(fut: concurrent.futures.Future[None], event: asyncio.Event) -> None:
    await asyncio.wrap_future(fut)
    event.set()


async def _pump_until(
    stop: concurrent.futures.Future[None], node: Node, link: Any, side: Side
) -> None:
    """:func:`_pump` until the test thread sets ``stop``; then note how many messages
    the upgrade replayed on the new path."""
    done = asyncio.Event()
    asyncio.get_running_loop().create_task(_wait_then_set(stop, done))
    await _pump(link, side, done)
    side.replayed = node.traversal_methods["turn"].upgrades[link].replayed


def _kind(side: Side) -> str:
    return side.kinds[-1][1] if side.kinds else "?"


async def test_relay_first_upgrades_then_falls_back_when_the_direct_path_dies(
    lab_factory: Any,
) -> None:
    lab = lab_factory(("port-restricted", "port-restricted"))
    a, b = Side(), Side()
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop: concurrent.futures.Future[None] = concurrent.futures.Future()
    wan_b = lab.wan_address("nat_b")

    async def drive() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            started = await _until(lambda: bool(a.kinds) and bool(b.kinds), TIMEOUT)
            out["relay_first"] = started and a.kinds[0][1] == "relay" and b.kinds[0][1] == "relay"
            out["upgraded"] = await _until(
                lambda: _kind(a) == "direct" and _kind(b) == "direct", 15
            )
            await asyncio.sleep(1.0)  # traffic on the direct path
            # Drop every UDP datagram between the two NATs' WAN addresses, both ways;
            # the relay (another address) is untouched.
            for argv in (
                ["nft", "add", "table", "inet", "wgtest"],
                [
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "wgtest",
                    "filt",
                    "{ type filter hook forward priority -5 ; policy accept ; }",
                ],
                [
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "wgtest",
                    "filt",
                    "ip",
                    "daddr",
                    wan_b,
                    "meta",
                    "l4proto",
                    "udp",
                    "drop",
                ],
                [
                    "nft",
                    "add",
                    "rule",
                    "inet",
                    "wgtest",
                    "filt",
                    "ip",
                    "saddr",
                    wan_b,
                    "meta",
                    "l4proto",
                    "udp",
                    "drop",
                ],
            ):
                await asyncio.to_thread(lab.exec, "nat_a", argv, check=True)
            cut = time.monotonic()
            out["sent_at_cut"] = (a.sent, b.sent)
            out["fell_back"] = await _until(lambda: _kind(a) == "relay" and _kind(b) == "relay", 10)
            out["fallback_a"] = next((t for t, k in a.kinds if t > cut and k == "relay"), 99) - cut
            out["fallback_b"] = next((t for t, k in b.kinds if t > cut and k == "relay"), 99) - cut
            out["sent_at_fallback"] = (a.sent, b.sent)
            await asyncio.sleep(1.5)  # traffic back on the relay
        finally:
            stop.set_result(None)
        return out

    out, _, method = await asyncio.gather(
        drive(),
        lab.arun("b", callee, lab, address, b, stop, timeout=90),
        lab.arun("a", caller, lab, address, a, stop, timeout=90),
    )
    lost = {
        "a->b": sorted(set(range(a.sent)) - set(b.received)),
        "b->a": sorted(set(range(b.sent)) - set(a.received)),
    }
    print(
        "relay-first lab:", out, "kinds:", a.kinds, b.kinds, "sent:", a.sent, b.sent, "lost:", lost
    )
    assert method == "turn"
    assert out["relay_first"], (a.kinds, b.kinds)
    assert out["upgraded"], (a.kinds, b.kinds)
    assert out["fell_back"], (a.kinds, b.kinds)
    assert out["fallback_a"] <= FALLBACK_TARGET and out["fallback_b"] <= FALLBACK_TARGET, out
    for name, lost_list in lost.items():
        got = b.received if name == "a->b" else a.received
        assert len(got) == len(set(got)), "no message is delivered twice"
        # What went on the direct path while it was dying was replayed over the relay.
        assert lost_list == [], (name, lost_list)
    assert a.replayed > 0 and b.replayed > 0


async def test_relayed_stream_link_moves_to_a_direct_tcp_link(lab_factory: Any) -> None:
    """transport="tcp" from behind a port-restricted NAT to a public host, through the
    relay first: the stream link moves to the direct TCP link while carrying data, and
    every message arrives once, in order, both ways."""
    lab = lab_factory(("port-restricted", "open"))
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    count = 300

    async def serve(lab: Any) -> dict[str, Any]:
        async with Node(port=0, conf=conf(lab, "pub")) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)
            first = link.path.kind
            got = [await link.recv(timeout=TIMEOUT) for _ in range(count)]
            for i in range(count):
                await link.send(b"p%d" % i)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await link.recv(timeout=TIMEOUT)  # until the dialler closes
            return {"first": first, "last": link.path.kind, "got": got}

    async def dial(lab: Any) -> dict[str, Any]:
        async with Node(port=0, conf=conf(lab, "a")) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, method = await auto_connect(node, peer, methods=["turn"], timeout=TIMEOUT)
            first = link.path.kind
            for i in range(count):
                await link.send(b"a%d" % i)
                if i % 10 == 0:
                    await asyncio.sleep(0.01)  # a steady flow while the move happens
            got = [await link.recv(timeout=TIMEOUT) for _ in range(count)]
            last = link.path.kind
            await link.close()
            return {"method": method, "first": first, "last": last, "got": got}

    served, dialled = await asyncio.gather(
        lab.arun("pub", serve, lab, timeout=90), lab.arun("a", dial, lab, timeout=90)
    )
    assert dialled["method"] == "turn" and dialled["first"] == "relay" == served["first"]
    assert dialled["last"] == "direct" and served["last"] == "direct"
    assert served["got"] == [b"a%d" % i for i in range(count)]
    assert dialled["got"] == [b"p%d" % i for i in range(count)]


async def _stream_pump_until(stop: concurrent.futures.Future[None], link: Any, side: Side) -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().create_task(_wait_then_set(stop, done))
    await _pump(link, side, done)
    side.replayed = link.replayed


@pytest.mark.parametrize("heal", [False, True], ids=["cut", "cut-then-healed"])
async def test_relayed_stream_link_falls_back_when_the_direct_path_dies(
    lab_factory: Any, monkeypatch: pytest.MonkeyPatch, heal: bool
) -> None:
    """transport="tcp": the relayed stream link moves to a direct TCP link, then a
    firewall rule drops the direct path; both ends are back on the relay within 6.5 s,
    the messages the dead link swallowed are replayed there, and every message arrives
    exactly once and in order, both ways.  ``heal``: the rule is then removed, and the
    link moves to a new direct link (the retry shortened from 5 s to 2 s)."""
    if heal:
        monkeypatch.setattr(migrate, "RETRY_FIRST", 2.0)
        monkeypatch.setattr(migrate, "RETRY_MAX", 4.0)
    lab = lab_factory(("port-restricted", "open"))
    a, pub = Side(), Side()
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop: concurrent.futures.Future[None] = concurrent.futures.Future()
    pub_ip = lab.address("pub")
    assert pub_ip != lab.servers["stun"]["host"], "the relay must not be on the cut path"

    async def serve(lab: Any) -> None:
        async with Node(port=0, conf=conf(lab, "pub")) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)
            await _stream_pump_until(stop, link, pub)

    async def dial(lab: Any) -> str:
        async with Node(port=0, conf=conf(lab, "a")) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, method = await auto_connect(node, peer, methods=["turn"], timeout=TIMEOUT)
            await _stream_pump_until(stop, link, a)
            return method

    async def drive() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            started = await _until(lambda: bool(a.kinds) and bool(pub.kinds), TIMEOUT)
            # The dialler's link is on the relay when auto_connect returns (the direct
            # dial starts after); the accepting end's may have moved by the time its
            # pump starts, so only the dialler's first path is checked.
            out["relay_first"] = started and a.kinds[0][1] == "relay"
            out["moved"] = await _until(lambda: _kind(a) == "direct" and _kind(pub) == "direct", 15)
            await asyncio.sleep(1.0)  # traffic on the direct link
            # Drop every TCP segment between a's NAT and pub, both ways; the relay (on
            # another address) is untouched.
            chain = "{ type filter hook forward priority -5 ; policy accept ; }"
            rule = ["nft", "add", "rule", "inet", "wgtest", "filt"]
            for argv in (
                ["nft", "add", "table", "inet", "wgtest"],
                ["nft", "add", "chain", "inet", "wgtest", "filt", chain],
                [*rule, "ip", "daddr", pub_ip, "meta", "l4proto", "tcp", "drop"],
                [*rule, "ip", "saddr", pub_ip, "meta", "l4proto", "tcp", "drop"],
            ):
                await asyncio.to_thread(lab.exec, "nat_a", argv, check=True)
            cut = time.monotonic()
            out["fell_back"] = await _until(
                lambda: _kind(a) == "relay" and _kind(pub) == "relay", 10
            )
            out["fallback_a"] = next((t for t, k in a.kinds if t > cut and k == "relay"), 99) - cut
            out["fallback_pub"] = (
                next((t for t, k in pub.kinds if t > cut and k == "relay"), 99) - cut
            )
            await asyncio.sleep(1.5)  # traffic back on the relay
            if heal:
                await asyncio.to_thread(
                    lab.exec, "nat_a", ["nft", "delete", "table", "inet", "wgtest"], check=True
                )
                healed = time.monotonic()
                out["moved_again"] = await _until(
                    lambda: _kind(a) == "direct" and _kind(pub) == "direct", 20
                )
                out["moved_again_after"] = round(time.monotonic() - healed, 2)
                await asyncio.sleep(1.0)  # traffic on the new direct link
        finally:
            stop.set_result(None)
        return out

    out, _, method = await asyncio.gather(
        drive(), lab.arun("pub", serve, lab, timeout=90), lab.arun("a", dial, lab, timeout=90)
    )
    print(
        "stream fallback lab:",
        out,
        "kinds:",
        a.kinds,
        pub.kinds,
        "sent:",
        a.sent,
        pub.sent,
        "replayed:",
        a.replayed,
        pub.replayed,
    )
    assert method == "turn"
    assert out["relay_first"] and out["moved"] and out["fell_back"], (a.kinds, pub.kinds)
    assert out["fallback_a"] <= FALLBACK_TARGET and out["fallback_pub"] <= FALLBACK_TARGET, out
    # Exactly once and in order, both ways (a stream link delivers in order).
    assert pub.received == list(range(a.sent)), (a.sent, pub.received[-5:])
    assert a.received == list(range(pub.sent)), (pub.sent, a.received[-5:])
    assert a.replayed + pub.replayed > 0, "what the dead link swallowed came by the relay"
    if heal:
        assert out["moved_again"], (a.kinds, pub.kinds)
        for side in (a, pub):
            assert [k for _, k in side.kinds][-3:] == ["direct", "relay", "direct"], side.kinds
