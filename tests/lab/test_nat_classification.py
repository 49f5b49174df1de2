"""NAT classification against the lab's coturn (two addresses: RFC 5780), through real
NATs: a node in host ``a`` classifies its NAT as the lab's probe verified it, and its
address carries the NAT's WAN address."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.sansio.address import NatType, NodeAddress, PortAllocation
from warpgate.stun.node_binding import CACHE

pytestmark = pytest.mark.lab

MODES = ["open", "full-cone", "address-restricted", "port-restricted", "symmetric", "udp-blocked"]
CLASSIC = {
    "open": NatType.OPEN,
    "full-cone": NatType.FULL_CONE,
    "address-restricted": NatType.RESTRICTED,
    "port-restricted": NatType.PORT_RESTRICTED,
    "symmetric": NatType.SYMMETRIC,
    "udp-blocked": NatType.UDP_BLOCKED,
}


async def classify_in_host(server: str) -> dict[str, Any]:
    conf = dict_child(
        {
            "identity_name": "nat-lab",
            "enable_stun_clients": True,
            "stun_servers": [server],
            "stun_timeout": 4.0,
            "stun_cache_ttl": 0,
        },
        NODE_TEST_CONF,
    )
    CACHE.clear()
    async with Node(port=0, conf=conf) as node:
        await node.start()
        return {
            "reports": dict(node.nat_reports),
            "interfaces": NodeAddress.decode(node.address()).interfaces,
            "port": node.listen_port,
        }


@pytest.mark.parametrize("mode", MODES)
def test_node_classifies_its_nat_as_the_lab_verified(lab_factory: Any, mode: str) -> None:
    lab = lab_factory((mode, "open"), servers=True)
    stun = lab.servers["stun"]
    got = lab.run_async("a", classify_in_host, f"{stun['host']}:{stun['port']}", timeout=60)
    verdict = lab.probe(["a"])["a"].verdict
    assert verdict == lab.expected("a")

    local = lab.address("a")
    report = got["reports"][local]
    assert (report.mapping.value, report.filtering.value) == verdict, report
    assert report.nat_type is CLASSIC[mode]
    external = local if mode == "open" else lab.wan_address("nat_a")
    assert report.ext_ip == external
    if mode == "udp-blocked":
        assert report.ext_port == 0  # learnt over TCP: no UDP port
        assert report.port_allocation is PortAllocation.UNKNOWN
    else:
        assert report.rfc5780
        if mode == "symmetric":
            assert report.port_allocation is PortAllocation.RANDOM
        else:
            assert report.ext_port == got["port"]  # Linux keeps the source port
            assert report.port_allocation is PortAllocation.PRESERVING

    (entry,) = [i for i in got["interfaces"] if str(i.nic_ip) == local]
    assert str(entry.ext_ip) == external
    assert entry.ext_port == report.ext_port
    assert entry.nat_type is CLASSIC[mode]
    assert entry.port_allocation is report.port_allocation


def test_warpgate_nat_command_in_the_lab(lab_factory: Any) -> None:
    lab = lab_factory(("address-restricted", "symmetric"), servers=True)
    stun = lab.servers["stun"]
    server = f"{stun['host']}:{stun['port']}"
    cli = [sys.executable, "-c", "import sys; from warpgate.cli import main; sys.exit(main())"]

    done = lab.exec("a", [*cli, "nat", "--json", "--stun", server], timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    (iface,) = [i for i in data["interfaces"] if i["local"][0] == lab.address("a")]
    assert iface["nat_type"] == "restricted"
    assert (iface["mapping"], iface["filtering"]) == ("EIM", "ADF")
    assert iface["external"][0] == lab.wan_address("nat_a")

    table = lab.exec("b", [*cli, "nat", "--stun", server], timeout=60)
    assert table.returncode == 0, table.stderr
    assert "NAT type        symmetric" in table.stdout
    assert f"external        {lab.wan_address('nat_b')}:" in table.stdout

    # Nothing answers: one error line, exit status 1.
    dead = lab.exec("a", [*cli, "nat", "--stun", "203.0.113.250:3478", "--timeout", "1"])
    assert dead.returncode == 1
    assert dead.stderr.strip().splitlines() == [dead.stderr.strip()]
    assert "no STUN server answered" in dead.stderr
