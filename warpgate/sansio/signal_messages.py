"""Messages traversal methods exchange through a signal transport (sans-IO).

Layout: version u8 (1) | type u8 | body.  Type 1, *reverse connect*, asks the
recipient to dial the sender back: body = intent length u8 | intent | sender's node
address (binary form).
"""

from __future__ import annotations

from dataclasses import dataclass

from warpgate.errors import AddressError, WarpgateError
from warpgate.sansio.address import NodeAddress

VERSION = 1
REVERSE_CONNECT = 1
MAX_SIGNAL_MESSAGE = 4096
MAX_INTENT = 64


class SignalMessageError(WarpgateError, ValueError):
    """A signal message is malformed."""


@dataclass(frozen=True)
class ReverseConnect:
    intent: bytes
    address: NodeAddress

    def encode(self) -> bytes:
        if not 0 < len(self.intent) <= MAX_INTENT:
            raise SignalMessageError(f"intent must be 1-{MAX_INTENT} bytes")
        return (
            bytes([VERSION, REVERSE_CONNECT, len(self.intent)])
            + self.intent
            + self.address.encode()
        )


def decode_signal_message(data: bytes) -> ReverseConnect:
    """Parse a signal message; raises :class:`SignalMessageError` on anything malformed."""
    if len(data) > MAX_SIGNAL_MESSAGE:
        raise SignalMessageError(f"signal message of {len(data)} bytes is too large")
    if len(data) < 3:
        raise SignalMessageError("signal message too short")
    if data[0] != VERSION:
        raise SignalMessageError(f"signal message version {data[0]} (this build reads 1)")
    if data[1] != REVERSE_CONNECT:
        raise SignalMessageError(f"unknown signal message type {data[1]}")
    size = data[2]
    intent = data[3 : 3 + size]
    if not 0 < size <= MAX_INTENT or len(intent) != size:
        raise SignalMessageError("bad intent length")
    try:
        address = NodeAddress.decode(data[3 + size :])
    except AddressError as exc:
        raise SignalMessageError(f"bad address in reverse-connect request: {exc}") from exc
    return ReverseConnect(intent, address)
