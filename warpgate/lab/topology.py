"""Topologies as data: which routers (with which NAT mode) and hosts a lab has.

A :class:`Topology` says *what* to build; :func:`plan` turns it into addresses, links
and routes (pure computation, testable anywhere); :mod:`warpgate.lab.lab` builds it.

Address plan (all fake, RFC 5737 and RFC 6598 ranges, private ranges only inside lab
namespaces):

* ``inet`` (the fake internet) carries the server addresses on its loopback:
  198.51.100.1 (mosquitto, coturn, chrony), 198.51.100.2 (coturn's second address for
  RFC 5780) and 198.51.100.10-12 (the NAT probe's responders).
* Every router or public host attached to ``inet`` gets a /30 out of 198.51.100.128/25.
* A router's LAN is a bridge: 203.0.113.16k/28 (routed, for ``open``), 100.64.k.0/24
  when other routers sit behind it (a CGNAT layer), 10.k.0.0/24 otherwise.
* ``inet``'s default route leads to a ``void`` namespace that silently drops everything,
  as the real internet would (coturn misbehaves when a relay target is unroutable).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from warpgate.errors import ConfigError

SERVER_ADDRESS = "198.51.100.1"
SERVER_ADDRESS_ALT = "198.51.100.2"
PROBE_ADDRESSES = ("198.51.100.10", "198.51.100.11", "198.51.100.12")
VOID_LINK = ("198.51.100.253", "198.51.100.254")
_LINK_POOL_START = 128
_MAX_INET_LINKS = 31  # 198.51.100.128/25 minus the void link's /30


class NatMode(StrEnum):
    """NAT behaviours a lab router can have (RFC 4787 names in :data:`RFC4787`)."""

    OPEN = "open"
    FULL_CONE = "full-cone"
    ADDRESS_RESTRICTED = "address-restricted"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"


#: mode → (mapping, filtering) as RFC 4787 names it; what the probe must observe.
RFC4787: Mapping[NatMode, tuple[str, str]] = {
    NatMode.OPEN: ("none", "none"),
    NatMode.FULL_CONE: ("EIM", "EIF"),
    NatMode.ADDRESS_RESTRICTED: ("EIM", "ADF"),
    NatMode.PORT_RESTRICTED: ("EIM", "APDF"),
    NatMode.SYMMETRIC: ("APDM", "APDF"),
    NatMode.UDP_BLOCKED: ("blocked", "blocked"),
}

_MAPPING_RANK = {"none": 0, "EIM": 1, "ADM": 2, "APDM": 3, "blocked": 4}
_FILTERING_RANK = {"none": 0, "EIF": 1, "ADF": 2, "APDF": 3, "blocked": 4}


def expected_behaviour(modes: list[NatMode]) -> tuple[str, str]:
    """What a host behind the chain of NATs ``modes`` sees: the stricter layer wins."""
    if not modes:
        return ("none", "none")
    mapping = max((RFC4787[m][0] for m in modes), key=_MAPPING_RANK.__getitem__)
    filtering = max((RFC4787[m][1] for m in modes), key=_FILTERING_RANK.__getitem__)
    if mapping != "none" and filtering == "none":
        filtering = "EIF"  # a NAT in the chain makes "no filtering" endpoint independent
    return (mapping, filtering)


def parse_mode(text: str) -> NatMode:
    """``"port-restricted"``, ``"port_restricted"`` or ``"PORT_RESTRICTED"`` → NatMode."""
    norm = text.strip().lower().replace("_", "-")
    aliases = {"full": "full-cone", "restricted": "address-restricted", "blocked": "udp-blocked"}
    try:
        return NatMode(aliases.get(norm, norm))
    except ValueError:
        choices = ", ".join(m.value for m in NatMode)
        raise ConfigError(f"unknown NAT mode {text!r} (choose from {choices})") from None


@dataclass(frozen=True)
class Router:
    """A NAT router.  ``parent`` is the router it sits behind (None: on the internet)."""

    name: str
    mode: NatMode = NatMode.PORT_RESTRICTED
    parent: str | None = None
    #: Fraction (0..1) of packets dropped each way on this router's WAN link.
    loss: float = 0.0
    #: Run miniupnpd on this router, serving UPnP IGD to its LAN.
    upnp: bool = False
    #: Added one-way latency (each way) on the WAN link, in ms, and its ± jitter.
    #: Needs the router to sit directly on the internet (the shim runs in ``inet``).
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    #: Loop LAN traffic sent to an external endpoint of this router back to the LAN
    #: (only full-cone, address-restricted and port-restricted can hairpin).
    hairpin: bool = False
    #: Answer unsolicited inbound TCP with a reset (a bare Linux masquerade box) instead
    #: of dropping it (most home routers); see warpgate.lab.nat.
    tcp_reset: bool = False


@dataclass(frozen=True)
class Host:
    """An end host: behind ``router``, or directly on the internet when it is None."""

    name: str
    router: str | None = None


@dataclass(frozen=True)
class Topology:
    """What a lab contains.  Names are short identifiers (letters, digits, ``_``)."""

    routers: tuple[Router, ...] = ()
    hosts: tuple[Host, ...] = ()
    #: Servers started in ``inet``: any of "mqtt", "stun" (coturn), "ntp".
    servers: frozenset[str] = frozenset({"mqtt", "stun", "ntp"})

    def router(self, name: str) -> Router:
        for r in self.routers:
            if r.name == name:
                return r
        raise ConfigError(f"no router named {name!r} in this topology")

    def with_modes(self, modes: Mapping[str, NatMode | str]) -> Topology:
        """A copy with some routers' NAT modes replaced (``{"nat_a": "symmetric"}``)."""
        known = {r.name for r in self.routers}
        for name in modes:
            if name not in known:
                raise ConfigError(f"no router named {name!r} (routers: {sorted(known)})")
        return self._changed(
            modes, lambda r: dataclasses.replace(r, mode=parse_mode(str(modes[r.name])))
        )

    def with_loss(self, losses: Mapping[str, float]) -> Topology:
        """A copy with per-router WAN loss fractions replaced."""
        return self._changed(losses, lambda r: dataclasses.replace(r, loss=float(losses[r.name])))

    def with_hairpin(self, routers: Iterable[str]) -> Topology:
        """A copy with hairpinning switched on for ``routers``."""
        return self._changed(routers, lambda r: dataclasses.replace(r, hairpin=True))

    def with_tcp_reset(self, routers: Iterable[str]) -> Topology:
        """A copy whose ``routers`` answer unsolicited inbound TCP with a reset."""
        return self._changed(routers, lambda r: dataclasses.replace(r, tcp_reset=True))

    def _changed(self, names: Iterable[str], change: Callable[[Router], Router]) -> Topology:
        """A copy with ``change`` applied to the routers named (each must exist)."""
        wanted = set(names)
        for name in wanted:
            self.router(name)
        routers = tuple(change(r) if r.name in wanted else r for r in self.routers)
        return dataclasses.replace(self, routers=routers)

    def with_delay(self, delays: Mapping[str, tuple[float, float]]) -> Topology:
        """A copy with per-router WAN ``(delay_ms, jitter_ms)`` replaced."""
        return self._changed(
            delays,
            lambda r: dataclasses.replace(
                r, delay_ms=delays[r.name][0], jitter_ms=delays[r.name][1]
            ),
        )

    def lan_neighbour(self, host: str) -> str | None:
        """Another host on the same LAN as ``host`` (behind the same router), if any."""
        router = next((h.router for h in self.hosts if h.name == host), None)
        if router is None:
            return None
        return next((h.name for h in self.hosts if h.router == router and h.name != host), None)

    def expected_hairpin(self, host: str) -> bool | None:
        """Whether ``host``'s LAN neighbour reaches it via its external address, when
        predictable: behind exactly one NAT, that router's ``hairpin``; None otherwise
        (no neighbour, no NAT, UDP blocked, or NATs stacked)."""
        if self.lan_neighbour(host) is None:
            return None
        by_name = {r.name: r for r in self.routers}
        current = next((h.router for h in self.hosts if h.name == host), None)
        nats: list[Router] = []
        for _ in range(len(self.routers) + 1):
            if current is None:
                break
            router = by_name[current]
            if router.mode is NatMode.UDP_BLOCKED:
                return None
            if router.mode is not NatMode.OPEN:
                nats.append(router)
            current = router.parent
        return nats[0].hairpin if len(nats) == 1 else None

    def nat_chain(self, host: str) -> list[NatMode]:
        """The NAT modes between ``host`` and the internet, innermost first."""
        by_name = {r.name: r for r in self.routers}
        chain: list[NatMode] = []
        current = next((h.router for h in self.hosts if h.name == host), None)
        for _ in range(len(self.routers) + 1):  # bounded walk up the tree
            if current is None:
                return chain
            chain.append(by_name[current].mode)
            current = by_name[current].parent
        raise ConfigError("router parents form a cycle")


def two_nat(
    nat_a: NatMode | str = NatMode.PORT_RESTRICTED,
    nat_b: NatMode | str = NatMode.PORT_RESTRICTED,
    *,
    upnp: bool = True,
) -> Topology:
    """Hosts ``a`` and ``b`` each behind their own NAT, plus the public host ``pub``."""
    return Topology(
        routers=(
            Router("nat_a", parse_mode(str(nat_a)), upnp=upnp),
            Router("nat_b", parse_mode(str(nat_b))),
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b"), Host("pub")),
    )


def cgnat(
    cgn: NatMode | str = NatMode.PORT_RESTRICTED,
    home_a: NatMode | str = NatMode.PORT_RESTRICTED,
    home_b: NatMode | str = NatMode.PORT_RESTRICTED,
) -> Topology:
    """Two home NATs behind one carrier-grade NAT (100.64.0.0/10), plus ``pub``."""
    return Topology(
        routers=(
            Router("cgn", parse_mode(str(cgn))),
            Router("home_a", parse_mode(str(home_a)), parent="cgn"),
            Router("home_b", parse_mode(str(home_b)), parent="cgn"),
        ),
        hosts=(Host("a", "home_a"), Host("b", "home_b"), Host("pub")),
    )


def same_lan(nat: NatMode | str = NatMode.PORT_RESTRICTED, *, hairpin: bool = False) -> Topology:
    """Hosts ``a`` and ``b`` on one LAN behind one NAT, plus ``pub``."""
    return Topology(
        routers=(Router("nat_a", parse_mode(str(nat)), hairpin=hairpin),),
        hosts=(Host("a", "nat_a"), Host("b", "nat_a"), Host("pub")),
    )


def single(mode: NatMode | str = NatMode.PORT_RESTRICTED) -> Topology:
    """One host ``a`` behind one NAT ``nat_a`` and nothing else but the servers."""
    return Topology(routers=(Router("nat_a", parse_mode(str(mode))),), hosts=(Host("a", "nat_a"),))


#: Named topologies for ``warpgate lab up NAME``: each callable gives the default modes.
PRESETS: dict[str, Callable[[], Topology]] = {
    "two-nat": two_nat,
    "cgnat": cgnat,
    "same-lan": same_lan,
    "single": single,
}


def preset(name: str) -> Topology:
    """The named preset topology with its default modes."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown topology {name!r} (choose from {sorted(PRESETS)})") from None


# --------------------------------------------------------------------------- planning


@dataclass
class Link:
    """A veth pair: ``up_ns``/``up_if`` on the parent side, ``down_*`` on the child."""

    up_ns: str
    up_if: str
    down_ns: str
    down_if: str


@dataclass
class NodePlan:
    """Everything one namespace gets."""

    name: str  # logical name ("inet", "nat_a", "a")
    kind: str  # "inet", "void", "router", "host"
    netns: str
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (ifname, cidr)
    routes: list[str] = field(default_factory=list)  # "ip route add" arguments
    bridge: bool = False
    forward: bool = False
    address: str = ""  # the node's main address (LAN side for routers: see wan_address)
    wan_address: str = ""
    lan_cidr: str = ""
    mode: NatMode | None = None


@dataclass
class Plan:
    prefix: str
    topology: Topology
    nodes: dict[str, NodePlan]
    links: list[Link]

    def netns(self, name: str) -> str:
        try:
            return self.nodes[name].netns
        except KeyError:
            raise ConfigError(f"no host or router named {name!r} in this lab") from None


def _check_names(topo: Topology) -> None:
    seen: set[str] = {"inet", "void"}
    for name in [r.name for r in topo.routers] + [h.name for h in topo.hosts]:
        if not name.replace("_", "").isalnum() or not name.isascii() or len(name) > 20:
            raise ConfigError(f"bad node name {name!r}: use up to 20 letters, digits, _")
        if name in seen:
            raise ConfigError(f"node name {name!r} is used twice (or is reserved)")
        seen.add(name)
    routers = {r.name for r in topo.routers}
    for r in topo.routers:
        if r.parent is not None and r.parent not in routers:
            raise ConfigError(f"router {r.name!r}: unknown parent {r.parent!r}")
        if not 0.0 <= r.loss < 1.0:
            raise ConfigError(f"router {r.name!r}: loss must be in [0, 1)")
        if r.delay_ms < 0 or r.jitter_ms < 0 or r.jitter_ms > r.delay_ms:
            raise ConfigError(f"router {r.name!r}: need 0 <= jitter_ms <= delay_ms")
        if r.hairpin and r.mode not in (
            NatMode.FULL_CONE,
            NatMode.ADDRESS_RESTRICTED,
            NatMode.PORT_RESTRICTED,
        ):
            raise ConfigError(f"router {r.name!r}: {r.mode.value} cannot hairpin in the lab")
        if r.delay_ms and r.parent is not None:
            raise ConfigError(f"router {r.name!r}: delay only on routers on the internet")
    for h in topo.hosts:
        if h.router is not None and h.router not in routers:
            raise ConfigError(f"host {h.name!r}: unknown router {h.router!r}")


def plan(topo: Topology, prefix: str) -> Plan:
    """Compute every namespace, link, address and route of ``topo``."""
    _check_names(topo)
    if len(topo.routers) > 15:
        raise ConfigError("at most 15 routers per lab")
    nodes: dict[str, NodePlan] = {}
    links: list[Link] = []

    def ns(name: str) -> str:
        return f"{prefix}-{name}"

    inet = NodePlan("inet", "inet", ns("inet"), forward=True, address=SERVER_ADDRESS)
    for addr in (SERVER_ADDRESS, SERVER_ADDRESS_ALT, *PROBE_ADDRESSES):
        inet.addresses.append(("lo", f"{addr}/32"))
    nodes["inet"] = inet
    void = NodePlan("void", "void", ns("void"), address=VOID_LINK[1])
    void.addresses.append(("eth0", f"{VOID_LINK[1]}/30"))
    nodes["void"] = void
    links.append(Link(inet.netns, "void", void.netns, "eth0"))
    inet.addresses.append(("void", f"{VOID_LINK[0]}/30"))
    inet.routes.append(f"default via {VOID_LINK[1]}")

    has_children = {r.parent for r in topo.routers if r.parent is not None}
    next_link = 0
    lan_next: dict[str, int] = {}  # router → next free host number on its LAN
    lan_nets: dict[str, ipaddress.IPv4Network] = {}

    for k, r in enumerate(topo.routers, start=1):
        if r.mode is NatMode.OPEN:
            net = ipaddress.IPv4Network(f"203.0.113.{16 * k}/28")
        elif r.name in has_children:
            net = ipaddress.IPv4Network(f"100.64.{k}.0/24")
        else:
            net = ipaddress.IPv4Network(f"10.{k}.0.0/24")
        lan_nets[r.name] = net
        lan_next[r.name] = 2

    def attach(child: NodePlan, parent: str | None, child_if: str) -> None:
        """Give ``child`` an uplink to ``parent`` (inet when None); returns nothing."""
        nonlocal next_link
        if parent is None:
            if next_link >= _MAX_INET_LINKS:
                raise ConfigError("too many nodes attached to the internet")
            base = _LINK_POOL_START + 4 * next_link
            up_if = f"l{next_link}"
            next_link += 1
            links.append(Link(inet.netns, up_if, child.netns, child_if))
            inet.addresses.append((up_if, f"198.51.100.{base + 1}/30"))
            child.addresses.append((child_if, f"198.51.100.{base + 2}/30"))
            child.routes.append(f"default via 198.51.100.{base + 1}")
            addr = f"198.51.100.{base + 2}"
        else:
            net = lan_nets[parent]
            n = lan_next[parent]
            if n >= net.num_addresses - 1:
                raise ConfigError(f"LAN of {parent!r} is full")
            lan_next[parent] = n + 1
            up_if = f"p{n}"
            links.append(Link(nodes[parent].netns, up_if, child.netns, child_if))
            addr = str(net.network_address + n)
            child.addresses.append((child_if, f"{addr}/{net.prefixlen}"))
            child.routes.append(f"default via {net.network_address + 1}")
        if child.kind == "router":
            child.wan_address = addr
        else:
            child.address = addr

    # Parents before children so a parent's LAN exists when a child attaches to it.
    ordered: list[Router] = []
    pending = list(topo.routers)
    for _ in range(len(topo.routers) + 1):
        placed = {r.name for r in ordered}
        ready = [r for r in pending if r.parent is None or r.parent in placed]
        ordered += ready
        pending = [r for r in pending if r not in ready]
        if not pending:
            break
    if pending:
        raise ConfigError("router parents form a cycle")

    for r in ordered:
        net = lan_nets[r.name]
        node = NodePlan(
            r.name,
            "router",
            ns(r.name),
            bridge=True,
            forward=True,
            mode=r.mode,
            lan_cidr=str(net),
            address=str(net.network_address + 1),
        )
        node.addresses.append(("lan", f"{net.network_address + 1}/{net.prefixlen}"))
        nodes[r.name] = node
        attach(node, r.parent, "wan")
        if r.mode is NatMode.OPEN:
            # A routed public LAN: every router above must know the way to it, up to
            # the internet or the first NAT (beyond which it is hidden anyway).
            via, up = node.wan_address, r.parent
            for _ in range(len(topo.routers) + 1):
                if up is None:
                    inet.routes.append(f"{net} via {via}")
                    break
                nodes[up].routes.append(f"{net} via {via}")
                parent = topo.router(up)
                if parent.mode is not NatMode.OPEN:
                    break
                via, up = nodes[up].wan_address, parent.parent

    for h in topo.hosts:
        node = NodePlan(h.name, "host", ns(h.name))
        nodes[h.name] = node
        attach(node, h.router, "eth0")

    return Plan(prefix=prefix, topology=topo, nodes=nodes, links=links)
