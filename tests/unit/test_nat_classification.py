"""NAT classification from synthetic observations (pure logic, no sockets)."""

from __future__ import annotations

import pytest

from warpgate.sansio.address import NatType, PortAllocation
from warpgate.stun.nat import (
    Filtering,
    Mapping,
    NatCache,
    Observations,
    classic_name,
    classify,
    classify_allocation,
)
from warpgate.stun.node_binding import parse_server

LOCAL = ("192.168.1.10", 40000)
EXT = ("198.51.100.7", 40000)
EXT2 = ("198.51.100.7", 51234)
EXT3 = ("198.51.100.7", 61000)


def obs(**kw: object) -> Observations:
    base: dict[str, object] = {
        "local": LOCAL,
        "primary": EXT,
        "alt_ip": EXT,
        "alt_ip_port": EXT,
        "change_both": False,
        "change_port": False,
        "server": ("203.0.113.1", 3478),
        "other_address": ("203.0.113.2", 3479),
    }
    base.update(kw)
    return Observations(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("observed", "mapping", "filtering", "nat_type"),
    [
        (
            obs(primary=LOCAL, alt_ip=LOCAL, alt_ip_port=LOCAL, change_both=True),
            Mapping.NONE,
            Filtering.NONE,
            NatType.OPEN,
        ),
        (
            obs(primary=LOCAL, alt_ip=LOCAL, alt_ip_port=LOCAL),
            Mapping.NONE,
            Filtering.APDF,
            NatType.UDP_FIREWALL,
        ),
        (obs(change_both=True), Mapping.EIM, Filtering.EIF, NatType.FULL_CONE),
        (obs(change_port=True), Mapping.EIM, Filtering.ADF, NatType.RESTRICTED),
        (obs(), Mapping.EIM, Filtering.APDF, NatType.PORT_RESTRICTED),
        (obs(alt_ip=EXT2, alt_ip_port=EXT3), Mapping.APDM, Filtering.APDF, NatType.SYMMETRIC),
        (obs(alt_ip=EXT2, alt_ip_port=EXT2), Mapping.ADM, Filtering.APDF, NatType.SYMMETRIC),
        (obs(alt_ip=EXT2, alt_ip_port=None), Mapping.DEPENDENT, Filtering.APDF, NatType.SYMMETRIC),
        (
            Observations(local=LOCAL, tcp_mapped=("198.51.100.7", 5555)),
            Mapping.BLOCKED,
            Filtering.BLOCKED,
            NatType.UDP_BLOCKED,
        ),
        (Observations(local=LOCAL), Mapping.UNKNOWN, Filtering.UNKNOWN, NatType.UNKNOWN),
    ],
)
def test_rfc5780_tests(
    observed: Observations, mapping: Mapping, filtering: Filtering, nat_type: NatType
) -> None:
    report = classify(observed)
    assert (report.mapping, report.filtering, report.nat_type) == (mapping, filtering, nat_type)


def test_external_address_and_blocked_udp() -> None:
    assert classify(obs()).external == EXT
    blocked = classify(Observations(local=LOCAL, tcp_mapped=("198.51.100.7", 5555)))
    assert blocked.external == ("198.51.100.7", 0)  # a TCP port says nothing about UDP
    assert blocked.ext_ip == "198.51.100.7" and blocked.ext_port == 0
    assert classify(Observations(local=LOCAL)).external is None


def test_without_rfc5780_two_servers_give_the_mapping_but_never_a_guess() -> None:
    plain = {"alt_ip": None, "alt_ip_port": None, "change_both": None, "change_port": None}
    same = classify(obs(**plain, other_address=None, second_server=EXT))
    assert (same.mapping, same.filtering, same.nat_type) == (
        Mapping.EIM,
        Filtering.UNKNOWN,
        NatType.UNKNOWN,  # EIM, but which cone depends on filtering: unknown
    )
    assert not same.rfc5780
    moved = classify(obs(**plain, other_address=None, second_server=EXT2))
    assert (moved.mapping, moved.nat_type) == (Mapping.DEPENDENT, NatType.SYMMETRIC)
    alone = classify(obs(**plain, other_address=None))
    assert (alone.mapping, alone.nat_type) == (Mapping.UNKNOWN, NatType.UNKNOWN)
    assert alone.external == EXT  # the external address is still known


def test_a_server_ignoring_change_request_does_not_pass_for_eif() -> None:
    report = classify(obs(change_both=None, change_port=None))
    assert report.filtering is Filtering.UNKNOWN and report.nat_type is NatType.UNKNOWN


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], (PortAllocation.UNKNOWN, 0)),
        ([(1000, 1000)], (PortAllocation.UNKNOWN, 0)),
        ([(1000, 1000), (2000, 2000), (3000, 3000)], (PortAllocation.PRESERVING, 0)),
        ([(1000, 5000), (2000, 5001), (3000, 5002)], (PortAllocation.SEQUENTIAL, 1)),
        ([(1000, 5000), (2000, 5002), (3000, 5004)], (PortAllocation.SEQUENTIAL, 2)),
        ([(1000, 5000), (2000, 4996), (3000, 4992)], (PortAllocation.SEQUENTIAL, -4)),
        ([(1000, 65535), (2000, 1), (3000, 3)], (PortAllocation.SEQUENTIAL, 2)),  # wraps
        ([(1000, 5000), (2000, 31000), (3000, 12000)], (PortAllocation.RANDOM, 0)),
        ([(1000, 5000), (2000, 5001), (3000, 5003)], (PortAllocation.RANDOM, 0)),
        ([(1000, 5000), (2000, 5000)], (PortAllocation.RANDOM, 0)),  # same port twice
        ([(1000, 5000), (2000, 6000), (3000, 7000)], (PortAllocation.RANDOM, 0)),  # too far
    ],
)
def test_port_allocation(
    samples: list[tuple[int, int]], expected: tuple[PortAllocation, int]
) -> None:
    assert classify_allocation(samples) == expected


def test_report_carries_allocation_and_is_plain_data() -> None:
    report = classify(obs(allocation=((1000, 5000), (2000, 5001), (3000, 5002))), now=5.0)
    assert report.port_allocation is PortAllocation.SEQUENTIAL and report.port_delta == 1
    data = report.as_dict()
    assert data["nat_type"] == "port_restricted"
    assert data["mapping"] == "EIM" and data["port_allocation"] == "sequential"
    assert data["measured_at"] == 5.0


def test_classic_names_cover_unknowns() -> None:
    assert classic_name(Mapping.EIM, Filtering.UNKNOWN) is NatType.UNKNOWN
    assert classic_name(Mapping.NONE, Filtering.UNKNOWN) is NatType.UNKNOWN
    assert classic_name(Mapping.UNKNOWN, Filtering.EIF) is NatType.UNKNOWN
    assert classic_name(Mapping.APDM, Filtering.UNKNOWN) is NatType.SYMMETRIC


def test_cache_ttl() -> None:
    cache = NatCache()
    report = classify(obs())
    cache.put("k", report, now=100.0)
    assert cache.get("k", ttl=10, now=105.0) is report
    assert cache.get("k", ttl=10, now=110.0) is None
    assert cache.get("k", ttl=10, now=105.0) is None  # expired entries are dropped
    cache.put("k", report, now=100.0)
    assert cache.get("k", ttl=0, now=100.0) is None  # ttl 0: no caching


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stun.example.net:3478", ("stun.example.net", 3478)),
        ("stun.example.net", ("stun.example.net", 3478)),
        ("203.0.113.1:19302", ("203.0.113.1", 19302)),
        ("[2001:db8::1]:3478", ("2001:db8::1", 3478)),
        ("2001:db8::1", ("2001:db8::1", 3478)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:x", "[::1", ":3478", "host:70000"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text)
