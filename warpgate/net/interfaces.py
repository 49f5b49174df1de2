"""Network interface discovery (via ``netifaces``, from the netifaces-plus package)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from warpgate.errors import ConfigError

log = logging.getLogger(__name__)

IPv4 = socket.AF_INET
IPv6 = socket.AF_INET6
IP4 = IPv4  # spec/nodes.md spells them IP4 / IP6
IP6 = IPv6


@dataclass(frozen=True)
class Interface:
    """One network interface and the addresses warpgate may use on it."""

    name: str
    index: int  # position in discovery order; pairs a NIC's v4 and v6 in addresses
    mac: str | None = None
    ipv4: tuple[ipaddress.IPv4Interface, ...] = ()
    ipv6: tuple[ipaddress.IPv6Interface, ...] = ()
    gateway4: ipaddress.IPv4Address | None = None
    gateway6: ipaddress.IPv6Address | None = None
    is_loopback: bool = False
    scope_id: int = 0  # OS interface index, needed to bind IPv6 link-local addresses
    default: bool = field(default=False)  # holds a default route

    @property
    def networks(self) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]:
        """Every address with its network, IPv4 first (typed as either family, which
        ``(*ipv4, *ipv6)`` is not)."""
        return (*self.ipv4, *self.ipv6)

    @property
    def families(self) -> list[int]:
        return [af for af, addrs in ((IPv4, self.ipv4), (IPv6, self.ipv6)) if addrs]

    def listen_ips(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Addresses to bind: every IPv4 address and every global IPv6 address.

        IPv6 link-local addresses are left out: they need a scope id on every use and
        the global or ULA address reaches the same neighbours.
        """
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [i.ip for i in self.ipv4]
        ips += [i.ip for i in self.ipv6 if not i.ip.is_link_local]
        return ips


def _strip_scope(addr: str) -> str:
    return addr.split("%", 1)[0]


def _v6_prefix(netmask: str | None) -> int:
    if not netmask:
        return 128
    if "/" in netmask:
        return int(netmask.rsplit("/", 1)[1])
    return bin(int(ipaddress.IPv6Address(netmask))).count("1")


# Reading every interface costs a netlink dump per interface (netifaces has no bulk
# call), which dominates a node's start-up; several nodes started in a row (tests, one
# Gate per identity) see the same answer, so it is kept briefly, per network namespace.
DISCOVERY_TTL = 2.0
_discovered: dict[tuple[object, ...], tuple[float, list[Interface]]] = {}


_SO_NETNS_COOKIE = 71  # Linux >= 5.14; not exported by the socket module


def _netns_key() -> object:
    """The current thread's network namespace, so cached answers never cross
    namespaces (the lab runs nodes in several, from one process).

    Linux gives each namespace a cookie that is never reused; the namespace's inode
    number is the fallback, but inodes are recycled when namespaces come and go.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            return probe.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE, 8)
    except OSError:
        pass
    try:
        return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino
    except OSError:
        return None


def discover_interfaces(
    names: Sequence[str] = (), *, include_loopback: bool = False
) -> list[Interface]:
    """Like :func:`read_interfaces`, answered from a cache at most ``DISCOVERY_TTL``
    seconds old."""
    key = (_netns_key(), tuple(names), include_loopback)
    now = time.monotonic()
    hit = _discovered.get(key)
    if hit is not None and now - hit[0] < DISCOVERY_TTL:
        return list(hit[1])
    found = read_interfaces(names, include_loopback=include_loopback)
    if len(_discovered) > 64:
        _discovered.clear()
    _discovered[key] = (now, found)
    return list(found)


def read_interfaces(
    names: Sequence[str] = (), *, include_loopback: bool = False
) -> list[Interface]:
    """The machine's interfaces that carry an IP address.

    ``names`` restricts the result to those interfaces (an unknown name is a
    :class:`ConfigError` listing the real ones).  Without names, loopback is left out
    unless ``include_loopback`` is set or it is all there is.  Interfaces holding a
    default route come first.
    """
    import netifaces  # imported here: reading interfaces is not needed to import warpgate

    available = list(netifaces.interfaces())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(
            f"no network interface named {', '.join(map(repr, unknown))}; "
            f"this machine has: {', '.join(available)}"
        )
    gateways = netifaces.gateways()
    # netifaces types every value as either shape: "default" maps each family to its
    # (gateway, interface); each family maps to a list of (gateway, interface[, default]).
    defaults = gateways.get("default", {})
    gw4 = _gateways_by_interface(gateways.get(netifaces.AF_INET, []))
    gw6 = _gateways_by_interface(gateways.get(netifaces.AF_INET6, []))
    default_ifs = {v[1] for v in defaults.values()} if isinstance(defaults, dict) else set()

    found: list[Interface] = []
    for name in names or available:
        addrs = netifaces.ifaddresses(name)
        v4 = tuple(
            ipaddress.IPv4Interface(f"{a['addr']}/{a.get('netmask') or '255.255.255.255'}")
            for a in addrs.get(netifaces.AF_INET, [])
            if a.get("addr")
        )
        v6 = tuple(
            ipaddress.IPv6Interface(f"{_strip_scope(a['addr'])}/{_v6_prefix(a.get('netmask'))}")
            for a in addrs.get(netifaces.AF_INET6, [])
            if a.get("addr")
        )
        if not v4 and not v6:
            continue
        links = addrs.get(netifaces.AF_LINK, [])
        mac = links[0].get("addr") if links else None
        loopback = all(i.ip.is_loopback for i in v4) and all(i.ip.is_loopback for i in v6)
        try:
            scope = socket.if_nametoindex(name)
        except OSError:
            scope = 0
        found.append(
            Interface(
                name=name,
                index=0,
                mac=mac if mac and mac != "00:00:00:00:00:00" else None,
                ipv4=v4,
                ipv6=v6,
                gateway4=ipaddress.IPv4Address(gw4[name]) if name in gw4 else None,
                gateway6=ipaddress.IPv6Address(_strip_scope(gw6[name])) if name in gw6 else None,
                is_loopback=loopback,
                scope_id=scope,
                default=name in default_ifs,
            )
        )
    if not names and not include_loopback:
        routable = [i for i in found if not i.is_loopback]
        found = routable or found
    found.sort(key=lambda i: (not i.default, i.is_loopback))
    return [_with_index(iface, n) for n, iface in enumerate(found)]


def _gateways_by_interface(
    entries: dict[int, tuple[str, str]] | list[tuple[str, str] | tuple[str, str, bool]],
) -> dict[str, str]:
    """Interface name -> gateway, from one address family's entry of ``gateways()``."""
    if not isinstance(entries, list):
        return {}
    return {entry[1]: entry[0] for entry in entries}


def _with_index(iface: Interface, index: int) -> Interface:
    return replace(iface, index=index)


def restrict_to_ips(ifs: Iterable[Interface], ips: Sequence[str]) -> list[Interface]:
    """Keep only the given addresses (``Node(ip=...)``), dropping interfaces left empty.

    An address that is on no interface is a :class:`ConfigError`.
    """
    try:
        wanted = {ipaddress.ip_address(_strip_scope(ip)) for ip in ips}
    except ValueError as exc:
        raise ConfigError(f"ip: {exc}") from exc
    kept: list[Interface] = []
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for iface in ifs:
        v4 = tuple(i for i in iface.ipv4 if i.ip in wanted)
        v6 = tuple(i for i in iface.ipv6 if i.ip in wanted)
        seen.update(i.ip for i in v4)
        seen.update(i.ip for i in v6)
        if v4 or v6:
            kept.append(replace(iface, ipv4=v4, ipv6=v6))
    missing = wanted - seen
    if missing:
        raise ConfigError(
            f"ip {', '.join(sorted(map(str, missing)))} is not an address of the interfaces "
            f"in use ({', '.join(i.name for i in ifs) or 'none'})"
        )
    return kept


def default_mac(ifs: Iterable[Interface]) -> str | None:
    """The MAC of the first default-route interface (for the machine id)."""
    for iface in ifs:
        if iface.default and iface.mac:
            return iface.mac
    return None
