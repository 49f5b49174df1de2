"""Pure tests of topologies, the address plan and the parametrisation helpers (no root)."""

from __future__ import annotations

import ipaddress

import pytest

from warpgate.errors import ConfigError
from warpgate.lab import RFC4787, NatMode, Router, Topology, cgnat, expected_behaviour, two_nat
from warpgate.lab.nat import loss_ruleset, router_ruleset
from warpgate.lab.topology import Host, parse_mode, plan
from warpgate.testing import nat_modes, nat_pairs

LAB_RANGES = [
    ipaddress.IPv4Network(n)
    for n in ("198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10", "10.0.0.0/8")
]


def test_plan_uses_only_lab_ranges() -> None:
    for topo in (two_nat(), cgnat(), cgnat("open", "full-cone")):
        p = plan(topo, "wgl000000")
        for node in p.nodes.values():
            assert node.netns.startswith("wgl000000-")
            for _ifname, cidr in node.addresses:
                net = ipaddress.IPv4Interface(cidr).network
                assert any(net.subnet_of(r) for r in LAB_RANGES), cidr


def test_plan_cgnat_layer_uses_shared_address_space() -> None:
    p = plan(cgnat(), "wgl000000")
    assert ipaddress.IPv4Address(p.nodes["home_a"].wan_address) in ipaddress.IPv4Network(
        "100.64.0.0/10"
    )
    assert p.nodes["a"].address.startswith("10.")


def test_expected_behaviour_stricter_layer_wins() -> None:
    assert expected_behaviour([NatMode.FULL_CONE, NatMode.SYMMETRIC]) == ("APDM", "APDF")
    assert expected_behaviour([NatMode.FULL_CONE, NatMode.ADDRESS_RESTRICTED]) == ("EIM", "ADF")
    assert expected_behaviour([NatMode.FULL_CONE, NatMode.OPEN]) == ("EIM", "EIF")
    assert expected_behaviour([]) == ("none", "none")
    assert expected_behaviour([NatMode.UDP_BLOCKED, NatMode.OPEN]) == ("blocked", "blocked")


def test_parse_mode_aliases() -> None:
    assert parse_mode("PORT_RESTRICTED") is NatMode.PORT_RESTRICTED
    assert parse_mode("full") is NatMode.FULL_CONE
    with pytest.raises(ConfigError):
        parse_mode("cone-ish")


def test_bad_topologies_are_rejected() -> None:
    with pytest.raises(ConfigError):
        plan(Topology(routers=(Router("r", parent="nowhere"),)), "wgl000000")
    with pytest.raises(ConfigError):
        plan(Topology(hosts=(Host("inet"),)), "wgl000000")
    with pytest.raises(ConfigError):
        two_nat().with_modes({"nat_z": "open"})
    with pytest.raises(ConfigError):
        plan(Topology(routers=(Router("a", parent="b"), Router("b", parent="a"))), "wgl000000")
    with pytest.raises(ConfigError, match="delay only"):
        plan(Topology(routers=(Router("a"), Router("b", parent="a", delay_ms=5))), "wgl000000")
    with pytest.raises(ConfigError, match="jitter"):
        plan(Topology(routers=(Router("a", delay_ms=5, jitter_ms=10),)), "wgl000000")


def test_rulesets_per_mode() -> None:
    assert router_ruleset(NatMode.OPEN) == ""
    assert "fully-random" in router_ruleset(NatMode.SYMMETRIC)
    assert "@contacted" in router_ruleset(NatMode.ADDRESS_RESTRICTED)
    assert "udp drop" in router_ruleset(NatMode.UDP_BLOCKED)
    assert loss_ruleset("wan", 0.0) == ""
    assert "< 25 drop" in loss_ruleset("wan", 0.025)


def test_nat_pairs_and_modes() -> None:
    assert len(nat_pairs(["open", "symmetric"])) == 3
    assert len(nat_pairs(["open", "symmetric"], ordered=True)) == 4
    assert [p.values[0] for p in nat_pairs(["open", "symmetric"], same=False)] == [
        ("open", "symmetric")
    ]
    assert [p.id for p in nat_pairs([NatMode.FULL_CONE], same=True)] == ["full-cone--full-cone"]
    assert {p.values[0] for p in nat_modes()} == {m.value for m in RFC4787}
