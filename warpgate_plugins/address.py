"""Phase 8, ``build_node_address``: identity + interfaces -> ``node.addr_bytes``.

What STUN learns about the NAT (``node.nat_reports``) and the router's port mappings
(``node.port_mappings``) go into the address too, but both are measured in the
background while start-up goes on (see :mod:`warpgate_plugins.stun` and
:mod:`warpgate_plugins.upnp`); phase 12 waits for them and calls
:func:`refresh_address` once, which runs this phase's hook again only if they changed
what goes into the address.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.portmap import port_mappings
from warpgate.sansio.address import MAX_INTERFACES, InterfaceAddress, NodeAddress

if TYPE_CHECKING:
    from warpgate.node.node import Node
    from warpgate.stun.nat import NatReport

log = logging.getLogger(__name__)


def _nat_fields(node: Node, ip: object) -> dict[str, Any]:
    """What STUN learnt about the NAT in front of ``ip`` (see warpgate_plugins.stun)."""
    report: NatReport | None = node.nat_reports.get(str(ip))
    if report is None:
        return {}
    fields: dict[str, Any] = {
        "nat_type": report.nat_type,
        "port_allocation": report.port_allocation,
        "port_delta": report.port_delta,
    }
    if report.ext_ip is not None and ":" not in report.ext_ip:
        fields["ext_ip"] = report.ext_ip
        fields["ext_port"] = report.ext_port
    return fields


def _mapped_fields(node: Node, ip: object) -> dict[str, Any]:
    """A port mapping on the router (UPnP / NAT-PMP / PCP) for ``ip``: the external
    address peers can dial, which beats what STUN saw."""
    for mapping in port_mappings(node):
        if mapping.internal_ip == str(ip) and mapping.protocol == "udp":
            return {"ext_ip": mapping.external_ip, "ext_port": mapping.external_port}
    return {}


def interface_addresses(node: Node) -> list[InterfaceAddress]:
    """One entry per bound non-loopback address (loopback only when that is all), with
    the NAT facts STUN measured for it."""
    bound = {listener.ip for listener in node.listeners}
    entries: list[InterfaceAddress] = []
    for iface in node.ifs:
        for net in iface.networks:
            if net.ip not in bound:
                continue
            entries.append(
                InterfaceAddress(
                    nic_ip=net.ip,
                    port=node.listen_port,
                    prefix_len=net.network.prefixlen,
                    if_index=min(iface.index, 255),
                    **{**_nat_fields(node, net.ip), **_mapped_fields(node, net.ip)},
                )
            )
    if not entries:  # a loopback-only node still needs a reachable address
        entries = [
            InterfaceAddress(
                nic_ip=lst.ip,
                port=lst.port,
                prefix_len=lst.ip.max_prefixlen,
                **_nat_fields(node, lst.ip),
            )
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


def encode_address(node: Node) -> bytes:
    """The built-in encoding of the node's address as it stands now."""
    return NodeAddress(
        public_key=node.public_key,
        machine_id=node.machine_id,
        interfaces=tuple(interface_addresses(node)),
        hints=tuple(node.address_hints),
    ).encode()


async def refresh_address(node: Node) -> bool:
    """Run the ``warpgate_build_node_address`` hook again if STUN reports or port
    mappings that arrived after phase 8 change what goes into the address.

    Called once at the end of phase 12; returns whether the hook ran.
    """
    if not node.nat_reports and not port_mappings(node):
        return False
    if node.addr_bytes and encode_address(node) == node.addr_bytes:
        return False
    await node.plugins.acall(
        "warpgate_build_node_address", timeout=node.conf["plugin_timeout"], node=node
    )
    return True


@hookimpl(trylast=True)
async def warpgate_build_node_address(node: Node) -> str:
    node.addr_bytes = encode_address(node)
    return f"{len(node.addr_bytes)} bytes"
