"""What the ``turn`` traversal method sends besides TURN itself (sans-IO).

**Relay offer** (through a signal transport, to the peer): the connecting side has a
TURN allocation and asks the peer to reach it at its relayed address (over UDP: the
peer's link handshake, with the token as its intent; over TCP: a connection).  It uses
the signal
message envelope of :mod:`warpgate.sansio.signal_messages` (version u8 = 1 | type u8)
with its own type:

    1 | 0x10 | token (16 bytes) | transport u8 (17 UDP, 6 TCP) | family u8 (4/6) |
    relayed IP (4 or 16 bytes) | relayed port u16 [| sender's node address]

The optional trailing node address (binary form) tells the peer where the sender can
be reached directly, so a relay-first link can probe for a direct path from both ends.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from warpgate.sansio.signal_messages import VERSION, SignalMessageError

RELAY_OFFER: Final = 0x10
TOKEN_SIZE: Final = 16
_TRANSPORTS: Final = {17: "udp", 6: "tcp"}

Addr = tuple[str, int]


@dataclass(frozen=True)
class RelayOffer:
    token: bytes
    relayed: Addr
    transport: str = "udp"
    #: The sender's node address, binary form (empty: not given).
    address: bytes = b""

    def encode(self) -> bytes:
        if len(self.token) != TOKEN_SIZE:
            raise SignalMessageError(f"a relay offer token is {TOKEN_SIZE} bytes")
        try:
            ip = ipaddress.ip_address(self.relayed[0])
        except ValueError as exc:
            raise SignalMessageError(f"relayed address {self.relayed[0]!r} is not an IP") from exc
        port = self.relayed[1]
        if not 0 < port <= 0xFFFF:
            raise SignalMessageError(f"relayed port {port} is out of range")
        proto = {v: k for k, v in _TRANSPORTS.items()}.get(self.transport)
        if proto is None:
            raise SignalMessageError(f"relay transport {self.transport!r} is not udp or tcp")
        return (
            bytes([VERSION, RELAY_OFFER])
            + self.token
            + bytes([proto, ip.version])
            + ip.packed
            + struct.pack("!H", port)
            + bytes(self.address)
        )


def is_relay_offer(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == VERSION and data[1] == RELAY_OFFER


def decode_relay_offer(data: bytes) -> RelayOffer:
    """Parse a relay offer; :class:`SignalMessageError` for anything malformed."""
    if not is_relay_offer(data):
        raise SignalMessageError("not a relay offer")
    body = data[2:]
    if len(body) < TOKEN_SIZE + 2:
        raise SignalMessageError("relay offer too short")
    token = bytes(body[:TOKEN_SIZE])
    proto, family = body[TOKEN_SIZE], body[TOKEN_SIZE + 1]
    if proto not in _TRANSPORTS:
        raise SignalMessageError(f"relay offer transport {proto} is not UDP (17) or TCP (6)")
    size = {4: 4, 6: 16}.get(family)
    if size is None:
        raise SignalMessageError(f"relay offer address family {family} is not 4 or 6")
    rest = body[TOKEN_SIZE + 2 :]
    if len(rest) < size + 2:
        raise SignalMessageError(f"relay offer address is {len(rest)} bytes, expected {size + 2}")
    ip = ipaddress.ip_address(bytes(rest[:size]))
    port = struct.unpack_from("!H", rest, size)[0]
    if port == 0:
        raise SignalMessageError("relay offer port is 0")
    # The sender's node address is parsed (and checked) by whoever uses it.
    return RelayOffer(token, (str(ip), port), _TRANSPORTS[proto], bytes(rest[size + 2 :]))
