"""The lab never touches the root namespace: links, addresses, routes, firewall and the
sysctls it sets elsewhere are identical before, during and after a lab with every feature.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from warpgate.lab import NatMode, Router, Topology
from warpgate.lab.topology import Host

pytestmark = pytest.mark.lab


def _root_snapshot() -> dict[str, str]:
    def out(*argv: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return proc.stdout

    return {
        "links": out("ip", "-o", "link", "show"),
        "addresses": out("ip", "-o", "addr", "show"),
        "routes": out("ip", "route", "show", "table", "all"),
        "rules": out("ip", "rule", "show"),
        "nft": out("nft", "list", "ruleset"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def test_root_namespace_is_untouched(lab_factory) -> None:
    before = _root_snapshot()
    topo = Topology(
        routers=(
            Router("cgn", NatMode.SYMMETRIC, loss=0.01, delay_ms=5, jitter_ms=1),
            Router("home", NatMode.FULL_CONE, parent="cgn", hairpin=True),
            Router("nat_b", NatMode.UDP_BLOCKED, loss=0.02, upnp=True),
        ),
        hosts=(Host("a", "home"), Host("a2", "home"), Host("b", "nat_b"), Host("pub")),
    )
    lab = lab_factory(topo)
    assert all(r.verdict == lab.expected(h) for h, r in lab.probe().items())
    assert _root_snapshot() == before
    lab.down()
    assert _root_snapshot() == before
