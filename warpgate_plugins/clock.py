"""Phases 4a and 5: the node's clock (NTP via ``ntplib``) and punch coordination."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.clock import SystemClock, sync_ntp_clock
from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

# Public servers are production defaults; tests and the lab point this elsewhere.
DEFAULT_NTP_SERVERS = ["pool.ntp.org", "time.cloudflare.com", "time.google.com"]


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {"ntp_servers": list(DEFAULT_NTP_SERVERS), "ntp_timeout": 2.0}


@hookimpl(trylast=True)
async def warpgate_initialize_system_clock(node: Node) -> str:
    if node.clock is not None:
        return "given"
    if not node.conf["init_clock_skew"]:
        node.clock = SystemClock()
        return "skipped"
    node.clock = await sync_ntp_clock(node.conf["ntp_servers"], timeout=node.conf["ntp_timeout"])
    return node.clock.source if isinstance(node.clock, SystemClock) else "ok"


@hookimpl(trylast=True)
async def warpgate_initialize_punch_coordination(node: Node) -> str:
    clock = node.clock
    if clock is None:
        return "no clock"
    log.info(
        "clock offset %+.1f ms (uncertainty %.1f ms)",
        clock.offset * 1000,
        clock.uncertainty * 1000,
    )
    return f"{clock.offset * 1000:+.1f} ms"
