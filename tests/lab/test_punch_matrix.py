"""The NAT matrix over UDP: every pair of the lab's NAT modes, ``auto_connect`` with the
default methods (direct, udp_punch and turn compete as in real use; signalling through
the lab's mosquitto, STUN and TURN from its coturn, no UPnP).

Each cell gets one lab and several tries, each with fresh nodes in both hosts, the
requester alternating between the two hosts (so both roles of an asymmetric pair, e.g.
the hard and the easy side of birthday probing, are exercised).  Every try must connect
and echo; every pair that can be punched in theory must end on a *direct* path.  Which
pairs those are comes from :mod:`warpgate.sansio.punch_plan` and is cross-checked
against the table in ``docs/punching.md``: everything except symmetric <-> symmetric.

Run with ``-s`` to see the table of what connected each cell.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import pytest

from tests.lab.punch_helpers import MATRIX_MODES, matrix_try
from warpgate.lab import two_nat
from warpgate.sansio.address import NatType, PortAllocation
from warpgate.sansio.punch_messages import Endpoint, PunchTransport
from warpgate.sansio.punch_plan import Strategy, plan

pytestmark = pytest.mark.lab

TRIES = 4  # two per direction
#: The only cell without a direct path in theory (neither NAT's ports can be predicted).
UNPUNCHABLE = {("symmetric", "symmetric")}
CELLS = list(itertools.combinations_with_replacement(MATRIX_MODES, 2))

_NAT = {
    "open": NatType.OPEN,
    "full-cone": NatType.FULL_CONE,
    "address-restricted": NatType.RESTRICTED,
    "port-restricted": NatType.PORT_RESTRICTED,
    "symmetric": NatType.SYMMETRIC,
}


def _endpoint(mode: str, ip: str) -> Endpoint:
    alloc = PortAllocation.RANDOM if mode == "symmetric" else PortAllocation.PRESERVING
    return Endpoint(ipaddress.ip_address(ip), 40000, 40000, _NAT[mode], alloc)


def punchable(a: str, b: str) -> bool:
    """What the plan module says of the pair (from both sides)."""
    mine, theirs = [_endpoint(a, "203.0.113.10")], [_endpoint(b, "198.51.100.20")]
    strategies = {
        plan(mine, theirs, PunchTransport.UDP).strategy,
        plan(theirs, mine, PunchTransport.UDP).strategy,
    }
    if a == "open" or b == "open":
        return True  # dialled directly, whatever the plan
    return Strategy.IMPOSSIBLE not in strategies


def test_the_plan_module_agrees_with_the_documented_table() -> None:
    for a, b in CELLS:
        assert punchable(a, b) == ((a, b) not in UNPUNCHABLE), (a, b)


def _row(cell: tuple[str, str], results: list[dict[str, Any]]) -> str:
    shown = [
        f"{r['requester']}:{r['method']}/{r['kind']}/{r.get('seconds', 0) * 1000:.0f}ms"
        if r["ok"]
        else f"{r['requester']}:FAILED"
        for r in results
    ]
    return f"{cell[0]:>18} <-> {cell[1]:<18} " + "  ".join(shown)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "--".join(c))
async def test_udp_matrix_cell(lab_factory: Any, cell: tuple[str, str]) -> None:
    lab = lab_factory(two_nat(cell[0], cell[1], upnp=False), servers=True)
    results = []
    for i in range(TRIES):
        requester, responder = ("a", "b") if i % 2 == 0 else ("b", "a")
        results.append(await matrix_try(lab, requester, responder, kwargs={"transport": "udp"}))
    print("\n" + _row(cell, results))  # the matrix table, shown with -s
    for result in results:
        assert result["ok"], result
        if cell in UNPUNCHABLE:
            assert result["kind"] == "relay" and result["method"] == "turn", result
        else:
            assert result["kind"] == "direct", result
