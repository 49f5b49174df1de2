"""Phase 8, ``build_node_address``: identity + interfaces -> ``node.addr_bytes``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl
from warpgate.sansio.address import MAX_INTERFACES, InterfaceAddress, NodeAddress

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


def interface_addresses(node: Node) -> list[InterfaceAddress]:
    """One entry per bound non-loopback address (loopback only when that is all)."""
    bound = {listener.ip for listener in node.listeners}
    entries: list[InterfaceAddress] = []
    for iface in node.ifs:
        for net in (*iface.ipv4, *iface.ipv6):
            if net.ip not in bound:
                continue
            entries.append(
                InterfaceAddress(
                    nic_ip=net.ip,
                    port=node.listen_port,
                    prefix_len=net.network.prefixlen,
                    if_index=min(iface.index, 255),
                )
            )
    if not entries:  # a loopback-only node still needs a reachable address
        entries = [
            InterfaceAddress(nic_ip=lst.ip, port=lst.port, prefix_len=lst.ip.max_prefixlen)
            for lst in node.listeners
        ]
    if len(entries) > MAX_INTERFACES:
        log.warning(
            "the node has %d addresses; only the first %d go into its address",
            len(entries),
            MAX_INTERFACES,
        )
        entries = entries[:MAX_INTERFACES]
    return entries


@hookimpl(trylast=True)
async def warpgate_build_node_address(node: Node) -> str:
    addr = NodeAddress(
        public_key=node.public_key,
        machine_id=node.machine_id,
        interfaces=tuple(interface_addresses(node)),
        hints=tuple(node.address_hints),
    )
    node.addr_bytes = addr.encode()
    return f"{len(node.addr_bytes)} bytes"
