"""The NTP clock against the lab's real chrony, from behind a NAT."""

from __future__ import annotations

from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.clock import NtpClock, sync_ntp_clock

pytestmark = pytest.mark.lab


def server(lab: Any) -> str:
    ntp = lab.servers["ntp"]
    return f"{ntp['host']}:{ntp['port']}"


async def test_sync_against_chrony(lab: Any) -> None:
    async def sync(servers: list[str]) -> Any:
        return await sync_ntp_clock(servers, timeout=2.0, samples_per_server=4)

    clock = await lab.arun("a", sync, [server(lab)], timeout=30)
    assert isinstance(clock, NtpClock), clock
    # chrony serves this machine's own clock (-x): the offset is tiny, and known to be.
    assert abs(clock.offset) < 0.05
    assert 0 <= clock.uncertainty < 0.05
    assert clock.used[server(lab)].samples >= 2


async def test_node_start_with_chrony_and_a_dead_server(lab: Any) -> None:
    async def start(servers: list[str]) -> tuple[dict[str, Any], float, str]:
        conf = dict_child({"init_clock_skew": True, "ntp_servers": servers}, NODE_TEST_CONF)
        async with Node(port=0, conf=conf) as node:
            await node.start()
            assert node.clock is not None
            return dict(node.phase_results), node.clock.offset, getattr(node.clock, "source", "")

    # 198.51.100.250 is in the lab's fake internet, where nothing answers.
    results, offset, source = await lab.arun(
        "b", start, [server(lab), "198.51.100.250"], timeout=30
    )
    assert results["initialize_system_clock"].startswith("ntp (1 of 2")
    assert abs(offset) < 0.05 and source.startswith("ntp")
    assert results["initialize_punch_coordination"].endswith("ms")
