"""The ``direct`` traversal method: dial the peer's listening addresses.

Candidates, cheapest first: loopback when the peer is on this machine (same machine id),
the peer's NIC address when one of our interfaces is on the same subnet, the NIC address
when it is not a LAN-only address (an open NAT or a public host), and the external
address a NAT mapping gave it.  Every link is authenticated: a dial that reaches some
other host fails its handshake.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from warpgate.interfaces import Candidate, Transport
from warpgate.link.tcp import dial_tcp
from warpgate.net.scope import is_lan_only
from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node
    from warpgate.sansio.address import NodeAddress

log = logging.getLogger(__name__)

COST_SAME_MACHINE = 1.0
COST_LAN = 2.0
COST_PUBLIC = 3.0
COST_EXTERNAL = 4.0
_LOOPBACK = {4: "127.0.0.1", 6: "::1"}


class DirectMethod:
    name = "direct"

    def __init__(self, node: Node) -> None:
        self.node = node
        # (peer, transport) -> (the node's interfaces and listeners they were made for,
        # the candidates): matching addresses to subnets is the costly part of a connect
        # to a peer linked before, and interfaces are immutable records.
        self._made: dict[
            tuple[NodeAddress, str], tuple[list[object], list[object], list[Candidate]]
        ] = {}

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        node = self.node
        made = self._made.get((peer, transport))
        if made is not None and made[0] == node.ifs and made[1] == node.listeners:
            return list(made[2])
        found = self._candidates(peer, transport)
        if len(self._made) >= 256:  # many peers: start over rather than grow
            self._made.clear()
        self._made[(peer, transport)] = (list(node.ifs), list(node.listeners), found)
        return list(found)

    def _candidates(self, peer: NodeAddress, transport: Transport) -> list[Candidate]:
        node = self.node
        families = {lst.ip.version for lst in node.listeners} or {4}
        found: dict[tuple[str, int], Candidate] = {}

        def add(ip: str, port: int, local: str | None, cost: float, note: str, fam: int) -> None:
            key = (ip, port)
            if port and (key not in found or found[key].cost > cost):
                found[key] = Candidate(self.name, transport, key, local, cost, note, fam)

        if peer.machine_id == node.machine_id and peer.public_key != node.public_key:
            for iface in peer.interfaces:
                if iface.family in families:
                    add(
                        _LOOPBACK[iface.family],
                        iface.port,
                        None,
                        COST_SAME_MACHINE,
                        "same machine",
                        iface.family,
                    )
        for iface in peer.interfaces:
            if iface.family not in families:
                continue
            for local in node.ifs:
                for net in local.networks:
                    if net.ip.version == iface.family and iface.nic_ip in net.network:
                        add(
                            str(iface.nic_ip),
                            iface.port,
                            str(net.ip),
                            COST_LAN,
                            "same LAN",
                            iface.family,
                        )
            if not is_lan_only(iface.nic_ip):
                add(str(iface.nic_ip), iface.port, None, COST_PUBLIC, "public", iface.family)
            if iface.ext_ip is not None and not is_lan_only(iface.ext_ip):
                add(
                    str(iface.ext_ip),
                    iface.ext_port or iface.port,
                    None,
                    COST_EXTERNAL,
                    "external",
                    iface.family,
                )
        return sorted(found.values(), key=lambda c: c.cost)

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        assert candidate.remote is not None
        if candidate.transport == "udp":
            return await self.node.udp.dial(
                self._listener_for(candidate),
                candidate.remote,
                expected_identity=peer.public_key,
                intent=intent,
                method=self.name,
            )
        local_ip = candidate.local_ip
        if local_ip is not None and ipaddress.ip_address(local_ip).is_link_local:
            local_ip = None  # would need a scope id; let the OS pick the source
        return await dial_tcp(
            self.node.link_identity,
            candidate.remote,
            expected_identity=peer.public_key,
            method=self.name,
            max_message=self.node.conf["max_message_size"],
            local_ip=local_ip,
            intent=intent,
            encrypt=self.node.conf["link_encryption"],
            tickets=self.node.link_tickets,
        )

    def _listener_for(self, candidate: Candidate) -> Listener:
        """The listening socket to send from: the candidate's local address, else one of
        the right family (loopback for a loopback peer)."""
        assert candidate.remote is not None
        remote = ipaddress.ip_address(candidate.remote[0])
        same_family = [lst for lst in self.node.listeners if lst.ip.version == remote.version]
        for lst in same_family:
            if candidate.local_ip is not None and str(lst.ip) == candidate.local_ip:
                return lst
        for lst in same_family:
            if lst.ip.is_loopback == remote.is_loopback:
                return lst
        if not same_family:
            raise ConnectionError(f"no listening socket of the family of {remote}")
        return same_family[0]


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="direct",
            factory=DirectMethod,
            cost=10,
            transports=("tcp", "udp"),
            description="dial the peer's addresses: same machine, same LAN, public, external",
        )
    ]
