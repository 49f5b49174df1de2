"""auto_connect's head start: a candidate with ``extra["head_start"]`` (hole punching)
holds back the candidates after it (a relay) for that long while it runs, and releases
them at once when it fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from warpgate import ConnectError, Node, auto_connect
from warpgate.interfaces import Candidate


class FakeMethod:
    """A method whose only attempt fails after ``fail_after`` seconds."""

    def __init__(self, name: str, cost: float, fail_after: float, head_start: float = 0.0):
        self.name, self.cost, self.fail_after, self.head_start = name, cost, fail_after, head_start

    def candidates(self, peer: Any, *, transport: str) -> list[Candidate]:
        extra = {"head_start": self.head_start} if self.head_start else {}
        return [Candidate(self.name, "udp", None, None, self.cost, extra=extra)]  # type: ignore[arg-type]

    async def attempt(self, peer: Any, candidate: Candidate, *, intent: bytes) -> Any:
        await asyncio.sleep(self.fail_after)
        raise ConnectionError(f"{self.name} gave up")


async def _starts(node: Node, peer: bytes, *methods: FakeMethod) -> dict[str, float]:
    for method in methods:
        node.traversal_methods[method.name] = method
    with pytest.raises(ConnectError) as caught:
        await auto_connect(
            node, peer, transport="udp", methods=[m.name for m in methods], timeout=5
        )
    return {a.method: a.started for a in caught.value.attempts}


async def test_a_head_start_holds_later_candidates_back(pair: tuple[Node, Node]) -> None:
    a, b = pair
    starts = await _starts(
        a,
        b.address(),
        FakeMethod("fake_punch", 6, fail_after=3.0, head_start=1.0),
        FakeMethod("fake_relay", 50, fail_after=0.1),
    )
    assert 0.95 <= starts["fake_relay"] < 1.5, starts  # not after the 0.25 s stagger


async def test_a_failed_head_start_releases_them_at_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    starts = await _starts(
        a,
        b.address(),
        FakeMethod("fake_punch", 6, fail_after=0.5, head_start=2.0),
        FakeMethod("fake_relay", 50, fail_after=0.1),
    )
    assert 0.45 <= starts["fake_relay"] < 0.9, starts


async def test_without_a_head_start_the_stagger_applies(pair: tuple[Node, Node]) -> None:
    a, b = pair
    starts = await _starts(
        a,
        b.address(),
        FakeMethod("fake_punch", 6, fail_after=3.0),
        FakeMethod("fake_relay", 50, fail_after=0.1),
    )
    assert 0.2 <= starts["fake_relay"] < 0.45, starts


async def test_a_doomed_candidate_does_not_hold_up_the_next(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the NAT information says an attempt cannot work (direct to a peer behind a
    filtering NAT, say), it still runs, but the next candidate starts beside it."""
    import warpgate.connect

    def doomed(node: Node, peer: Any, cand: Candidate) -> float:
        return warpgate.connect.DOOMED_PENALTY if cand.method == "fake_direct" else 0.0

    monkeypatch.setattr(warpgate.connect, "_doomed_penalty", doomed)
    a, b = pair
    starts = await _starts(
        a,
        b.address(),
        FakeMethod("fake_direct", 1, fail_after=3.0),
        FakeMethod("fake_relay", 50, fail_after=0.1),
    )
    assert starts["fake_relay"] < 0.1, starts  # not after the 0.25 s stagger
