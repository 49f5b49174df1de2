"""nftables rulesets that give a lab router its RFC 4787 behaviour.

How each mode is built (verified on Debian 12's kernel, see docs/lab.md):

* ``open``: plain routing of a public /28, no rules.
* ``port-restricted`` (EIM/APDF): ``masquerade``.  Linux keeps the source port when it
  is free, so one inner socket gets one external port whatever it talks to (EIM), and
  conntrack only lets in replies from the exact address and port contacted (APDF).
* ``symmetric`` (APDM/APDF): ``masquerade fully-random``: a fresh random port per flow.
* ``full-cone`` (EIM/EIF): masquerade, plus a dynamic map {external port → inner
  address . port} refreshed by every outbound UDP packet; unsolicited inbound UDP to a
  mapped port is DNATed through it.  Mainline has no FULLCONENAT target; this covers
  UDP only (TCP stays APDF).
* ``address-restricted`` (EIM/ADF): as full cone, but inbound is only DNATed when its
  source address is in a dynamic set {remote address . external port} of addresses the
  mapping has sent to.
* ``udp-blocked``: masquerade for TCP, forwarded UDP dropped both ways.

Hairpinning is off by default (a packet from the LAN to the router's own external
address goes nowhere); ``hairpin_address`` switches it on for the EIM modes.

Unsolicited inbound TCP (a SYN no mapping claims) is dropped silently, as most
consumer routers' firewalls do ("stealth" WAN).  ``tcp_reset=True`` keeps what a bare
Linux masquerade box does instead: its own stack answers with a reset.  That variant
defeats TCP simultaneous open unless both SYNs cross the WAN within one one-way delay
of each other: the reset tears down the sender's NAT entry, and the entry the
refused SYN left behind (closing, 10 s) takes the 4-tuple, so the router's next
outbound SYN of that flow gets another external port (measured: docs/punching.md).
"""

from __future__ import annotations

from warpgate.lab.topology import SERVER_ADDRESS, SERVER_ADDRESS_ALT, NatMode

#: How long a full/restricted cone mapping lives without outbound traffic.  Matches the
#: conntrack timeout for UDP flows that saw replies, so both kinds of state age alike.
CONE_TIMEOUT = "120s"

_EIM_MODES = (NatMode.FULL_CONE, NatMode.ADDRESS_RESTRICTED, NatMode.PORT_RESTRICTED)
#: Modes whose hairpinning the lab can build (it needs the mapping to be knowable).
HAIRPIN_MODES = _EIM_MODES


def _set(name: str, key: str, data: str | None = None) -> str:
    kind = f"{key} : {data}" if data else key
    word = "map" if data else "set"
    return (
        f"  {word} {name} {{\n    type {kind}\n    flags dynamic,timeout\n"
        f"    timeout {CONE_TIMEOUT}\n  }}\n"
    )


def router_ruleset(
    mode: NatMode,
    *,
    wan: str = "wan",
    lan: str = "lan",
    hairpin_address: str | None = None,
    lan_cidr: str = "0.0.0.0/0",
    wan_address: str | None = None,
    tcp_reset: bool = False,
) -> str:
    """The ``nft -f`` text for a router in ``mode`` (uplink ``wan``, LAN bridge ``lan``).

    ``wan_address`` (the router's own external address) exempts the router's own
    traffic from NAT.  ``hairpin_address`` (the external address; ``lan_cidr`` the LAN)
    switches hairpinning on: a LAN
    host sending to another LAN host's *external* endpoint reaches it, with the sender's
    external endpoint as source (RFC 4787 REQ-9), filtered as the mode filters
    inbound traffic.  Only for the EIM modes (:data:`HAIRPIN_MODES`).  ``tcp_reset``
    answers unsolicited inbound TCP with a reset instead of dropping it.
    """
    if mode is NatMode.OPEN:
        return ""
    if hairpin_address and mode not in HAIRPIN_MODES:
        raise ValueError(f"hairpinning is not available for {mode.value}")
    cone = mode in (NatMode.FULL_CONE, NatMode.ADDRESS_RESTRICTED)
    masq = "masquerade fully-random" if mode is NatMode.SYMMETRIC else "masquerade"
    t = CONE_TIMEOUT
    out = ["table ip wgnat {"]
    if cone or hairpin_address:
        # external port → inner address . port; keyed by the inner source port, which
        # masquerade keeps, so it is also the external port.
        out.append(_set("cone", "inet_service", "ipv4_addr . inet_service"))
        # {remote address . external port} the mapping has sent to (for ADF)
        out.append(_set("contacted", "ipv4_addr . inet_service"))
    # Ports the LAN's hosts send UDP from (outbound flows refresh it): the server
    # exemption below must not let unsolicited packets to these ports in.
    out.append(_set("hostports", "inet_service"))
    if hairpin_address and mode is NatMode.PORT_RESTRICTED:
        # {remote address . remote port . external port} (APDF for hairpinned traffic)
        out.append(_set("contacted_ap", "ipv4_addr . inet_service . inet_service"))

    if hairpin_address:
        # Hairpinned packets leave by the LAN, not by the WAN where the mapping state is
        # refreshed, so refresh it here, before their DNAT rewrites the destination.
        out.append("  chain track_hairpin {")
        out.append("    type filter hook prerouting priority dstnat - 5; policy accept;")
        match = f'iifname "{lan}" ip daddr {hairpin_address} meta l4proto udp'
        out.append(f"    {match} update @cone {{ udp sport timeout {t} : ip saddr . udp sport }}")
        out.append(f"    {match} update @contacted {{ ip daddr . udp sport timeout {t} }}")
        if mode is NatMode.PORT_RESTRICTED:
            out.append(
                f"    {match} update @contacted_ap "
                f"{{ ip daddr . udp dport . udp sport timeout {t} }}"
            )
        out.append("  }")

    out.append("  chain nat_in {")
    out.append("    type nat hook prerouting priority dstnat; policy accept;")
    if mode is NatMode.FULL_CONE:
        out.append(f'    iifname "{wan}" dnat ip to udp dport map @cone')
    elif mode is NatMode.ADDRESS_RESTRICTED:
        out.append(
            f'    iifname "{wan}" ip saddr . udp dport @contacted dnat ip to udp dport map @cone'
        )
    if hairpin_address:
        # The sender's external address is ours; its external port is its source port.
        hp = f'iifname "{lan}" ip daddr {hairpin_address} udp dport @cone'
        if mode is NatMode.FULL_CONE:
            out.append(f"    {hp} dnat ip to udp dport map @cone")
        elif mode is NatMode.ADDRESS_RESTRICTED:
            out.append(f"    {hp} ip daddr . udp dport @contacted dnat ip to udp dport map @cone")
        else:
            out.append(
                f"    {hp} ip daddr . udp sport . udp dport @contacted_ap "
                "dnat ip to udp dport map @cone"
            )
    out.append("  }")

    out.append("  chain nat_out {")
    out.append("    type nat hook postrouting priority srcnat; policy accept;")
    # The router's own traffic (miniupnpd's STUN checks) already carries the WAN
    # address and must keep its ports: fully-random would make it look symmetric-NATed.
    own = f"ip saddr != {wan_address} " if wan_address else ""
    out.append(f'    oifname "{wan}" {own}{masq}')
    if hairpin_address:
        # The receiver must see the sender's external endpoint, not its LAN address.
        # (Postrouting cannot match the input interface: match the LAN source instead.)
        out.append(
            f'    ip saddr {lan_cidr} oifname "{lan}" ct status dnat snat ip to {hairpin_address}'
        )
    out.append("  }")

    out.append("  chain filter_fw {")
    out.append("    type filter hook forward priority filter; policy accept;")
    if mode is NatMode.UDP_BLOCKED:
        out.append(f'    iifname "{wan}" meta l4proto udp drop')
        out.append(f'    oifname "{wan}" meta l4proto udp drop')
    out.append(
        f'    oifname "{wan}" meta l4proto udp update @hostports {{ udp sport timeout {t} }}'
    )
    if cone or hairpin_address:
        out.append(
            f'    oifname "{wan}" meta l4proto udp '
            f"update @cone {{ udp sport timeout {t} : ip saddr . udp sport }}"
        )
        out.append(
            f'    oifname "{wan}" meta l4proto udp '
            f"update @contacted {{ ip daddr . udp sport timeout {t} }}"
        )
    out.append("  }")

    # Unsolicited UDP that no mapping claims ends at the router itself.  Drop it before
    # conntrack confirms an entry for it: such an entry would occupy the tuple a later
    # outbound packet of that mapping needs, and masquerade would then pick another
    # external port (breaking EIM exactly when two peers punch holes at each other).
    # Silent, like a real NAT.  The lab's STUN server is let in: miniupnpd tests its
    # own reachability with STUN CHANGE-REQUESTs that come from other addresses/ports.
    out.append("  chain filter_in {")
    out.append("    type filter hook input priority filter; policy accept;")
    # Even from a server: a confirmed entry for a port a host uses would take the tuple
    # of that host's later flows, and masquerade would move them all to another port
    # (a STUN CHANGE-REQUEST answer did exactly that, breaking EIM for hole punching).
    out.append(f'    iifname "{wan}" meta l4proto udp ct state new udp dport @hostports drop')
    out.append(
        f'    iifname "{wan}" meta l4proto udp ct state new '
        f"ip saddr != {{ {SERVER_ADDRESS}, {SERVER_ADDRESS_ALT} }} drop"
    )
    if not tcp_reset:
        # A SYN that no mapping claims: drop it before conntrack confirms an entry (which
        # would take the tuple a later outbound SYN of a host's flow needs, as for UDP
        # above) and before the stack answers with a reset that would kill the
        # sender's own NAT entry.  A simultaneous open's early SYN is then simply lost
        # and the other side's SYN gets through.
        out.append(f'    iifname "{wan}" meta l4proto tcp ct state new drop')
    if hairpin_address:
        out.append(
            f'    iifname "{lan}" ip daddr {hairpin_address} meta l4proto udp ct state new drop'
        )
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def loss_ruleset(device: str, loss: float) -> str:
    """A netdev ingress rule dropping ``loss`` of the packets arriving on ``device``.

    Applied on both ends of a WAN link, beyond the NAT: a lost outbound packet has still
    created its NAT mapping, as on a real lossy uplink.  Only IP packets are dropped:
    losing ARP would add resolution stalls no real WAN link has.
    """
    permille = round(loss * 1000)
    if permille <= 0:
        return ""
    chain = "loss_" + device
    return (
        "table netdev wgloss {\n"
        f"  chain {chain} {{\n"
        f'    type filter hook ingress device "{device}" priority 0; policy accept;\n'
        f"    meta protocol ip numgen random mod 1000 < {permille} drop\n"
        "  }\n"
        "}\n"
    )


def void_ruleset() -> str:
    """The black hole behind the internet's default route: drop, never answer."""
    return (
        "table inet wgvoid {\n"
        "  chain in_ {\n    type filter hook input priority 0; policy drop;\n  }\n"
        "  chain out_ {\n    type filter hook output priority 0; policy drop;\n  }\n"
        "}\n"
    )
