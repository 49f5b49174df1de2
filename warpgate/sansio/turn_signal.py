"""What the ``turn`` traversal method sends besides TURN itself (sans-IO).

Both messages use the signal message envelope of :mod:`warpgate.sansio.signal_messages`
(version u8 = 1 | type u8) with types of their own.  An address is
``family u8 (4 or 6) | IP (4 or 16 bytes) | port u16``; family 0 alone means "none".

**Relay offer** (type 0x10, to the peer): the connecting side has a TURN allocation and
asks the peer to reach it at its relayed address (over UDP: the peer's link handshake,
with the token as its intent; over TCP: a connection)::

    1 | 0x10 | token (16) | transport u8 (17 UDP, 6 TCP) | flags u8 |
    relayed address | TURN server address (or none) | sender's node address (rest)

Flag 0x02, *migratable* (TCP): the link will carry a one-byte header per message and
may move to a direct link (:mod:`warpgate.turn.migrate`).  Flag 0x01, *answer
wanted*: the sender cannot tell which address the relay will see the
peer at (its node address has no external address), so the peer first asks the TURN
server (a STUN Binding from its listening socket) and answers.  The trailing node
address tells the peer where the sender can be reached directly, so a relay-first link
can probe for a direct path from both ends.

**Relay answer** (type 0x11, back to the offerer)::

    1 | 0x11 | token (16) | the peer's address as the TURN server saw it
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from warpgate.sansio.signal_messages import VERSION, SignalMessageError

RELAY_OFFER: Final = 0x10
RELAY_ANSWER: Final = 0x11
ANSWER_WANTED: Final = 0x01
MIGRATABLE: Final = 0x02
TOKEN_SIZE: Final = 16
_TRANSPORTS: Final = {17: "udp", 6: "tcp"}

Addr = tuple[str, int]


def _pack_address(addr: Addr | None) -> bytes:
    if addr is None:
        return b"\0"
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError as exc:
        raise SignalMessageError(f"address {addr[0]!r} is not an IP") from exc
    if not 0 < addr[1] <= 0xFFFF:
        raise SignalMessageError(f"port {addr[1]} is out of range")
    return bytes([ip.version]) + ip.packed + struct.pack("!H", addr[1])


def _unpack_address(data: bytes, pos: int, what: str) -> tuple[Addr | None, int]:
    if pos >= len(data):
        raise SignalMessageError(f"{what}: missing")
    family = data[pos]
    if family == 0:
        return None, pos + 1
    size = {4: 4, 6: 16}.get(family)
    if size is None:
        raise SignalMessageError(f"{what}: address family {family} is not 4 or 6")
    end = pos + 1 + size + 2
    if end > len(data):
        raise SignalMessageError(f"{what}: {len(data) - pos - 1} bytes, expected {size + 2}")
    ip = ipaddress.ip_address(bytes(data[pos + 1 : pos + 1 + size]))
    port = struct.unpack_from("!H", data, pos + 1 + size)[0]
    if port == 0:
        raise SignalMessageError(f"{what}: port is 0")
    return (str(ip), port), end


@dataclass(frozen=True)
class RelayOffer:
    token: bytes
    relayed: Addr
    transport: str = "udp"
    #: The sender's node address, binary form (empty: not given).
    address: bytes = b""
    #: The TURN server (the peer asks it for its reflexive address when asked to answer).
    server: Addr | None = None
    answer_wanted: bool = False
    #: TCP: the link may move to a direct link (see :mod:`warpgate.turn.migrate`).
    migratable: bool = False

    def encode(self) -> bytes:
        if len(self.token) != TOKEN_SIZE:
            raise SignalMessageError(f"a relay offer token is {TOKEN_SIZE} bytes")
        proto = {v: k for k, v in _TRANSPORTS.items()}.get(self.transport)
        if proto is None:
            raise SignalMessageError(f"relay transport {self.transport!r} is not udp or tcp")
        if self.answer_wanted and self.server is None:
            raise SignalMessageError("a relay offer that wants an answer names its server")
        return (
            bytes([VERSION, RELAY_OFFER])
            + self.token
            + bytes(
                [
                    proto,
                    (ANSWER_WANTED if self.answer_wanted else 0)
                    | (MIGRATABLE if self.migratable else 0),
                ]
            )
            + _pack_address(self.relayed)
            + _pack_address(self.server)
            + bytes(self.address)
        )


def is_relay_offer(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == VERSION and data[1] == RELAY_OFFER


def is_relay_answer(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == VERSION and data[1] == RELAY_ANSWER


def decode_relay_offer(data: bytes) -> RelayOffer:
    """Parse a relay offer; :class:`SignalMessageError` for anything malformed."""
    if not is_relay_offer(data):
        raise SignalMessageError("not a relay offer")
    data = bytes(data)
    head = 2 + TOKEN_SIZE + 2
    if len(data) < head:
        raise SignalMessageError("relay offer too short")
    token = data[2 : 2 + TOKEN_SIZE]
    proto, flags = data[2 + TOKEN_SIZE], data[3 + TOKEN_SIZE]
    if proto not in _TRANSPORTS:
        raise SignalMessageError(f"relay offer transport {proto} is not UDP (17) or TCP (6)")
    relayed, pos = _unpack_address(data, head, "relayed address")
    if relayed is None:
        raise SignalMessageError("relay offer without a relayed address")
    server, pos = _unpack_address(data, pos, "server address")
    wanted = bool(flags & ANSWER_WANTED)
    if wanted and server is None:
        raise SignalMessageError("relay offer wants an answer but names no server")
    # The sender's node address is parsed (and checked) by whoever uses it.
    migratable = bool(flags & MIGRATABLE)
    return RelayOffer(token, relayed, _TRANSPORTS[proto], data[pos:], server, wanted, migratable)


@dataclass(frozen=True)
class RelayAnswer:
    token: bytes
    reflexive: Addr

    def encode(self) -> bytes:
        if len(self.token) != TOKEN_SIZE:
            raise SignalMessageError(f"a relay answer token is {TOKEN_SIZE} bytes")
        return bytes([VERSION, RELAY_ANSWER]) + self.token + _pack_address(self.reflexive)


def decode_relay_answer(data: bytes) -> RelayAnswer:
    """Parse a relay answer; :class:`SignalMessageError` for anything malformed."""
    if not is_relay_answer(data):
        raise SignalMessageError("not a relay answer")
    data = bytes(data)
    if len(data) < 2 + TOKEN_SIZE:
        raise SignalMessageError("relay answer too short")
    reflexive, pos = _unpack_address(data, 2 + TOKEN_SIZE, "reflexive address")
    if reflexive is None or pos != len(data):
        raise SignalMessageError("relay answer: one address, nothing after it")
    return RelayAnswer(data[2 : 2 + TOKEN_SIZE], reflexive)
