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
    return {
        "ntp_servers": list(DEFAULT_NTP_SERVERS),
        "ntp_timeout": 2.0,
        "ntp_samples": 4,
        "ntp_max_delay": 1.0,
        "ntp_max_offset": 600.0,
        "ntp_agreement": 0.25,
    }


@hookimpl(trylast=True)
async def warpgate_initialize_system_clock(node: Node) -> str:
    if node.clock is not None:
        return "given"
    if not node.conf["init_clock_skew"]:
        node.clock = SystemClock()
        return "skipped"
    conf = node.conf
    node.clock = await sync_ntp_clock(
        conf["ntp_servers"],
        timeout=float(conf["ntp_timeout"]),
        samples_per_server=int(conf["ntp_samples"]),
        max_delay=float(conf["ntp_max_delay"]),
        max_offset=float(conf["ntp_max_offset"]),
        agreement=float(conf["ntp_agreement"]),
    )
    source = getattr(node.clock, "source", "ok")
    return "unavailable" if "unavailable" in source else source


@hookimpl(trylast=True)
async def warpgate_initialize_punch_coordination(node: Node) -> str:
    clock = node.clock
    if clock is None:
        return "no clock"
    log.info(
        "clock offset %+.1f ms (uncertainty %.1f ms, %s)",
        clock.offset * 1000,
        clock.uncertainty * 1000,
        getattr(clock, "source", type(clock).__name__),
    )
    return f"{clock.offset * 1000:+.1f} ms"
