"""Phases 9 and 12: port mapping on the home router.

Phase 9 starts, in the background, a race between UPnP IGD (``miniupnpc``) and PCP /
NAT-PMP (RFC 6887 / 6886) to the default gateway; phase 12 waits for it, bounded.  The
winner's mappings land in ``node.port_mappings`` (a list of
:class:`~warpgate.portmap.PortMapping`), are refreshed before their lease ends and are
removed when the node closes.  No gateway, a refusal or a gateway that lies: one log
line, the phase result ``"unavailable"``, and start() goes on.

Phase 12 ends by encoding the address again -- once, and only if the mapping or the NAT
tests STUN ran in the background meanwhile (:mod:`warpgate_plugins.stun`, whose phase-12
implementation runs first) changed what goes into it.  The job's own duration is
``node.phase_times["port mapping (background)"]``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.portmap import PortMapError, PortMapper, map_ports
from warpgate_plugins.address import refresh_address

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

# A router whose "external" address is in these ranges sits behind another NAT (CGNAT):
# the mapping only reaches as far as that NAT.
_BEHIND_ANOTHER_NAT = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
]

_jobs: weakref.WeakKeyDictionary[Node, asyncio.Task[str]] = weakref.WeakKeyDictionary()

#: ``node.phase_times`` key of the background port mapping (seconds, like the phases).
BACKGROUND_TIME = "port mapping (background)"


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "portmap_methods": ["upnp", "pcp"],
        "portmap_timeout": 8.0,
        "portmap_lease": 3600,
        "portmap_gateway": None,
        "upnp_root_url": None,
        "upnp_discover_delay": 1.0,
        "natpmp_attempts": 4,
    }


def _gateway(node: Node) -> tuple[str | None, int]:
    """(address, port) of the NAT-PMP/PCP server: conf, else the default IPv4 gateway."""
    conf = node.conf["portmap_gateway"]
    if conf:
        host, _, port = str(conf).partition(":")
        return host, int(port or 5351)
    for iface in sorted(node.ifs, key=lambda i: not i.default):
        if iface.gateway4 is not None:
            return str(iface.gateway4), 5351
    return None, 5351


async def _timed_map(node: Node) -> str:
    begin = time.perf_counter()
    try:
        return await _map(node)
    finally:
        node.phase_times[BACKGROUND_TIME] = time.perf_counter() - begin


async def _map(node: Node) -> str:
    conf = node.conf
    gateway, gateway_port = _gateway(node)
    try:
        mapper = await map_ports(
            node.listen_port,
            methods=list(conf["portmap_methods"]),
            lifetime=int(conf["portmap_lease"]),
            timeout=float(conf["portmap_timeout"]),
            gateway=gateway,
            gateway_port=gateway_port,
            upnp_root_url=conf["upnp_root_url"],
            upnp_discover_delay=float(conf["upnp_discover_delay"]),
            natpmp_attempts=int(conf["natpmp_attempts"]),
        )
    except PortMapError as exc:
        log.warning("port mapping unavailable (%s)", exc)
        return "unavailable"
    node.port_mappings = mapper.mappings
    node.add_cleanup(mapper.unmap)
    node.spawn(mapper.settle(), name="portmap settle")  # the race's losers, cleaned up
    for m in mapper.mappings:
        log.info("port mapping: %s (lease %s s)", m.describe(), m.lifetime or "permanent")
        if any(ipaddress.ip_address(m.external_ip) in net for net in _BEHIND_ANOTHER_NAT):
            log.warning(
                "port mapping: the router's external address %s is private: another NAT "
                "above it, so the mapping may not reach the internet",
                m.external_ip,
            )
    lease = min((m.lifetime for m in mapper.mappings if m.lifetime), default=0)
    if lease:
        node.spawn(_refresh(node, mapper, lease), name="portmap refresh")
    first = mapper.mappings[0]
    return f"{mapper.method} {first.external_ip}:{first.external_port}"


async def _refresh(node: Node, mapper: PortMapper, lease: int) -> None:
    """Renew at half the lease (RFC 6886 section 3.3 suggests it); retry sooner on failure."""
    delay = max(lease / 2, 1.0)
    while True:
        await asyncio.sleep(delay)
        try:
            mappings = await mapper.refresh()
        except (PortMapError, TimeoutError, OSError) as exc:
            log.warning("port mapping refresh failed (%s); retrying", exc)
            delay = max(delay / 2, 1.0)
            continue
        node.port_mappings = mappings
        lease = min((m.lifetime for m in mappings if m.lifetime), default=lease)
        delay = max(lease / 2, 1.0)


@hookimpl(trylast=True)
async def warpgate_start_background_port_forwarding(node: Node) -> str:
    node.port_mappings = []
    if not node.conf["enable_upnp"]:
        return "disabled"
    _jobs[node] = node.spawn(_timed_map(node), name="portmap")
    return "started"


@hookimpl(trylast=True)
async def warpgate_finalize_port_forwarding(node: Node) -> str:
    result = await _finish_mapping(node)
    # Phase 8 ran before the mapping (and STUN's background NAT tests) finished: encode
    # the address again, once, if they changed what goes into it.
    await refresh_address(node)
    return result


async def _finish_mapping(node: Node) -> str:
    if not node.conf["enable_upnp"]:
        return "disabled"
    job = _jobs.pop(node, None)
    if job is None:
        return "unavailable"
    # map_ports bounds itself by portmap_timeout; a little slack for the UPnP thread.
    bound = float(node.conf["portmap_timeout"]) + 2.0
    try:
        return await node.wait_for_job(job, timeout=bound, what="port mapping")
    except TimeoutError:
        return "unavailable"
