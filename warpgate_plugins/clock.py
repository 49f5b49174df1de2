"""Phases 4a and 5: the node's clock (NTP via ``ntplib``) and punch coordination.

Syncing takes several round trips to each server, so it runs in the background from
phase 4a, overlapping the rest of start-up (STUN tests and port mapping run in the
background too), and phase 12 waits for it.  Until then ``node.clock`` is the system
clock; when the sync ends, ``node.clock`` is replaced, the skew is logged, and the
results of phases 4a and 5 say what was found.  Nothing uses the clock before
``start()`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
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


_jobs: weakref.WeakKeyDictionary[Node, asyncio.Task[None]] = weakref.WeakKeyDictionary()


@hookimpl(trylast=True)
async def warpgate_initialize_system_clock(node: Node) -> str:
    if node.clock is not None:
        return "given"
    node.clock = SystemClock()
    if not node.conf["init_clock_skew"]:
        return "skipped"
    _jobs[node] = node.spawn(_sync(node), name="ntp sync")
    return "syncing"


async def _sync(node: Node) -> None:
    conf = node.conf
    begin = time.perf_counter()
    clock = await sync_ntp_clock(
        conf["ntp_servers"],
        timeout=float(conf["ntp_timeout"]),
        samples_per_server=int(conf["ntp_samples"]),
        max_delay=float(conf["ntp_max_delay"]),
        max_offset=float(conf["ntp_max_offset"]),
        agreement=float(conf["ntp_agreement"]),
    )
    node.clock = clock
    node.phase_times["ntp (background)"] = time.perf_counter() - begin
    source = getattr(clock, "source", "ok")
    node.phase_results["initialize_system_clock"] = (
        "unavailable" if "unavailable" in source else source
    )
    node.phase_results["initialize_punch_coordination"] = _log_skew(node)


def _log_skew(node: Node) -> str:
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


@hookimpl(trylast=True)
async def warpgate_initialize_punch_coordination(node: Node) -> str:
    job = _jobs.get(node)
    if job is not None and not job.done():
        return "after ntp sync"  # the sync logs the skew and replaces this result
    return _log_skew(node)


@hookimpl(tryfirst=True)
async def warpgate_finalize_port_forwarding(node: Node) -> None:
    """Phase 12 is where start-up waits for its background work: the NTP sync too."""
    job = _jobs.pop(node, None)
    if job is None or job.done():
        return None
    # sync_ntp_clock bounds itself (no query starts after 1.5 x ntp_timeout); the
    # margin only guards against a stuck resolver thread.
    bound = 2.0 * float(node.conf["ntp_timeout"]) + 2.0
    try:
        await node.wait_for_job(job, timeout=bound, what="NTP sync")
    except TimeoutError:
        node.phase_results["initialize_system_clock"] = "unavailable"  # system clock kept
    return None
