"""Phase 4b, ``load_p2p_stun_clients``: the STUN servers that classify the node's NAT.

Phase 4b runs before the node listens, and NAT behaviour must be measured from the
listening socket (that mapping is the one peers see).  So this phase parses and resolves
``stun_servers`` (concurrently with the clock and signalling phases) and leaves a
:class:`NatDiscovery` in ``node.stun_clients["nat"]``; phase 8 (``build_node_address``)
awaits its :meth:`~NatDiscovery.measure` once the listeners exist and writes each
report into the address.  Every step is bounded by ``stun_timeout``; a failure is a log
line and an ``unknown`` NAT, never a failed start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.stun.nat import NatReport
from warpgate.stun.node_binding import classify_listeners, parse_server, resolve_servers

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
