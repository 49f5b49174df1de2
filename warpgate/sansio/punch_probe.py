"""Hole-punching probe datagrams (sans-IO).

Probes travel on the UDP sockets whose NAT mappings are being opened (the node's
listening socket, or the extra sockets of birthday probing), next to link datagrams
(first byte 0xD0-0xD4) and STUN (first byte 0x00/0x01), so their first byte is a kind of
their own::

    kind u8 | version u8 | session 16 | seq u16

``kind``: 0xE0 probe, 0xE1 acknowledgement (the receiver answers a probe to its source
address, which is how each side learns the other's real mapped endpoint), 0xE2
keepalive (sent on an established punched path so the NAT keeps the mapping; ignored by
the receiver).  The session id comes from the signal exchange; a datagram with any other
session is dropped.  Decoding raises only :class:`ProbeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from warpgate.errors import WarpgateError

PROBE: Final = 0xE0
PROBE_ACK: Final = 0xE1
KEEPALIVE: Final = 0xE2
KINDS: Final = frozenset({PROBE, PROBE_ACK, KEEPALIVE})
VERSION: Final = 1
SESSION_SIZE: Final = 16
_LAYOUT = struct.Struct(">BB16sH")
SIZE: Final = _LAYOUT.size  # 20


class ProbeError(WarpgateError, ValueError):
    """A probe datagram is malformed."""


@dataclass(frozen=True)
class Probe:
    kind: int
    session: bytes
    seq: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProbeError(f"unknown probe kind 0x{self.kind:02x}")
        if not isinstance(self.session, bytes) or len(self.session) != SESSION_SIZE:
            raise ProbeError(f"session must be {SESSION_SIZE} bytes")
        if not isinstance(self.seq, int) or not 0 <= self.seq <= 0xFFFF:
            raise ProbeError(f"seq must be 0..65535, got {self.seq!r}")

    def encode(self) -> bytes:
        return _LAYOUT.pack(self.kind, VERSION, self.session, self.seq)


def is_probe(data: bytes) -> bool:
    """Whether a datagram belongs to hole punching (cheap first-byte test)."""
    return bool(data) and data[0] in KINDS


def decode_probe(data: bytes) -> Probe:
    if len(data) != SIZE:
        raise ProbeError(f"probe of {len(data)} bytes, expected {SIZE}")
    kind, version, session, seq = _LAYOUT.unpack(data)
    if version != VERSION:
        raise ProbeError(f"probe version {version} (this build reads {VERSION})")
    return Probe(kind, session, seq)
