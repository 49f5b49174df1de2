"""The per-message header of a relay-first stream link (:mod:`warpgate.turn.migrate`).

Every message of such a link, inside the inner link's encrypted records, starts with one
kind byte::

    0x00 DATA    | application message
    0x01 SWITCH  (no body): the sender's last message on the relay before the direct link
    0x02 ACK     | version (1) | u64 count of DATA messages the sender has delivered
    0x03 RESUME  | version (1) | u64 sequence number of the next DATA message on this link
    0x04 ROUND   | version (1) | u64 round: the dialling end is about to dial the direct
                   link of this round (the other end echoes it once it expects that link)

DATA messages carry no number of their own: both inner links are reliable and ordered,
so the n-th DATA message a side sends has sequence number n (from 0) on whichever inner
link it travels.  That keeps the common case at one byte of overhead.  Only when an end
falls back from a dead direct link to the relay does it say where its replay starts
(RESUME), so the receiver can drop what it already delivered.  The version byte of the
control messages lets a later build change their bodies; a peer that sends a kind or
version this build does not know gets a :class:`StreamHeaderError`, never a guess.
ROUND came with moving direct again after a fallback; the first move (round 0) needs
none, so a link that moves once reads the same on the wire as before it existed.
"""

from __future__ import annotations

import dataclasses
import struct

DATA = 0
SWITCH = 1
ACK = 2
RESUME = 3
ROUND = 4
VERSION = 1

DATA_HEADER = bytes([DATA])
SWITCH_MESSAGE = bytes([SWITCH])
_COUNTER = struct.Struct("!BBQ")  # kind, version, u64


class StreamHeaderError(ValueError):
    """A message of a migrating stream link that this build cannot read."""


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """A parsed message: its kind, the counter of ACK, RESUME and ROUND, the body of
    DATA."""

    kind: int
    value: int = 0
    body: bytes = b""


def encode_data(payload: bytes) -> bytes:
    return DATA_HEADER + payload


def encode_ack(delivered: int) -> bytes:
    return _COUNTER.pack(ACK, VERSION, delivered)


def encode_resume(next_seq: int) -> bytes:
    return _COUNTER.pack(RESUME, VERSION, next_seq)


def encode_round(number: int) -> bytes:
    return _COUNTER.pack(ROUND, VERSION, number)


def decode(message: bytes) -> Header:
    """Parse one message.

    :raises StreamHeaderError: empty, an unknown kind or version, a wrong length.
    """
    if not message:
        raise StreamHeaderError("empty message on a migrating stream link")
    kind = message[0]
    if kind == DATA:
        return Header(DATA, body=bytes(message[1:]))
    if kind == SWITCH:
        if len(message) != 1:
            raise StreamHeaderError(f"switch message of {len(message)} bytes, expected 1")
        return Header(SWITCH)
    if kind in (ACK, RESUME, ROUND):
        if len(message) < 2:
            raise StreamHeaderError(f"message kind {kind} without a version byte")
        if message[1] != VERSION:
            raise StreamHeaderError(
                f"message kind {kind} of version {message[1]}; this build reads {VERSION}"
            )
        if len(message) != _COUNTER.size:
            raise StreamHeaderError(
                f"message kind {kind} of {len(message)} bytes, expected {_COUNTER.size}"
            )
        _, _, value = _COUNTER.unpack(message)
        return Header(kind, value)
    raise StreamHeaderError(f"unknown message kind {kind} on a migrating stream link")
