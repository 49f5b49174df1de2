"""Which addresses the ``turn`` method works with: what the relay must permit, whether it
can see the peer at all, where the peer may be reached directly (relay-first upgrades),
which listening socket to use, and which addresses in a relay offer we may be sent to.
No I/O."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from warpgate.net.scope import is_lan_only, not_a_target

if TYPE_CHECKING:
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node
    from warpgate.sansio.address import NodeAddress
    from warpgate.sansio.turn_signal import RelayOffer


def permit_ips(peer: NodeAddress) -> list[str]:
    """The IPv4 addresses the peer's datagrams may come from: external addresses when
    known, the interface addresses otherwise (a public host, or a peer on this LAN)."""
    ips: list[str] = []
    for iface in peer.interfaces:
        if iface.family != 4:
            continue
        for ip in (iface.ext_ip, iface.nic_ip):
            if ip is not None and str(ip) not in ips:
                ips.append(str(ip))
    return ips


def direct_candidates(node: Node, peer: NodeAddress) -> list[tuple[str, int]]:
    """Where the peer may be reached directly over UDP, best first: loopback on the same
    machine, its interface address on a shared LAN or when public, its external
    mapping."""
    found: list[tuple[str, int]] = []

    def add(ip: object, port: int) -> None:
        if port and (str(ip), port) not in found:
            found.append((str(ip), port))

    same_machine = peer.machine_id == node.machine_id
    for iface in peer.interfaces:
        if iface.family != 4:
            continue
        if same_machine:
            add("127.0.0.1", iface.port)
        shared = any(iface.nic_ip in net.network for local in node.ifs for net in local.ipv4)
        if shared or not is_lan_only(iface.nic_ip):
            add(iface.nic_ip, iface.port)
        if iface.ext_ip is not None:
            add(iface.ext_ip, iface.ext_port or iface.port)
    return found


def relay_can_see(peer: NodeAddress, server: tuple[str, int]) -> bool:
    """Whether one of the addresses we would permit can be the one the relay sees the
    peer's datagrams come from: an external address (measured by STUN), a public
    interface address, or any address when the relay is itself on a private network.
    Otherwise the peer must say which address the relay sees it at (a relay answer)."""
    if is_lan_only(ipaddress.ip_address(server[0])):
        return bool(permit_ips(peer))
    for iface in peer.interfaces:
        if iface.family == 4 and (iface.ext_ip is not None or not is_lan_only(iface.nic_ip)):
            return True
    return False


def listener_for(node: Node, ip_text: str) -> Listener | None:
    """The listening UDP socket to reach ``ip_text`` from: its family, loopback for a
    loopback address (else a non-loopback one first)."""
    ip = ipaddress.ip_address(ip_text)
    usable = [
        lst
        for lst in node.listeners
        if lst.ip.version == ip.version and lst.udp is not None and not lst.udp.is_closing()
    ]
    usable.sort(key=lambda lst: lst.ip.is_loopback != ip.is_loopback)
    return usable[0] if usable else None


# A TURN server hands out relayed ports from a high range (coturn: 49152-65535 by
# default; 40000-48000 for the loopback coturn of the tests).  On a host that is one of
# our own relays, only such ports are taken on trust: below it live the services (ssh,
# databases, web servers) an offer must not aim us at.
RELAY_PORT_FLOOR = 32768


def offer_refusal(
    offer: RelayOffer, *, own_servers: list[tuple[str, int]], we_are_public: bool
) -> str:
    """Why we must not act on ``offer`` ("" when we may): it names where we will send, the
    relayed address (and, when it wants an answer, the TURN server we ask for our
    address), and anyone with a key can send one.

    On one of our own TURN servers' hosts (a relay on loopback or on the LAN is then ours
    too) the relayed address is fine from :data:`RELAY_PORT_FLOOR` up, and the server to
    ask must be exactly one of ours; any other address must pass
    :func:`~warpgate.net.scope.not_a_target`."""
    ours = {(ip, port) for ip, port in ((_ip(h), p) for h, p in own_servers) if ip is not None}
    our_hosts = {ip for ip, _port in ours}
    named = [(offer.relayed, "relayed")]
    if offer.answer_wanted and offer.server:
        named.append((offer.server, "server"))
    for (host, port), role in named:
        ip = _ip(host)
        if ip is None:
            return f"{host!r} is not an IP address"
        if ip in our_hosts:
            if role == "server" and (ip, port) in ours:
                continue
            if role == "relayed" and port >= RELAY_PORT_FLOOR:
                continue
            return f"{host}:{port} is on our own relay's host but is no relay port"
        if why := not_a_target(ip, we_are_public=we_are_public):
            return why
    return ""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # ::ffff:a.b.c.d is the IPv4 host it maps: judge (and compare) it as that.
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip
