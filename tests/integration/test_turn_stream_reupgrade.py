"""A relay-first stream link that fell back to the relay moves to a direct link again,
round after round, on loopback through a real coturn: every message arrives exactly once
and in order across all the moves, ``link.path`` and the path-change hook follow each
move, and a direct link of an earlier round that comes late is closed, never adopted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.conftest import CoturnFactory
from tests.integration.test_turn_relay import _turn_pair
from tests.integration.test_turn_stream_fallback import Flow, both_ways
from tests.integration.test_turn_stream_fallback import _until as until
from warpgate import auto_connect
from warpgate.turn import migrate
from warpgate.turn.coturn import Coturn
from warpgate_plugins.turn import direct_intent

ROUNDS = 3  # moves to direct: round 0, then two more after a fallback each


@pytest.fixture
def coturn(coturn_factory: CoturnFactory) -> Coturn:
    return coturn_factory()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seconds instead of minutes: retry 0.3 s after a fallback, doubling to 1 s."""
    monkeypatch.setattr(migrate, "RETRY_FIRST", 0.3)
    monkeypatch.setattr(migrate, "RETRY_MAX", 1.0)


class SteadyFlow(Flow):
    """A message every 4 ms (bounded in count), for as many rounds as the test takes."""

    async def send(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.sent < 20000:
            await self.sender.send(self.tag + b"%d" % self.sent)
            self.sent += 1
            await asyncio.sleep(0.004)


async def _more(flow: Flow, count: int) -> bool:
    """``count`` more messages of ``flow`` arrive (bounded wait)."""
    target = len(flow.got) + count
    return await until(lambda: len(flow.got) >= target, 5)


def _abort_direct(link: Any) -> None:
    link._direct.result()._conn.transport.abort()


@pytest.mark.usefixtures("quick_retries")
async def test_stream_link_moves_direct_again_after_each_fallback(coturn: Coturn) -> None:
    changes: list[tuple[str, str, str]] = []
    async with _turn_pair(coturn, watch=changes) as (a, b):
        link: Any
        link, method = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        assert method == "turn"
        rounds: list[tuple[int, int]] = []
        async with both_ways(link, inbound, SteadyFlow) as traffic:
            ab, ba = traffic.ab, traffic.ba
            for expected in range(ROUNDS):
                moved = await until(
                    lambda: (
                        link.path.kind == "direct" == inbound.path.kind
                        and link.on_direct
                        and inbound.on_direct
                    ),
                    10,
                )
                assert moved, (expected, link.path, inbound.path, link.direct_round)
                rounds.append((link.direct_round, inbound.direct_round))
                # Traffic on this round's direct link, both ways.
                assert await _more(ab, 20) and await _more(ba, 20)
                _abort_direct(link)
                back = await until(lambda: link.path.kind == "relay" == inbound.path.kind, 10)
                assert back, (expected, link.path, inbound.path)
                assert await _more(ab, 5) and await _more(ba, 5)  # on the relay
        assert traffic.all_delivered
        print(
            "rounds:",
            rounds,
            "sent:",
            ab.sent,
            ba.sent,
            "replayed:",
            link.replayed,
            inbound.replayed,
            "from:",
            link.delivered_from,
            inbound.delivered_from,
        )
        # Each move was a new round, the same on both ends.
        assert rounds == [(n, n) for n in range(ROUNDS)], rounds
        for flow in (ab, ba):
            assert flow.got == list(range(flow.sent)), (flow.tag, flow.sent, flow.got[-5:])
        for name in ("alice", "bob"):
            mine = [(old, new) for who, old, new in changes if who == name]
            assert mine == [("relay", "direct"), ("direct", "relay")] * ROUNDS, mine
        assert not link.closed and not inbound.closed
        await link.send(b"still a link")
        assert await inbound.recv(3) == b"still a link"


@pytest.mark.usefixtures("quick_retries")
async def test_a_direct_link_of_an_earlier_round_is_closed_not_adopted(coturn: Coturn) -> None:
    async with _turn_pair(coturn) as (a, b):
        link: Any
        link, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        assert await until(lambda: link.on_direct and inbound.on_direct, 10)
        _abort_direct(link)
        assert await until(lambda: link.path.kind == "relay" == inbound.path.kind, 10)
        assert await until(
            lambda: link.on_direct and inbound.on_direct and inbound.direct_round == 1, 10
        ), (link.direct_round, inbound.direct_round)
        current = inbound._direct.result()
        # A late dial of round 0 (the intent the peer's node knows the round by).
        token = link.relayed.intent
        stale, _ = await auto_connect(
            a, b.address(), methods=["direct"], transport="tcp", intent=direct_intent(token, 0)
        )
        assert await until(lambda: stale.closed, 5), "the stale link was not closed"
        with pytest.raises(TimeoutError):
            await b.accept(timeout=0.5)  # nor offered to the application
        # The wrapper kept its own direct link of round 1 and still carries messages.
        assert inbound._direct.result() is current and inbound.on_direct
        await link.send(b"on round 1")
        assert await inbound.recv(3) == b"on round 1"
        # Handed in directly, a link of another round is closed too.
        other, _ = await auto_connect(
            a, b.address(), methods=["direct"], transport="tcp", intent=b"unrelated"
        )
        mirror: Any = await b.accept(timeout=3)
        inbound.offer_direct(mirror, 0)
        assert await until(lambda: mirror.closed and other.closed, 5)
        assert inbound._direct.result() is current


@pytest.mark.parametrize("hostile", ["rounds too fast", "a round far ahead"])
async def test_rounds_a_peer_makes_up_close_the_link(coturn: Coturn, hostile: str) -> None:
    """Only the dialler starts rounds, one at a time and at least RETRY_FIRST apart: a
    peer sending ROUNDs faster, or one far ahead of the current round, is refused (the
    link closes with a protocol error) instead of making us set up work for each."""
    from warpgate.sansio import stream_migration as sm

    async with _turn_pair(coturn) as (a, b):
        link: Any
        link, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        assert await until(lambda: link.on_direct and inbound.on_direct, 10)
        for task in list(link._tasks):  # the honest dialler stops starting rounds
            if task.get_name() == "moving direct":
                task.cancel()
        _abort_direct(link)
        assert await until(lambda: link.path.kind == "relay" == inbound.path.kind, 10)
        if hostile == "rounds too fast":
            await link.relayed.send(sm.encode_round(1))
            await link.relayed.send(sm.encode_round(2))
        else:
            await link.relayed.send(sm.encode_round(inbound.direct_round + 1000))
        assert await until(lambda: inbound.closed, 5)
        assert "round" in inbound._close_reason, inbound._close_reason
        assert len(inbound._guards) <= migrate.MAX_GUARDS


@pytest.mark.usefixtures("quick_retries")
async def test_an_echo_given_up_on_while_waiting_to_send_does_not_end_the_link(
    coturn: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dialler gives up on a round's echo while its reader waits for the send lock
    (held by a sender blocked on a full relay): the late echo is stale, and the link
    carries on (it used to end with an AttributeError in the reader)."""
    from warpgate.sansio import stream_migration as sm

    monkeypatch.setattr(migrate, "ROUND_WAIT", 0.3)
    async with _turn_pair(coturn) as (a, b):
        link: Any
        link, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=8)
        inbound: Any = await b.accept(timeout=3)
        assert await until(lambda: link.on_direct and inbound.on_direct, 10)
        send = link.relayed.send
        holding: list[asyncio.Task[None]] = []

        async def hold_the_lock() -> None:
            async with link._send_lock:
                await asyncio.sleep(0.6)

        async def send_then_block(msg: bytes) -> None:
            await send(msg)
            if msg[:1] == bytes([sm.ROUND]) and not holding:
                holding.append(asyncio.ensure_future(hold_the_lock()))

        link.relayed.send = send_then_block
        _abort_direct(link)
        await asyncio.sleep(2)
        assert not link.closed and not inbound.closed, (link._close_reason, inbound._close_reason)
        await link.send(b"still here")
        assert await inbound.recv(5) == b"still here"
