"""The NAT matrix over TCP: every pair of the lab's NAT modes, ``auto_connect`` over TCP
with the default methods competing as in real use (direct, reverse, tcp_punch, turn;
signalling through the lab's mosquitto, STUN and TURN from its coturn, no UPnP), two
tries per cell with the requester alternating between the hosts.

Every try must connect and echo.  TCP can be punched when both NATs' TCP ports are
predictable: every pair without a symmetric NAT (the lab's cones are UDP constructions,
so TCP through them is port-restricted).  Those cells must end on a *direct* path, and
by ``tcp_punch`` when both sides are NATed (neither can be dialled, nor dial back).  A
symmetric NAT next to an open host is dialled directly; next to any other NAT, TCP goes
through the relay (RFC 6062), as documented in ``docs/punching.md``.

Run with ``-s`` to see the table of what connected each cell.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.lab.punch_helpers import MATRIX_MODES, matrix_try
from warpgate.lab import two_nat

pytestmark = pytest.mark.lab

TRIES = 2
CELLS = list(itertools.combinations_with_replacement(MATRIX_MODES, 2))


def expected(cell: tuple[str, str]) -> tuple[str, str | None]:
    """(path kind, method or None for "any") a cell must end with."""
    if "symmetric" not in cell:
        return ("direct", None if "open" in cell else "tcp_punch")
    if "open" in cell:
        return ("direct", None)
    return ("relay", "turn")


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "--".join(c))
async def test_tcp_matrix_cell(lab_factory: Any, cell: tuple[str, str]) -> None:
    lab = lab_factory(two_nat(cell[0], cell[1], upnp=False), servers=True)
    results = []
    for i in range(TRIES):
        requester, responder = ("a", "b") if i % 2 == 0 else ("b", "a")
        results.append(await matrix_try(lab, requester, responder, kwargs={"transport": "tcp"}))
    shown = [
        f"{r['requester']}:{r['method']}/{r['kind']}/{r.get('seconds', 0) * 1000:.0f}ms"
        if r["ok"]
        else f"{r['requester']}:FAILED"
        for r in results
    ]
    print(f"\n{cell[0]:>18} <-> {cell[1]:<18} " + "  ".join(shown))
    kind, method = expected(cell)
    for result in results:
        assert result["ok"], result
        assert result["kind"] == kind, result
        if method is not None:
            assert result["method"] == method, result
