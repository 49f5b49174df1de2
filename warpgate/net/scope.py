"""Which addresses only make sense on a local network.

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
