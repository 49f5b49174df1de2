"""Phases 4b, 8 and 12: the STUN servers that classify the node's NAT.

Phase 4b (``load_p2p_stun_clients``) runs before the node listens, and NAT behaviour
must be measured from the listening socket (that mapping is the one peers see).  So
phase 4b parses and resolves ``stun_servers`` (concurrently with the clock and
signalling phases) and leaves a :class:`NatDiscovery` in ``node.stun_clients["nat"]``.

Phase 8 (``build_node_address``, once the listeners exist) starts its
:meth:`~NatDiscovery.measure` as a background job and returns at once, so the NAT tests
overlap port mapping (phase 9) and the phases after it.  Phase 12
(``finalize_port_forwarding``) waits for the job, bounded, and the address is encoded
again once -- with the NAT reports and any port mapping -- by
:func:`warpgate_plugins.address.refresh_address`.  Both hooks are ``tryfirst`` and
return ``None``, so the built-in address and port-mapping implementations still run
after them.  The job's own duration is ``node.phase_times["stun (background)"]``.

Every step is bounded by ``stun_timeout``; a failure is a log line and an ``unknown``
NAT, never a failed start.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.stun.nat import NatReport
from warpgate.stun.node_binding import classify_listeners, parse_server, resolve_servers
from warpgate_plugins.address import refresh_address

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

# Public servers are production defaults; tests and the lab point this elsewhere.
# The first answers RFC 5780 tests (two addresses); the others give mapping only.
DEFAULT_STUN_SERVERS = [
    "stun.stunprotocol.org:3478",
    "stun.l.google.com:19302",
    "stun.cloudflare.com:3478",
]

#: ``node.phase_times`` key of the background NAT tests (seconds, like the phases).
BACKGROUND_TIME = "stun (background)"
# Slack over stun_timeout for the phase-12 wait: each listener's tests are already
# bounded by stun_timeout + 1 s inside classify_listeners.
_WAIT_SLACK = 2.0


class _Job:
    """The background NAT tests of one node: started once in phase 8, awaited once in
    phase 12 (which drops the task, so the entry holds nothing of the node)."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task: asyncio.Task[None] | None = task


_jobs: weakref.WeakKeyDictionary[Node, _Job] = weakref.WeakKeyDictionary()


class NatDiscovery:
    """The resolved servers and the settings; :meth:`measure` classifies the listeners."""

    def __init__(
        self,
        servers: list[tuple[str, int]],
        *,
        timeout: float,
        cache_ttl: float,
        failures: dict[str, str] | None = None,
    ) -> None:
        self.servers = servers
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.failures = dict(failures or {})

    async def measure(self, node: Node) -> dict[str, NatReport]:
        """Classify every IPv4 listener into ``node.nat_reports`` (bounded, never raises
        for network trouble)."""
        if not self.servers:
            return {}  # phase 4b said so already
        return await classify_listeners(
            node, self.servers, timeout=self.timeout, cache_ttl=self.cache_ttl
        )


async def _measure_in_background(node: Node, discovery: Any) -> None:
    begin = time.perf_counter()
    try:
        await discovery.measure(node)
    except Exception:  # never fail start-up over a measurement
        log.exception("NAT classification failed; the NAT type stays unknown")
    finally:
        node.phase_times[BACKGROUND_TIME] = time.perf_counter() - begin


def start_nat_tests(node: Node) -> bool:
    """Start the NAT tests of ``node.stun_clients["nat"]`` in the background, once per
    node (phase 8 runs again at the end of phase 12).  Returns whether a job started."""
    discovery = node.stun_clients.get("nat")
    if node in _jobs or discovery is None or not hasattr(discovery, "measure"):
        return False
    if not getattr(discovery, "servers", True):
        return False  # phase 4b logged that no server is usable
    _jobs[node] = _Job(node.spawn(_measure_in_background(node, discovery), name="stun nat"))
    return True


async def wait_nat_tests(node: Node) -> str | None:
    """Wait for the background NAT tests, bounded by ``stun_timeout`` plus slack.
    Returns ``None`` when no job was started, else ``"done"`` or ``"unavailable"``."""
    job = _jobs.get(node)
    if job is None or job.task is None:
        return None
    task, job.task = job.task, None
    bound = float(node.conf["stun_timeout"]) + _WAIT_SLACK
    try:
        await node.wait_for_job(task, timeout=bound, what="NAT classification")
    except TimeoutError:
        return "unavailable"
    return "done"


def _port_mapping_refreshes(node: Node) -> bool:
    """Whether phase 12 goes on to the built-in port-mapping implementation, which
    encodes the address again (once, for both STUN and port mapping)."""
    impls = node.plugins.hook.warpgate_finalize_port_forwarding.get_hookimpls()
    others = {impl.function.__module__ for impl in impls} - {__name__}
    return others == {"warpgate_plugins.upnp"}


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "stun_servers": list(DEFAULT_STUN_SERVERS),
        "stun_timeout": 4.0,
        "stun_cache_ttl": 300.0,
    }


@hookimpl(trylast=True)
async def warpgate_load_p2p_stun_clients(node: Node) -> str:
    if not node.conf["enable_stun_clients"]:
        return "disabled"
    parsed: list[tuple[str, int]] = []
    failures: dict[str, str] = {}
    for text in node.conf["stun_servers"] or ():
        try:
            parsed.append(parse_server(str(text)))
        except ValueError as exc:
            failures[str(text)] = str(exc)
    timeout = float(node.conf["stun_timeout"])
    servers, unresolved = await resolve_servers(parsed, timeout=min(timeout, 2.0))
    failures.update(unresolved)
    if not servers:
        log.warning(
            "STUN clients are unavailable: no usable STUN server (%s); external addresses "
            "and NAT types stay unknown",
            "; ".join(f"{k}: {v}" for k, v in failures.items()) or "none configured",
        )
        node.stun_clients["nat"] = NatDiscovery([], timeout=timeout, cache_ttl=0, failures=failures)
        return "unavailable"
    for server, why in failures.items():
        log.warning("STUN server %s skipped: %s", server, why)
    node.stun_clients["nat"] = NatDiscovery(
        servers, timeout=timeout, cache_ttl=float(node.conf["stun_cache_ttl"]), failures=failures
    )
    return f"{len(servers)} servers"


@hookimpl(tryfirst=True)
async def warpgate_build_node_address(node: Node) -> None:
    """Phase 8: start the NAT tests from the listening sockets, in the background; the
    built-in address plugin encodes the address now and phase 12 adds the reports."""
    start_nat_tests(node)
    return None


@hookimpl(tryfirst=True)
async def warpgate_finalize_port_forwarding(node: Node) -> None:
    """Phase 12, before the port-mapping plugin: wait for the NAT tests.  Returns
    ``None`` so the port-mapping plugin runs next and encodes the address again."""
    if await wait_nat_tests(node) is not None and not _port_mapping_refreshes(node):
        await refresh_address(node)  # nothing after us will: the upnp plugin is gone
    return None
