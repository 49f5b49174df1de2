"""NAT classification from STUN observations (RFC 4787 terms, RFC 5780 tests).

The logic is pure: :class:`Observations` (what the STUN tests saw) in, a
:class:`NatReport` out.  The I/O that gathers observations lives in
:mod:`warpgate.stun.node_binding` (from a node's listening socket).

Mapping (RFC 5780 section 4.3), from one socket:

* test I: the primary server address reports ``X1``; ``X1`` equal to the local address
  means no NAT (mapping ``none``);
* test II: the server's other IP with the primary port reports ``X2``; ``X2 == X1`` is
  endpoint-independent mapping (EIM);
* test III: the other IP and other port report ``X3``; ``X3 == X2`` is address-dependent
  (ADM), otherwise address-and-port-dependent (APDM).

Without RFC 5780 (no OTHER-ADDRESS) a second configured server stands in for test II:
the same mapping is EIM, a different one is ``dependent`` (ADM or APDM: cannot tell).

Filtering (section 4.4), run *before* anything is sent to the other address (which
would open the filter): an answer to CHANGE-REQUEST(ip+port) is endpoint-independent
filtering (EIF); else an answer to CHANGE-REQUEST(port) is address-dependent (ADF); else
APDF.  No NAT and no answer to either: a firewall (classic "UDP firewall").

Nothing over UDP, but the server answers over TCP: UDP is blocked.  Nothing at all:
unknown, never a guess.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from warpgate.sansio.address import NatType, PortAllocation

__all__ = [
    "Filtering",
    "Mapping",
    "NatCache",
    "NatReport",
    "Observations",
    "classic_name",
    "classify",
    "classify_allocation",
    "classify_filtering",
    "classify_mapping",
]

Address = tuple[str, int]

#: The largest step between consecutive external ports still called sequential.
MAX_SEQUENTIAL_DELTA = 64


class Mapping(enum.StrEnum):
    """RFC 4787 mapping behaviour (values as the lab's probe names them)."""

    NONE = "none"  # no NAT: the mapped address is the local address
    EIM = "EIM"
    ADM = "ADM"
    APDM = "APDM"
    DEPENDENT = "dependent"  # ADM or APDM: two servers without RFC 5780 cannot tell
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


class Filtering(enum.StrEnum):
    """RFC 4787 filtering behaviour (values as the lab's probe names them)."""

    NONE = "none"  # no NAT and no firewall
    EIF = "EIF"
    ADF = "ADF"
    APDF = "APDF"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Observations:
    """What the STUN tests from one local socket saw (None: no answer / not run).

    ``change_both`` / ``change_port``: True when the answer to that CHANGE-REQUEST
    arrived from the changed address, False when none arrived, None when the test could
    not be run (no RFC 5780 server) or the server answered from the wrong address.
    ``allocation`` holds ``(local port, mapped port)`` of fresh sockets, in order.
    """

    local: Address
    primary: Address | None = None
    alt_ip: Address | None = None
    alt_ip_port: Address | None = None
    second_server: Address | None = None
    change_both: bool | None = None
    change_port: bool | None = None
    tcp_mapped: Address | None = None
    allocation: tuple[tuple[int, int], ...] = ()
    server: Address | None = None
    other_address: Address | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class NatReport:
    """Everything known about one interface address's NAT."""

    local: Address
    external: Address | None
    mapping: Mapping
    filtering: Filtering
    nat_type: NatType
    port_allocation: PortAllocation = PortAllocation.UNKNOWN
    port_delta: int = 0
    server: Address | None = None
    rfc5780: bool = False
    errors: tuple[str, ...] = ()
    measured_at: float = field(default_factory=time.time)

    @property
    def ext_ip(self) -> str | None:
        return self.external[0] if self.external else None

    @property
    def ext_port(self) -> int:
        return self.external[1] if self.external else 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mapping"] = self.mapping.value
        out["filtering"] = self.filtering.value
        out["nat_type"] = self.nat_type.name.lower()
        out["port_allocation"] = self.port_allocation.name.lower()
        return out


def classify_mapping(obs: Observations) -> Mapping:
    if obs.primary is None:
        if obs.tcp_mapped is not None:
            return Mapping.BLOCKED
        return Mapping.UNKNOWN
    if obs.primary == obs.local:
        return Mapping.NONE
    if obs.alt_ip is not None:
        if obs.alt_ip == obs.primary:
            return Mapping.EIM
        if obs.alt_ip_port is None:
            return Mapping.DEPENDENT
        return Mapping.ADM if obs.alt_ip_port == obs.alt_ip else Mapping.APDM
    if obs.second_server is not None:
        return Mapping.EIM if obs.second_server == obs.primary else Mapping.DEPENDENT
    return Mapping.UNKNOWN


def classify_filtering(obs: Observations) -> Filtering:
    if obs.primary is None:
        return Filtering.BLOCKED if obs.tcp_mapped is not None else Filtering.UNKNOWN
    no_nat = obs.primary == obs.local
    if obs.change_both is True:
        return Filtering.NONE if no_nat else Filtering.EIF
    if obs.change_both is None:
        return Filtering.UNKNOWN
    if obs.change_port is True:
        return Filtering.ADF
    if obs.change_port is None:
        return Filtering.UNKNOWN
    return Filtering.APDF


def classic_name(mapping: Mapping, filtering: Filtering) -> NatType:
    """The RFC 3489 class for an RFC 4787 (mapping, filtering) pair."""
    if mapping is Mapping.BLOCKED:
        return NatType.UDP_BLOCKED
    if mapping in (Mapping.ADM, Mapping.APDM, Mapping.DEPENDENT):
        return NatType.SYMMETRIC
    if mapping is Mapping.NONE:
        if filtering is Filtering.NONE:
            return NatType.OPEN
        if filtering in (Filtering.ADF, Filtering.APDF):
            return NatType.UDP_FIREWALL
        return NatType.UNKNOWN
    if mapping is Mapping.EIM:
        return {
            Filtering.EIF: NatType.FULL_CONE,
            Filtering.ADF: NatType.RESTRICTED,
            Filtering.APDF: NatType.PORT_RESTRICTED,
        }.get(filtering, NatType.UNKNOWN)
    return NatType.UNKNOWN


def classify_allocation(samples: Sequence[tuple[int, int]]) -> tuple[PortAllocation, int]:
    """``(local port, mapped port)`` of consecutive new mappings → pattern and delta.

    Preserving when every mapped port is its local port; sequential when consecutive
    mapped ports differ by one constant, small, non-zero step; random otherwise.  Fewer
    than two samples: unknown.
    """
    if len(samples) < 2:
        return PortAllocation.UNKNOWN, 0
    if all(local == mapped for local, mapped in samples):
        return PortAllocation.PRESERVING, 0
    ports = [mapped for _, mapped in samples]
    deltas = {((b - a + 0x8000) % 0x10000) - 0x8000 for a, b in itertools.pairwise(ports)}
    if len(deltas) == 1:
        (delta,) = deltas
        if delta != 0 and abs(delta) <= MAX_SEQUENTIAL_DELTA:
            return PortAllocation.SEQUENTIAL, delta
    return PortAllocation.RANDOM, 0


def classify(obs: Observations, *, now: float | None = None) -> NatReport:
    """Observations → report (external address, behaviours, classic name, allocation)."""
    mapping = classify_mapping(obs)
    filtering = classify_filtering(obs)
    allocation, delta = classify_allocation(obs.allocation)
    if mapping is Mapping.BLOCKED:
        # The TCP answer gives the external IP; its port says nothing about UDP.
        external = (obs.tcp_mapped[0], 0) if obs.tcp_mapped else None
        allocation, delta = PortAllocation.UNKNOWN, 0
    else:
        external = obs.primary
    return NatReport(
        local=obs.local,
        external=external,
        mapping=mapping,
        filtering=filtering,
        nat_type=classic_name(mapping, filtering),
        port_allocation=allocation,
        port_delta=delta,
        server=obs.server,
        rfc5780=obs.other_address is not None,
        errors=obs.errors,
        measured_at=time.time() if now is None else now,
    )


class NatCache:
    """Reports by key (local address and servers), each valid ``ttl`` seconds."""

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[float, NatReport]] = {}

    def get(self, key: Any, *, ttl: float, now: float) -> NatReport | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored, report = entry
        if ttl <= 0 or now - stored >= ttl:
            del self._entries[key]
            return None
        return report

    def put(self, key: Any, report: NatReport, *, now: float) -> None:
        self._entries[key] = (now, report)

    def clear(self) -> None:
        self._entries.clear()
