"""Which hole-punching strategy a pair of NATs allows, and where to aim (no I/O).

Both sides compute the same plan from the two endpoint lists exchanged in the offer and
the answer, so no extra message is needed to agree on roles.

UDP (RFC 4787 terms):

* both mappings endpoint-independent (open, full cone, restricted, port-restricted, or
  unknown, which is worth a try) → **probe**: each side sends to the other's mapped
  endpoint; each learns the other's real endpoint from the first probe that arrives.
* one side symmetric and the other open, full cone or address-restricted → **probe**
  too: the symmetric side's probes reach the other (its filter lets them in, or the
  other's probes towards that address opened it), which answers to their source.
* symmetric ↔ port-restricted → **birthday**: the symmetric ("hard") side opens many
  sockets, each getting its own random external port, all sending to the easy side;
  the easy side sends to random ports of the hard side's address.  Each easy probe
  matches one of ``n`` open mappings with probability ``n / 64512``.
* symmetric ↔ symmetric, or UDP blocked → **impossible**: fail at once (a relay can).

TCP (simultaneous open from the listening port): both mappings must be predictable
(endpoint-independent, or a sequential allocator with a known delta); symmetric with a
random allocator cannot be aimed at.  The lab's cone modes are UDP-only constructions,
so TCP through them filters like port-restricted, which simultaneous open handles.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from warpgate.net.scope import is_lan_only
from warpgate.sansio.address import NatType, NodeAddress, PortAllocation
from warpgate.sansio.punch_messages import Endpoint, PunchTransport

#: Ports a fully random allocator picks from (Linux: 1024-65535 for unprivileged ports).
RANDOM_PORT_RANGE = (1024, 65535)
#: How many consecutive ports to aim at behind a sequential allocator.
SEQUENTIAL_GUESSES = 4

_EIM = frozenset(
    {
        NatType.OPEN,
        NatType.FULL_CONE,
        NatType.RESTRICTED,
        NatType.PORT_RESTRICTED,
        NatType.UDP_FIREWALL,
        NatType.UNKNOWN,
    }
)
# Endpoint-independent mapping whose filter lets in a new port of an address it sent to.
_LENIENT = frozenset({NatType.OPEN, NatType.FULL_CONE, NatType.RESTRICTED})


class Strategy(enum.Enum):
    PROBE = "probe"
    BIRTHDAY_HARD = "birthday-hard"  # this side opens many sockets
    BIRTHDAY_EASY = "birthday-easy"  # this side sprays random ports
    SIMULTANEOUS_OPEN = "simultaneous-open"
    IMPOSSIBLE = "impossible"


@dataclass(frozen=True)
class Plan:
    strategy: Strategy
    targets: tuple[tuple[str, int], ...] = ()
    """Where to send first (the peer's predicted endpoints), best first."""
    peer_ip: str = ""
    why: str = ""


def endpoints_of(address: NodeAddress, *, family: int = 4) -> list[Endpoint]:
    """A node's mapped endpoints from its address: interfaces whose external address
    is known and routable (the NAT classification or a port mapping filled them in)."""
    found: list[Endpoint] = []
    for iface in address.interfaces:
        if iface.family != family or iface.ext_ip is None or is_lan_only(iface.ext_ip):
            continue
        ep = Endpoint(
            iface.ext_ip,
            iface.ext_port,
            iface.port,
            iface.nat_type,
            iface.port_allocation,
            iface.port_delta,
        )
        if ep not in found:
            found.append(ep)
    return found


def predicted_ports(ep: Endpoint, transport: PunchTransport) -> list[int]:
    """The external ports ``ep``'s NAT will most likely use towards a new peer."""
    if transport == PunchTransport.TCP:
        # STUN measured the UDP mapping; a TCP mapping of the same local port keeps the
        # port on port-preserving NATs, so the listen port is the first guess.
        base = ep.local_port if ep.allocation != PortAllocation.SEQUENTIAL else ep.port
    else:
        base = ep.port
    ports = [base]
    if ep.allocation == PortAllocation.SEQUENTIAL and ep.delta:
        ports += [base + k * ep.delta for k in range(1, SEQUENTIAL_GUESSES)]
    return [p for p in dict.fromkeys(ports) if 0 < p <= 0xFFFF]


def _predictable(ep: Endpoint, transport: PunchTransport) -> bool:
    if ep.nat_type == NatType.SYMMETRIC:
        return ep.allocation in (PortAllocation.SEQUENTIAL, PortAllocation.PRESERVING)
    if transport == PunchTransport.UDP:
        return ep.nat_type in _EIM
    return ep.nat_type in _EIM or ep.nat_type == NatType.UDP_BLOCKED


def _best(endpoints: Sequence[Endpoint]) -> Endpoint | None:
    # Prefer the endpoint whose NAT is easiest to punch.
    order = {
        NatType.OPEN: 0,
        NatType.FULL_CONE: 1,
        NatType.RESTRICTED: 2,
        NatType.PORT_RESTRICTED: 3,
        NatType.UDP_FIREWALL: 4,
        NatType.UNKNOWN: 5,
        NatType.UDP_BLOCKED: 6,
        NatType.SYMMETRIC: 7,
    }
    return min(endpoints, key=lambda e: order[e.nat_type], default=None)


def plan(own: Iterable[Endpoint], peer: Iterable[Endpoint], transport: PunchTransport) -> Plan:
    """The strategy for this side, given both sides' endpoints (symmetric in roles: the
    two sides get complementary plans)."""
    me, them = _best(list(own)), _best(list(peer))
    if them is None:
        return Plan(Strategy.IMPOSSIBLE, why="the peer knows no external endpoint of its own")
    if me is None:
        return Plan(Strategy.IMPOSSIBLE, why="this node knows no external endpoint of its own")
    targets = tuple((str(them.ext_ip), p) for p in predicted_ports(them, transport))
    peer_ip = str(them.ext_ip)
    if transport == PunchTransport.TCP:
        if _predictable(me, transport) and _predictable(them, transport):
            return Plan(Strategy.SIMULTANEOUS_OPEN, targets, peer_ip)
        return Plan(
            Strategy.IMPOSSIBLE,
            why=f"TCP cannot be aimed at a {_name(me)} / {_name(them)} pair (random ports)",
        )
    if NatType.UDP_BLOCKED in (me.nat_type, them.nat_type):
        return Plan(Strategy.IMPOSSIBLE, why="UDP is blocked on one side")
    mine, theirs = _predictable(me, transport), _predictable(them, transport)
    if mine and theirs:
        return Plan(Strategy.PROBE, targets, peer_ip)
    if not mine and not theirs:
        return Plan(Strategy.IMPOSSIBLE, why="both sides are behind symmetric NATs")
    easy = me if mine else them
    if easy.nat_type in _LENIENT:
        return Plan(Strategy.PROBE, targets, peer_ip)
    # One side symmetric, the other port-restricted (or unknown): birthday probing.
    return Plan(Strategy.BIRTHDAY_HARD if not mine else Strategy.BIRTHDAY_EASY, targets, peer_ip)


def direct_hopeless(peer_nat: NatType, transport: str) -> bool:
    """Whether dialling a peer's external address cannot get through its NAT without
    a port mapping: its filter drops unsolicited inbound traffic."""
    if peer_nat in (NatType.OPEN, NatType.UNKNOWN):
        return False
    if transport == "udp":
        return peer_nat != NatType.FULL_CONE
    return True  # TCP through a NAT needs a port forward, whatever the UDP behaviour


def _name(ep: Endpoint) -> str:
    return ep.nat_type.name.lower().replace("_", "-")
