"""Which addresses only make sense on a local network, and which ones a peer may make us
send to.

``ipaddress``'s ``is_private`` also covers the documentation ranges
(198.51.100.0/24, 203.0.113.0/24, ...) that labs and examples use as public addresses,
so warpgate keeps its own, narrower list: an address is *LAN-only* when it is in a
range that is never routed across the internet and is reused by many networks.
"""

from __future__ import annotations

import ipaddress

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_LAN_ONLY = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
]


def is_lan_only(ip: IP) -> bool:
    """True when ``ip`` is only reachable from its own network (RFC 1918, CGNAT,
    link-local, unique-local, loopback)."""
    return any(ip.version == net.version and ip in net for net in _LAN_ONLY)


def not_a_target(ip: IP, *, we_are_public: bool) -> str:
    """Why ``ip``, an address a peer asks us to send to, is no place to send to ("" when
    it is fine).

    Loopback, unspecified, multicast, link-local and reserved addresses never are.  A
    private (or shared, CGNAT) address is one only when we are not on the public internet
    either (``we_are_public``): both peers then sit in the same private realm.  Otherwise
    anyone could aim us at our own machine or LAN."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d reaches the IPv4 host a.b.c.d
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return f"{ip} is not an address a peer can have"
    if ip.is_reserved:
        return f"{ip} is a reserved address"
    if not ip.is_global and we_are_public:
        return f"{ip} is private while we are on the public internet"
    return ""


def client_key(ip: str) -> str:
    """What per-client quotas and rate limits count by: the IPv4 address, or the IPv6
    /64 (one host gets a whole /64, so counting its addresses one by one caps nothing)."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)
