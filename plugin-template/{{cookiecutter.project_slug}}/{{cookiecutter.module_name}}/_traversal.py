"""The ``{{ cookiecutter.provider_name }}`` traversal method.

{{ cookiecutter.description }}.

A traversal method has two halves (see warpgate's docs/writing-a-plugin.md):

* ``candidates(peer, transport=...)`` lists every attempt it could make, cheapest first,
  with no I/O: the kernel ranks all methods' candidates and races them;
* ``attempt(peer, candidate, intent=...)`` makes one attempt and returns an
  authenticated :class:`~warpgate.Link`, or raises.  The kernel bounds it with a timeout
  and cancels it when another attempt wins, so it must clean up on cancellation.

This skeleton dials the addresses the peer lists (loopback when it runs on this
machine), over TCP or UDP, through warpgate's authenticated link handshake.  Replace
the two methods with your way of reaching a peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from warpgate import TraversalMethodInfo, hookimpl
from warpgate.interfaces import Candidate, Transport
from warpgate.link.link import Link
from warpgate.link.tcp import dial_tcp
from warpgate.sansio.address import NodeAddress

NAME = "{{ cookiecutter.provider_name }}"
DESCRIPTION = "{{ cookiecutter.description }}"
COST_KEY = "{{ cookiecutter.conf_prefix }}_cost_hint"
_LOOPBACK = {4: "127.0.0.1", 6: "::1"}


class Method:
    name = NAME

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cost = float(node.conf[COST_KEY])

    async def start(self) -> None:
        """Called once when the node starts its traversal stack (open sockets here)."""

    async def aclose(self) -> None:
        """Called once when the node closes (close what start() opened)."""

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        families = {lst.ip.version for lst in self.node.listeners}
        found: list[Candidate] = []
        same_machine = peer.machine_id == self.node.machine_id
        for iface in peer.interfaces:
            if iface.family not in families or not iface.port:
                continue
            ip = _LOOPBACK[iface.family] if same_machine else str(iface.nic_ip)
            remote = (ip, iface.port)
            if all(c.remote != remote for c in found):
                found.append(
                    Candidate(NAME, transport, remote, None, self.cost, "listed", iface.family)
                )
        return found

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        assert candidate.remote is not None
        if candidate.transport == "udp":
            remote = ipaddress.ip_address(candidate.remote[0])
            listener = next(
                lst
                for lst in self.node.listeners
                if lst.ip.version == remote.version and lst.ip.is_loopback == remote.is_loopback
            )
            return await self.node.udp.dial(
                listener,
                candidate.remote,
                expected_identity=peer.public_key,  # the handshake proves who answered
                intent=intent,
                method=NAME,
            )
        return await dial_tcp(
            self.node.link_identity,
            candidate.remote,
            expected_identity=peer.public_key,
            method=NAME,
            max_message=self.node.conf["max_message_size"],
            intent=intent,
            encrypt=self.node.conf["link_encryption"],
        )


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name=NAME,
            factory=Method,
            cost=50,  # orders methods when conf does not: direct is 10, reverse 20
            transports=("tcp", "udp"),
            description=DESCRIPTION,
        )
    ]


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    # Every conf key the plugin reads, with its default (unknown keys are warned about).
    return {COST_KEY: 6.0}  # candidate cost: direct's are 1-4, reverse's 5
