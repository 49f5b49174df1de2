"""A relay-first stream link that moved to a direct TCP link comes back to the relay when
the direct link dies -- closed under it, or silent -- on loopback through a real coturn:
every message arrives exactly once and in order, ``link.path`` says relay again and the
path-change hook fires on both ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.conftest import CoturnFactory
from tests.integration.test_turn_relay import _turn_pair
from warpgate import auto_connect
from warpgate.turn import migrate
from warpgate.turn.coturn import Coturn


@pytest.fixture
def coturn(coturn_factory: CoturnFactory) -> Coturn:
    return coturn_factory()


class Flow:
    """Numbered messages one way, sent every few ms until ``stop``; what arrived."""

    def __init__(self, sender: Any, receiver: Any, tag: bytes) -> None:
        self.sender, self.receiver, self.tag = sender, receiver, tag
        self.sent = 0
        self.got: list[int] = []

    async def send(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.sent < 5000:  # bounded
            await self.sender.send(self.tag + b"%d" % self.sent)
            self.sent += 1
            if self.sent % 5 == 0:
                await asyncio.sleep(0.005)

    async def receive(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                msg = await self.receiver.recv(15)
                assert msg.startswith(self.tag), msg
                self.got.append(int(msg[len(self.tag) :]))


async def _until(pred: Any, limit: float) -> bool:
    """Poll ``pred`` (state of two links, no event to wait on) for at most ``limit`` s."""
    for _ in range(int(limit / 0.02)):
        if pred():
            return True
        await asyncio.sleep(0.02)
    return bool(pred())


class Traffic:
    """Both directions of a flow of numbered messages between two links."""

    def __init__(self, ab: Flow, ba: Flow) -> None:
        self.ab, self.ba = ab, ba
        self.all_delivered = False


@contextlib.asynccontextmanager
async def both_ways(link: Any, inbound: Any, flow: type[Flow] = Flow) -> AsyncIterator[Traffic]:
    """Messages flow both ways while the block runs; on leaving, sending stops, every
    message sent is waited for (bounded: ``all_delivered`` says whether all came), and
    the readers stop."""
    traffic = Traffic(flow(link, inbound, b"a"), flow(inbound, link, b"b"))
    ab, ba = traffic.ab, traffic.ba
    stop = asyncio.Event()
    senders = [asyncio.create_task(t) for t in (ab.send(stop), ba.send(stop))]
    readers = [asyncio.create_task(ab.receive()), asyncio.create_task(ba.receive())]
    try:
        yield traffic
    finally:
        stop.set()
        await asyncio.gather(*senders)
        traffic.all_delivered = await _until(
            lambda: len(ab.got) >= ab.sent and len(ba.got) >= ba.sent, 10
        )
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _moved_pair(
    coturn: Coturn, changes: list[tuple[str, str, str]], kill: Any
) -> dict[str, Any]:
    """Connect through the relay, let traffic flow both ways until the link is direct,
    ``kill(link, inbound)`` the direct link, and keep the traffic flowing until both
    ends are back on the relay.  Returns what each side sent and received."""
    async with _turn_pair(coturn, watch=changes) as (a, b):
        link, method = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound = await b.accept(timeout=3)
        # (On loopback the move to direct may be done already: check the relayed link.)
        assert method == "turn" and link.relayed.path.kind == "relay" == inbound.relayed.path.kind
        async with both_ways(link, inbound) as traffic:
            ab, ba = traffic.ab, traffic.ba
            moved = await _until(
                lambda: link.path.kind == "direct" == inbound.path.kind and ab.got, 5
            )
            assert moved, (link.path, inbound.path)
            await asyncio.sleep(0.3)  # traffic on the direct link
            cut = time.monotonic()
            kill(link, inbound)
            back = await _until(lambda: link.path.kind == "relay" == inbound.path.kind, 10)
            elapsed = time.monotonic() - cut
            assert back, (link.path, inbound.path)
            await asyncio.sleep(0.3)  # traffic back on the relay
        result = {
            "elapsed": elapsed,
            "ab": ab,
            "ba": ba,
            "replayed": (link.replayed, inbound.replayed),  # type: ignore[attr-defined]
            "from": (link.delivered_from, inbound.delivered_from),  # type: ignore[attr-defined]
            "reasons": (link.fallback_reason, inbound.fallback_reason),  # type: ignore[attr-defined]
        }
        # Still a working link, on the relay.
        await link.send(b"after the fallback")
        assert await inbound.recv(3) == b"after the fallback"
        await inbound.send(b"and back")
        assert await link.recv(3) == b"and back"
        await link.close()
        return result


def _assert_exactly_once_in_order(result: dict[str, Any]) -> None:
    for flow in (result["ab"], result["ba"]):
        assert flow.got == list(range(flow.sent)), (flow.tag, flow.sent, flow.got[-5:])


def _abort_direct(link: Any, inbound: Any) -> None:
    link._direct.result()._conn.transport.abort()


def _silence_direct(link: Any, inbound: Any) -> None:
    # A black hole: neither end reads its direct connection any more, so nothing more
    # is heard on it (what a firewall that drops the path does), and writes pile up.
    for end in (link, inbound):
        end._direct.result()._conn.transport.pause_reading()


async def test_direct_link_closed_under_the_stream_falls_back_to_the_relay(
    coturn: Coturn,
) -> None:
    changes: list[tuple[str, str, str]] = []
    result = await _moved_pair(coturn, changes, _abort_direct)
    print("closed direct link:", {k: v for k, v in result.items() if k not in ("ab", "ba")})
    _assert_exactly_once_in_order(result)
    for name in ("alice", "bob"):
        assert (name, "relay", "direct") in changes and (name, "direct", "relay") in changes
    # Each side read messages on the relay, on the direct link, and on the relay again.
    for delivered in result["from"]:
        assert delivered["relay"] > 0 and delivered["direct"] > 0
    assert result["elapsed"] < 2.0, "a closed direct link is noticed at once"


async def test_silent_direct_link_falls_back_within_the_bound(coturn: Coturn) -> None:
    changes: list[tuple[str, str, str]] = []
    result = await _moved_pair(coturn, changes, _silence_direct)
    print("silent direct link:", {k: v for k, v in result.items() if k not in ("ab", "ba")})
    _assert_exactly_once_in_order(result)
    for name in ("alice", "bob"):
        assert (name, "direct", "relay") in changes
    # Silence is counted from the last record heard, a moment before the cut.
    assert migrate.DEAD_AFTER - 0.5 <= result["elapsed"] <= 6.5, result["elapsed"]
    # What the black hole swallowed was replayed over the relay; the senders were held
    # at the bound of unacknowledged messages meanwhile (backpressure), not past it.
    assert sum(result["replayed"]) > 0
    assert max(result["replayed"]) <= migrate.MAX_UNACKED


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.02])
async def test_direct_link_dying_during_the_move_falls_back(coturn: Coturn, delay: float) -> None:
    """The direct link dies while the two switches may still be under way (``delay``
    after it was handed to the wrapper): both ends settle on the relay, and every
    message still arrives exactly once and in order."""
    async with _turn_pair(coturn) as (a, b):
        link: Any
        link, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        async with both_ways(link, inbound) as traffic:
            assert await _until(lambda: link._direct.done(), 5)
            await asyncio.sleep(delay)
            link._direct.result()._conn.transport.abort()
            settled = await _until(
                lambda: (
                    link._fallen
                    and inbound._fallen
                    and link.path.kind == "relay"
                    and inbound.path.kind == "relay"
                ),
                10,
            )
            assert settled, (link.path, inbound.path, link._fallen, inbound._fallen)
            await asyncio.sleep(0.2)  # traffic on the relay
        _assert_exactly_once_in_order({"ab": traffic.ab, "ba": traffic.ba})
        assert not link.closed and not inbound.closed
        await link.send(b"still a link")
        assert await inbound.recv(3) == b"still a link"


async def test_stream_link_outlives_its_relay_then_closes_with_both_reasons(
    coturn: Coturn,
) -> None:
    """A stream link on its direct link loses its standby relay (coturn stops): it stays
    up on the direct link.  When the direct link then dies too, there is nothing to fall
    back to: the link closes, in bounded time, saying both."""
    async with _turn_pair(coturn) as (a, b):
        link: Any
        link, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        assert await _until(lambda: link.path.kind == "direct" == inbound.path.kind, 5)
        coturn.stop()
        # coturn's TCP connections close with it: both standbys are gone at once.
        assert await _until(lambda: link.relayed.closed and inbound.relayed.closed, 5)
        assert not link.closed and not inbound.closed
        await link.send(b"still here")
        assert await inbound.recv(3) == b"still here"
        link._direct.result()._conn.transport.abort()
        assert await _until(lambda: link.closed and inbound.closed, 5)
        reasons = [x._close_reason for x in (link, inbound)]
        print("closed:", reasons)
        assert all("direct link lost" in r and "relay" in r for r in reasons), reasons
        with pytest.raises(ConnectionError):
            await link.send(b"after both paths died")
