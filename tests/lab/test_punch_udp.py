"""UDP hole punching across the lab's NATs: both peers behind NATs, no port mapping; the
link must come from ``udp_punch`` and carry messages both ways."""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.punch_helpers import run_pair

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    "modes",
    [
        ("port-restricted", "port-restricted"),
        ("full-cone", "symmetric"),
        ("symmetric", "port-restricted"),
    ],
    ids=lambda m: "--".join(m),
)
async def test_udp_punch_connects_natted_peers(lab_factory: Any, modes: tuple[str, str]) -> None:
    lab = lab_factory(modes, servers=True)
    tries = [{"transport": "udp", "methods": ["udp_punch"], "timeout": 15}] * 1
    served, dialled = await run_pair(lab, tries)
    for result in dialled:
        assert result["ok"], result
        assert result["method"] == "udp_punch"
        assert lab.wan_address("nat_b") in result["path"]
    assert [s["method"] for s in served] == ["inbound"] * len(tries)
