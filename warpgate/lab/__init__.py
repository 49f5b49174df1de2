"""warpgate's NAT lab: real NATs in Linux network namespaces, with real servers.

Importing this package works everywhere (it only needs the standard library); *using*
it needs Linux and root, and raises :class:`LabUnavailable` otherwise.  See docs/lab.md.
"""

from __future__ import annotations

from warpgate.lab.errors import LabError, LabUnavailable, MissingBinary, ServerStartError
from warpgate.lab.lab import Lab
from warpgate.lab.probe import ProbeResult
from warpgate.lab.topology import (
    PRESETS,
    RFC4787,
    Host,
    NatMode,
    Router,
    Topology,
    cgnat,
    expected_behaviour,
    parse_mode,
    preset,
    same_lan,
    single,
    two_nat,
)

__all__ = [
    "PRESETS",
    "RFC4787",
    "Host",
    "Lab",
    "LabError",
    "LabUnavailable",
    "MissingBinary",
    "NatMode",
    "ProbeResult",
    "Router",
    "ServerStartError",
    "Topology",
    "cgnat",
    "expected_behaviour",
    "parse_mode",
    "preset",
    "same_lan",
    "single",
    "two_nat",
]
