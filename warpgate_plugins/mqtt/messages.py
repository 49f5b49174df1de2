"""The messages MQTT signal transports exchange inside envelopes.  No I/O.

Layout (version 1): version u8 | kind u8 | message id (8 bytes) | body.

* ``DATA``: body = the application payload.
* ``REQUEST``: like DATA, but the recipient's request handler produces a response.
* ``RESPONSE``: body = request id (8 bytes) | status u8 | response payload.

Every message is acknowledged with an envelope receipt
(:func:`warpgate.sansio.envelope.make_receipt`), not with a message of its own.
Retransmissions reuse the message id (so the receiver delivers once and acknowledges
again) inside a fresh envelope (so the envelope's replay check still holds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from warpgate.errors import WarpgateError

VERSION: Final = 1
ID_SIZE: Final = 8
HEADER_SIZE: Final = 2 + ID_SIZE


class Kind(enum.IntEnum):
    DATA = 1
    # 2 is reserved (an acknowledgement message in drafts; receipts replaced it)
    REQUEST = 3
    RESPONSE = 4


class Status(enum.IntEnum):
    OK = 0
    NO_HANDLER = 1
    HANDLER_FAILED = 2


class MessageError(WarpgateError, ValueError):
    """A signal message inside a valid envelope is malformed."""


@dataclass(frozen=True)
class Message:
    kind: Kind
    msg_id: bytes
    body: bytes = b""

    def encode(self) -> bytes:
        if len(self.msg_id) != ID_SIZE:
            raise MessageError("message id must be 8 bytes")
        return bytes([VERSION, self.kind]) + self.msg_id + self.body


def decode_message(data: bytes) -> Message:
    if len(data) < HEADER_SIZE:
        raise MessageError("signal message too short")
    if data[0] != VERSION:
        raise MessageError(f"signal message version {data[0]} (this build reads 1)")
    try:
        kind = Kind(data[1])
    except ValueError:
        raise MessageError(f"unknown signal message kind {data[1]}") from None
    return Message(kind, bytes(data[2:HEADER_SIZE]), bytes(data[HEADER_SIZE:]))


def encode_response(request_id: bytes, status: Status, payload: bytes) -> bytes:
    return request_id + bytes([status]) + payload


def decode_response(body: bytes) -> tuple[bytes, Status, bytes]:
    if len(body) < ID_SIZE + 1:
        raise MessageError("response too short")
    try:
        status = Status(body[ID_SIZE])
    except ValueError:
        raise MessageError(f"unknown response status {body[ID_SIZE]}") from None
    return body[:ID_SIZE], status, body[ID_SIZE + 1 :]
