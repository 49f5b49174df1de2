"""TURN (RFC 8656) and TURN-over-TCP relaying (RFC 6062) on top of the STUN codec, sans-IO.

TURN messages are STUN messages with more methods and attributes, so this module adds
only what TURN needs to :mod:`warpgate.sansio.stun` (which decodes the TURN attribute
types, XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS as ``(ip, port)``):

* :class:`TurnMethod` and request/indication builders (:func:`allocate`,
  :func:`refresh`, :func:`create_permission`, :func:`channel_bind`,
  :func:`send_indication`, :func:`connect`, :func:`connection_bind`);
* typed attribute values (LIFETIME, CHANNEL-NUMBER, REQUESTED-TRANSPORT, CONNECTION-ID);
* :class:`LongTermAuth`, the long-term credential dance: the first request goes
  unsigned, the 401 answer brings REALM and NONCE, every later request is signed with
  ``MD5(username:realm:password)``, and a 438 (stale nonce) brings a fresh nonce;
* ChannelData framing (:func:`encode_channel_data`, :func:`decode_channel_data`,
  :func:`channel_data_length` for stream transports).

TURN is a standard wire format: it has no version byte of ours; RFC 8656 fixes it.
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from warpgate.sansio import stun
from warpgate.sansio.stun import Attr, StunClass, StunError, StunMessage

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "PROTO_TCP",
    "PROTO_UDP",
    "Allocation",
    "LongTermAuth",
    "TurnError",
    "TurnMethod",
    "allocate",
    "channel_bind",
    "channel_data_length",
    "connect",
    "connection_bind",
    "create_permission",
    "decode_channel_data",
    "encode_channel_data",
    "is_channel_data",
    "parse_allocation",
    "parse_connection_id",
    "parse_data_indication",
    "parse_lifetime",
    "refresh",
    "send_indication",
]

PROTO_UDP: Final = 17
PROTO_TCP: Final = 6
#: Channel numbers a client may bind (RFC 8656 section 12).
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF
_CHANNEL_HEADER: Final = struct.Struct("!HH")
#: Lifetimes fixed by RFC 8656: permissions 300 s, channel bindings 600 s.
PERMISSION_LIFETIME: Final = 300.0
CHANNEL_LIFETIME: Final = 600.0

Address = tuple[str, int]


class TurnMethod(IntEnum):
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    # RFC 6062 (TCP relaying)
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class TurnError(StunError):
    """A TURN server refused a request (``code`` is the STUN error code, 0 for a local
    failure such as a malformed answer)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


#: What the error codes a client can meet mean, for error messages people can act on.
ERROR_MEANINGS: Final = {
    400: "bad request",
    401: "unauthorized: wrong username or password",
    403: "forbidden (the server refuses this peer address or user)",
    420: "unknown attribute",
    437: "allocation mismatch (no allocation, or one exists already for this socket)",
    438: "stale nonce",
    440: "address family not supported",
    441: "wrong credentials (not the ones that made the allocation)",
    442: "unsupported transport protocol",
    443: "peer address family mismatch",
    446: "connection already exists",
    447: "connection timeout or failure",
    486: "allocation quota reached",
    500: "server error",
    508: "insufficient capacity",
}


# ------------------------------------------------------------------ attribute values


def _u32(value: int, name: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise StunError(f"{name} takes an unsigned 32-bit integer, not {value!r}")
    return struct.pack("!I", value)


def lifetime_value(seconds: int) -> bytes:
    return _u32(seconds, "LIFETIME")


def parse_lifetime(msg: StunMessage) -> int | None:
    """LIFETIME in seconds, or None when the message has none."""
    raw = msg.get(Attr.LIFETIME)
    if raw is None:
        return None
    if not isinstance(raw, bytes) or len(raw) != 4:
        raise TurnError("LIFETIME is 4 bytes")
    return int(struct.unpack("!I", raw)[0])


def channel_value(channel: int) -> bytes:
    if not isinstance(channel, int) or not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"channel number {channel!r} is outside {CHANNEL_MIN:#x}..{CHANNEL_MAX:#x}")
    return struct.pack("!HH", channel, 0)


def transport_value(protocol: int) -> bytes:
    if protocol not in (PROTO_UDP, PROTO_TCP):
        raise StunError(f"REQUESTED-TRANSPORT {protocol!r} is neither UDP (17) nor TCP (6)")
    return struct.pack("!B3x", protocol)


def parse_connection_id(msg: StunMessage) -> int | None:
    raw = msg.get(Attr.CONNECTION_ID)
    if raw is None:
        return None
    if not isinstance(raw, bytes) or len(raw) != 4:
        raise TurnError("CONNECTION-ID is 4 bytes")
    return int(struct.unpack("!I", raw)[0])


def _peer(address: Address) -> tuple[int, Address]:
    # Normalise here so a bad peer is a clear error at the call, not at encode time.
    host, port = address
    try:
        ip = ipaddress.ip_address(str(host))
    except ValueError as exc:
        raise StunError(f"peer address {host!r} is not an IP address") from exc
    return Attr.XOR_PEER_ADDRESS, (str(ip), int(port))


# ------------------------------------------------------------------ messages


def allocate(
    *, protocol: int = PROTO_UDP, lifetime: int | None = None, dont_fragment: bool = False
) -> StunMessage:
    """An Allocate request (unsigned: :class:`LongTermAuth` signs it)."""
    attrs: list[tuple[int, stun.AttrValue]] = [
        (Attr.REQUESTED_TRANSPORT, transport_value(protocol))
    ]
    if lifetime is not None:
        attrs.append((Attr.LIFETIME, lifetime_value(lifetime)))
    if dont_fragment:
        attrs.append((Attr.DONT_FRAGMENT, b""))
    return StunMessage(TurnMethod.ALLOCATE, StunClass.REQUEST, attributes=tuple(attrs))


def refresh(lifetime: int | None = None) -> StunMessage:
    """A Refresh request; ``lifetime=0`` deletes the allocation."""
    attrs = () if lifetime is None else ((Attr.LIFETIME, lifetime_value(lifetime)),)
    return StunMessage(TurnMethod.REFRESH, StunClass.REQUEST, attributes=attrs)


def create_permission(peers: Iterable[Address]) -> StunMessage:
    """A CreatePermission request for the IPs of ``peers`` (ports are ignored by the
    server: permissions are per IP address, RFC 8656 section 9)."""
    attrs = tuple(_peer(p) for p in peers)
    if not attrs:
        raise StunError("CreatePermission needs at least one peer address")
    return StunMessage(TurnMethod.CREATE_PERMISSION, StunClass.REQUEST, attributes=attrs)


def channel_bind(channel: int, peer: Address) -> StunMessage:
    """A ChannelBind request (also installs or refreshes the permission for the peer)."""
    return StunMessage(
        TurnMethod.CHANNEL_BIND,
        StunClass.REQUEST,
        attributes=((Attr.CHANNEL_NUMBER, channel_value(channel)), _peer(peer)),
    )


def send_indication(peer: Address, data: bytes) -> StunMessage:
    """A Send indication: relay ``data`` to ``peer`` (no answer, no integrity)."""
    return StunMessage(
        TurnMethod.SEND, StunClass.INDICATION, attributes=(_peer(peer), (Attr.DATA, bytes(data)))
    )


def connect(peer: Address) -> StunMessage:
    """RFC 6062 Connect: ask the server to open a TCP connection to ``peer``."""
    return StunMessage(TurnMethod.CONNECT, StunClass.REQUEST, attributes=(_peer(peer),))


def connection_bind(connection_id: int) -> StunMessage:
    """RFC 6062 ConnectionBind, sent on a new data connection to the server."""
    return StunMessage(
        TurnMethod.CONNECTION_BIND,
        StunClass.REQUEST,
        attributes=((Attr.CONNECTION_ID, _u32(connection_id, "CONNECTION-ID")),),
    )


@dataclass(frozen=True)
class Allocation:
    """What a successful Allocate answer says."""

    relayed: Address
    mapped: Address | None
    lifetime: int


def parse_allocation(msg: StunMessage) -> Allocation:
    """The relayed address, our mapped address and the lifetime of an Allocate success."""
    if msg.method != TurnMethod.ALLOCATE or msg.cls != StunClass.SUCCESS:
        raise TurnError("not an Allocate success response")
    relayed = msg.get(Attr.XOR_RELAYED_ADDRESS)
    if not (isinstance(relayed, tuple) and len(relayed) == 2 and isinstance(relayed[0], str)):
        raise TurnError("Allocate success without XOR-RELAYED-ADDRESS")
    lifetime = parse_lifetime(msg)
    if lifetime is None:
        raise TurnError("Allocate success without LIFETIME")
    return Allocation((relayed[0], int(relayed[1])), msg.xor_mapped_address, lifetime)


def parse_data_indication(msg: StunMessage) -> tuple[Address, bytes]:
    """(peer, data) of a Data indication; :class:`TurnError` if it lacks either."""
    if msg.method != TurnMethod.DATA or msg.cls != StunClass.INDICATION:
        raise TurnError("not a Data indication")
    peer = msg.get(Attr.XOR_PEER_ADDRESS)
    data = msg.get(Attr.DATA)
    if not (isinstance(peer, tuple) and len(peer) == 2 and isinstance(peer[0], str)):
        raise TurnError("Data indication without XOR-PEER-ADDRESS")
    if not isinstance(data, bytes):
        raise TurnError("Data indication without DATA")
    return (peer[0], int(peer[1])), data


def describe_error(msg: StunMessage) -> TurnError:
    """A :class:`TurnError` for an error response, with its code's meaning."""
    err = msg.error_code
    code = err.code if err is not None else 0
    reason = err.reason if err is not None else ""
    meaning = ERROR_MEANINGS.get(code, "error")
    method = _method_name(msg.method)
    text = f"TURN {method} failed: {code} {meaning}" + (f" ({reason})" if reason else "")
    return TurnError(text, code)


def _method_name(method: int) -> str:
    try:
        return TurnMethod(method).name
    except ValueError:
        return f"method {method:#x}"


# ------------------------------------------------------------------ long-term credentials


class LongTermAuth:
    """The long-term credential mechanism (RFC 8489 section 9.2) for one client.

    :meth:`sign` encodes a request, signed once the realm and nonce are known.
    :meth:`accept_error` reads a 401 or 438 answer and says whether the same request
    should be sent again (signed with the new nonce); it raises :class:`TurnError`
    when the credentials are wrong (a 401 to a request that was signed already).
    :meth:`check_response` verifies the MESSAGE-INTEGRITY of an answer.
    """

    #: A server that keeps answering 438 is broken or hostile: stop after this many.
    MAX_STALE_RETRIES: Final = 3

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self._stale = 0

    @property
    def ready(self) -> bool:
        return self.key is not None and self.nonce is not None

    def sign(self, msg: StunMessage) -> bytes:
        """The wire form of ``msg``: with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once
        the server told us its realm, plain before (that first answer is the 401)."""
        if not self.ready or msg.cls == StunClass.INDICATION:
            return stun.encode(msg)
        assert self.realm is not None and self.nonce is not None
        extra = ((Attr.USERNAME, self.username), (Attr.REALM, self.realm), (Attr.NONCE, self.nonce))
        signed = StunMessage(msg.method, msg.cls, msg.transaction_id, msg.attributes + extra)
        return stun.encode(signed, integrity_key=self.key)

    def accept_error(self, answer: StunMessage, *, was_signed: bool) -> bool:
        """True when ``answer`` (an error response) asks for the request again with new
        credentials; False for any other error (the caller reports it)."""
        err = answer.error_code
        code = err.code if err is not None else 0
        realm, nonce = answer.get(Attr.REALM), answer.get(Attr.NONCE)
        if code == 401:
            if was_signed and realm == self.realm:
                raise TurnError(
                    f"TURN server rejected the credentials of user {self.username!r} "
                    f"in realm {self.realm!r} (401)",
                    401,
                )
            if not isinstance(realm, str) or not isinstance(nonce, str):
                raise TurnError("TURN server answered 401 without REALM and NONCE", 401)
            self._learn(realm, nonce)
            return True
        if code == 438:
            self._stale += 1
            if self._stale > self.MAX_STALE_RETRIES:
                raise TurnError("TURN server keeps answering 438 (stale nonce)", 438)
            if not isinstance(nonce, str):
                raise TurnError("TURN server answered 438 without a NONCE", 438)
            if isinstance(realm, str) and realm != self.realm:
                self._learn(realm, nonce)
            else:
                self.nonce = nonce
            return True
        return False

    def accepted(self) -> None:
        """A signed request succeeded: the nonce is good, forget past 438s."""
        self._stale = 0

    def _learn(self, realm: str, nonce: str) -> None:
        self.realm, self.nonce = realm, nonce
        self.key = stun.long_term_key(self.username, realm, self.password)

    def check_response(self, data: bytes) -> bool:
        """Whether an answer to a signed request is authentic: its MESSAGE-INTEGRITY
        matches our key.  Answers to unsigned requests carry none and pass."""
        if self.key is None:
            return True
        try:
            msg = stun.decode(data)
        except StunError:
            return False
        has_mi = msg.get(Attr.MESSAGE_INTEGRITY) is not None
        if not has_mi:
            # RFC 8656: error answers such as 401/438 carry no integrity; successes do.
            return msg.cls == StunClass.ERROR
        return stun.verify_integrity(data, self.key)


# ------------------------------------------------------------------ ChannelData


def is_channel_data(data: bytes) -> bool:
    """Whether a datagram starts like ChannelData (first two bits 01: 0x4000..0x7FFF)."""
    return len(data) >= 4 and data[0] & 0xC0 == 0x40


def encode_channel_data(channel: int, data: bytes, *, pad: bool = False) -> bytes:
    """A ChannelData message; ``pad=True`` pads to a multiple of 4 bytes, as stream
    transports (TCP) require and UDP does not."""
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(
            f"channel number {channel:#x} is outside {CHANNEL_MIN:#x}..{CHANNEL_MAX:#x}"
        )
    if len(data) > 0xFFFF:
        raise StunError(f"ChannelData of {len(data)} bytes does not fit 65535")
    out = _CHANNEL_HEADER.pack(channel, len(data)) + data
    if pad:
        out += b"\0" * (-len(data) % 4)
    return out


def decode_channel_data(data: bytes) -> tuple[int, bytes]:
    """(channel, application data) of one ChannelData message (padding ignored).

    :raises StunError: not ChannelData, a reserved channel number, or the length field
        says more bytes than there are.
    """
    if len(data) < 4:
        raise StunError("ChannelData is at least 4 bytes")
    channel, length = _CHANNEL_HEADER.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"channel number {channel:#x} is not a valid ChannelData channel")
    if 4 + length > len(data):
        raise StunError(f"ChannelData says {length} bytes but carries {len(data) - 4}")
    if len(data) - 4 - length > 3:
        raise StunError("ChannelData has more than 3 bytes after its data")
    return channel, bytes(data[4 : 4 + length])


def channel_data_length(header: bytes) -> int:
    """Total bytes (with padding) of the ChannelData message a 4-byte header starts, for
    framing over a stream."""
    if len(header) < 4:
        raise StunError("need the 4-byte ChannelData header")
    channel, length = _CHANNEL_HEADER.unpack_from(header)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunError(f"channel number {channel:#x} is not a valid ChannelData channel")
    return 4 + length + (-length % 4)
