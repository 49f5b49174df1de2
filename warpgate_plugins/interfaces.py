"""Phase 1, ``load_network_interfaces``: find the NICs and addresses to use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from warpgate.errors import PhaseError
from warpgate.net.interfaces import discover_interfaces, restrict_to_ips
from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node


@hookimpl(trylast=True)
async def warpgate_load_network_interfaces(node: Node) -> str:
    if not node.ifs:
        # Loopback only counts when the user pinned an address (ip="127.0.0.1").
        node.ifs = discover_interfaces(node.ifs_wanted, include_loopback=bool(node.ip_wanted))
    if node.ip_wanted:
        node.ifs = restrict_to_ips(node.ifs, node.ip_wanted)
    if not node.ifs:
        raise PhaseError(
            "no network interface with an IP address was found", phase="load_network_interfaces"
        )
    return ", ".join(i.name for i in node.ifs)
