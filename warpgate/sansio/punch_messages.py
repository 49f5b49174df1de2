"""Hole-punching coordination messages, exchanged through a signal transport (sans-IO).

Same framing as :mod:`warpgate.sansio.signal_messages` (version u8 | type u8 | body), with
type numbers of their own so the two sets never collide.  All integers big-endian.

* **offer** (0x20, requester → peer) and **answer** (0x21, peer → requester)::

      session 16 | transport u8 (1 tcp, 2 udp) | schedule u8 | count u8 | endpoint * count

  an endpoint (what the sender knows of its own NAT mapping, from its NAT
  classification)::

      nat u8 | allocation u8 | delta i16 | local port u16 | ext port u16 | ip len u8 | ext ip

  optionally followed (absent when empty, so an offer without them has the layout
  above) by the sender's signal hints, which the other side needs to answer it through
  a transport that routes by them (MQTT: the brokers the sender listens on)::

      count u8 | (len u8 | UTF-8 hint) * count

* **sync** (0x22, requester → peer): ``session 16 | start_at f64``; the moment to start,
  on the sender's NTP clock, or 0.0 for "as soon as this arrives" (the round-trip
  schedule).
* **abort** (0x23, either way): ``session 16 | reason u8``; the sender gave up.

The session id is random and only travels through the (encrypted) signal channel: it is
what the probes of :mod:`warpgate.sansio.punch_probe` carry, so datagrams from anyone
else are ignored.  Decoding raises only :class:`PunchMessageError`.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import struct
from dataclasses import dataclass
from typing import Final, TypeVar

from warpgate.errors import WarpgateError
from warpgate.sansio.address import NatType, PortAllocation

VERSION: Final = 1
OFFER: Final = 0x20
ANSWER: Final = 0x21
SYNC: Final = 0x22
ABORT: Final = 0x23
TYPES: Final = frozenset({OFFER, ANSWER, SYNC, ABORT})
SESSION_SIZE: Final = 16
MAX_ENDPOINTS: Final = 8
MAX_HINTS: Final = 4
MAX_HINT: Final = 180  # bytes of one hint (a broker URL); the largest offer fits MAX_MESSAGE
MAX_MESSAGE: Final = 1024

_HEAD = struct.Struct(">BB16s")
_OFFER = struct.Struct(">BBB")
_ENDPOINT = struct.Struct(">BBhHHB")
_SYNC = struct.Struct(">d")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
E = TypeVar("E", bound=enum.IntEnum)


class PunchMessageError(WarpgateError, ValueError):
    """A punch coordination message is malformed."""


class PunchTransport(enum.IntEnum):
    TCP = 1
    UDP = 2


class Schedule(enum.IntEnum):
    """How the two sides agree on the moment to start."""

    ASAP = 0
    """Each side starts as soon as it knows the other's endpoints (UDP: probes repeat)."""
    RTT = 1
    """DCUtR style: the requester measures the signal round trip from offer to answer,
    sends *sync* and starts half a round trip later; the peer starts when sync arrives."""
    NTP = 2
    """Both start at an absolute time on their NTP-synchronised clocks, carried in sync."""


class AbortReason(enum.IntEnum):
    UNSPECIFIED = 0
    IMPOSSIBLE = 1
    """The NAT combination cannot be punched (e.g. symmetric on both sides)."""
    BUSY = 2
    """Too many sessions at once."""
    FAILED = 3
    """The attempt ran out of time."""


@dataclass(frozen=True)
class Endpoint:
    """One mapped endpoint of a node, as its NAT classification saw it."""

    ext_ip: IP
    ext_port: int
    local_port: int
    nat_type: NatType = NatType.UNKNOWN
    allocation: PortAllocation = PortAllocation.UNKNOWN
    delta: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.ext_ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            object.__setattr__(self, "ext_ip", _ip(self.ext_ip))
        for name in ("ext_port", "local_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise PunchMessageError(f"{name} must be 0..65535, got {value!r}")
        if not isinstance(self.delta, int) or not -0x8000 <= self.delta <= 0x7FFF:
            raise PunchMessageError(f"delta must be -32768..32767, got {self.delta!r}")
        object.__setattr__(self, "nat_type", _enum(NatType, self.nat_type, "nat type"))
        object.__setattr__(
            self, "allocation", _enum(PortAllocation, self.allocation, "port allocation")
        )

    @property
    def port(self) -> int:
        """The best guess of the external port: the mapped one, else the local one (a
        port-preserving NAT, or a TCP mapping STUN could not measure)."""
        return self.ext_port or self.local_port


@dataclass(frozen=True)
class Offer:
    """An offer (requester → peer) or, with ``answer=True``, the peer's answer."""

    session: bytes
    transport: PunchTransport
    endpoints: tuple[Endpoint, ...]
    schedule: Schedule = Schedule.ASAP
    answer: bool = False
    hints: tuple[str, ...] = ()
    """The sender's signal hints (where to send it the reply); may be empty."""

    def __post_init__(self) -> None:
        _check_session(self.session)
        object.__setattr__(self, "transport", _enum(PunchTransport, self.transport, "transport"))
        object.__setattr__(self, "schedule", _enum(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "hints", tuple(self.hints))
        if len(self.endpoints) > MAX_ENDPOINTS:
            raise PunchMessageError(f"at most {MAX_ENDPOINTS} endpoints, got {len(self.endpoints)}")
        if len(self.hints) > MAX_HINTS:
            raise PunchMessageError(f"at most {MAX_HINTS} hints, got {len(self.hints)}")
        for hint in self.hints:
            if not isinstance(hint, str) or not 0 < len(hint.encode()) <= MAX_HINT:
                raise PunchMessageError(f"a hint must be 1-{MAX_HINT} bytes of text: {hint!r}")

    def encode(self) -> bytes:
        parts = [
            _HEAD.pack(VERSION, ANSWER if self.answer else OFFER, self.session),
            _OFFER.pack(self.transport, self.schedule, len(self.endpoints)),
        ]
        for ep in self.endpoints:
            packed = ep.ext_ip.packed
            parts.append(
                _ENDPOINT.pack(
                    ep.nat_type, ep.allocation, ep.delta, ep.local_port, ep.ext_port, len(packed)
                )
                + packed
            )
        if self.hints:
            parts.append(bytes([len(self.hints)]))
            for hint in self.hints:
                raw = hint.encode()
                parts.append(bytes([len(raw)]) + raw)
        return b"".join(parts)


@dataclass(frozen=True)
class Sync:
    session: bytes
    start_at: float = 0.0
    """Start time on the NTP clock (seconds since the epoch); 0.0 = on receipt."""

    def __post_init__(self) -> None:
        _check_session(self.session)
        if not isinstance(self.start_at, float | int) or not math.isfinite(self.start_at):
            raise PunchMessageError(f"start_at must be a finite number, got {self.start_at!r}")
        if self.start_at < 0:
            raise PunchMessageError("start_at must not be negative")

    def encode(self) -> bytes:
        return _HEAD.pack(VERSION, SYNC, self.session) + _SYNC.pack(float(self.start_at))


@dataclass(frozen=True)
class Abort:
    session: bytes
    reason: AbortReason = AbortReason.UNSPECIFIED

    def __post_init__(self) -> None:
        _check_session(self.session)
        object.__setattr__(self, "reason", _enum(AbortReason, self.reason, "abort reason"))

    def encode(self) -> bytes:
        return _HEAD.pack(VERSION, ABORT, self.session) + bytes([self.reason])


PunchMessage = Offer | Sync | Abort


def is_punch_message(data: bytes) -> bool:
    """Whether ``data`` claims to be a punch message (other signal messages share the
    transport; they are left to their own handlers)."""
    return len(data) >= 2 and data[0] == VERSION and data[1] in TYPES


def decode_punch_message(data: bytes) -> PunchMessage:
    """Parse a punch message; raises :class:`PunchMessageError` on anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PunchMessageError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE:
        raise PunchMessageError(f"punch message of {len(data)} bytes is too large")
    if len(data) < _HEAD.size:
        raise PunchMessageError(f"punch message of {len(data)} bytes is too short")
    version, kind, session = _HEAD.unpack_from(data)
    if version != VERSION:
        raise PunchMessageError(f"punch message version {version} (this build reads {VERSION})")
    body = data[_HEAD.size :]
    if kind in (OFFER, ANSWER):
        return _decode_offer(session, body, answer=kind == ANSWER)
    if kind == SYNC:
        if len(body) != _SYNC.size:
            raise PunchMessageError(f"sync body is {len(body)} bytes, expected {_SYNC.size}")
        return Sync(session, _SYNC.unpack(body)[0])
    if kind == ABORT:
        if len(body) != 1:
            raise PunchMessageError(f"abort body is {len(body)} bytes, expected 1")
        return Abort(session, _enum(AbortReason, body[0], "abort reason"))
    raise PunchMessageError(f"unknown punch message type 0x{kind:02x}")


def _decode_offer(session: bytes, body: bytes, *, answer: bool) -> Offer:
    if len(body) < _OFFER.size:
        raise PunchMessageError("offer truncated before its endpoint count")
    transport, schedule, count = _OFFER.unpack_from(body)
    if count > MAX_ENDPOINTS:
        raise PunchMessageError(f"offer lists {count} endpoints, at most {MAX_ENDPOINTS}")
    offset = _OFFER.size
    endpoints = []
    for i in range(count):
        if len(body) - offset < _ENDPOINT.size:
            raise PunchMessageError(f"endpoint {i} truncated")
        nat, alloc, delta, local_port, ext_port, ip_len = _ENDPOINT.unpack_from(body, offset)
        offset += _ENDPOINT.size
        if ip_len not in (4, 16):
            raise PunchMessageError(f"endpoint {i}: address length {ip_len} (4 or 16)")
        if len(body) - offset < ip_len:
            raise PunchMessageError(f"endpoint {i}: address truncated")
        raw = body[offset : offset + ip_len]
        offset += ip_len
        ip: IP = ipaddress.IPv4Address(raw) if ip_len == 4 else ipaddress.IPv6Address(raw)
        endpoints.append(
            Endpoint(
                ip,
                ext_port,
                local_port,
                _enum(NatType, nat, f"endpoint {i} nat type"),
                _enum(PortAllocation, alloc, f"endpoint {i} allocation"),
                delta,
            )
        )
    hints = _decode_hints(body, offset) if offset != len(body) else ()
    return Offer(
        session,
        _enum(PunchTransport, transport, "transport"),
        tuple(endpoints),
        _enum(Schedule, schedule, "schedule"),
        answer,
        hints,
    )


def _decode_hints(body: bytes, offset: int) -> tuple[str, ...]:
    count = body[offset]
    offset += 1
    if not 0 < count <= MAX_HINTS:
        raise PunchMessageError(f"offer lists {count} hints (1-{MAX_HINTS} when present)")
    hints = []
    for i in range(count):
        if offset >= len(body):
            raise PunchMessageError(f"hint {i} truncated")
        size = body[offset]
        raw = body[offset + 1 : offset + 1 + size]
        if not 0 < size <= MAX_HINT or len(raw) != size:
            raise PunchMessageError(f"hint {i}: bad length {size}")
        offset += 1 + size
        try:
            hints.append(raw.decode())
        except UnicodeDecodeError:
            raise PunchMessageError(f"hint {i} is not UTF-8") from None
    if offset != len(body):
        raise PunchMessageError(f"{len(body) - offset} stray bytes after the hints")
    return tuple(hints)


def _check_session(session: object) -> None:
    if not isinstance(session, bytes) or len(session) != SESSION_SIZE:
        raise PunchMessageError(f"session must be {SESSION_SIZE} bytes")


def _ip(value: object) -> IP:
    try:
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise PunchMessageError(f"not an IP address: {value!r}") from None


def _enum(kind: type[E], value: object, what: str) -> E:
    try:
        return kind(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise PunchMessageError(f"unknown {what} {value!r}") from None
