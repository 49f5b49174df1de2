"""STUN messages (RFC 8489, with the RFC 5780 NAT-behaviour attributes), sans-IO.

Bytes in, :class:`StunMessage` out, and back.  Nothing here does I/O or reads a clock:
the retransmission schedule is a pure function of the RTO the caller picks.

* :func:`encode` builds a message, appending MESSAGE-INTEGRITY (HMAC-SHA1),
  optionally MESSAGE-INTEGRITY-SHA256, and FINGERPRINT in the order RFC 8489 requires.
* :func:`decode` parses one complete message and raises only :class:`StunError` for
  anything malformed: a wrong length, a missing magic cookie (RFC 3489 messages are not
  understood), a bad attribute, a FINGERPRINT that does not match.  Unknown
  comprehension-optional attributes are kept as raw bytes; unknown
  comprehension-required ones are listed in :attr:`StunMessage.unknown_required` so
  the caller can answer 420 or drop the message, as RFC 8489 section 6.3 says.
* :func:`verify_integrity` checks MESSAGE-INTEGRITY(-SHA256) against a key made by
  :func:`short_term_key` or :func:`long_term_key`.
* :func:`is_stun` tells a STUN datagram from other traffic on a shared socket.

Attribute values are typed: addresses are ``(ip, port)`` tuples (XOR-ed on the wire
where the type says so), text attributes are ``str``, ERROR-CODE is :class:`ErrorCode`,
CHANGE-REQUEST is :class:`ChangeRequest`, RESPONSE-PORT an ``int``, UNKNOWN-ATTRIBUTES a
tuple of ints, and every other attribute raw ``bytes``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import stringprep
import struct
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, NamedTuple

from warpgate.errors import WarpgateError

__all__ = [
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "Attr",
    "ChangeRequest",
    "ErrorCode",
    "StunClass",
    "StunError",
    "StunMessage",
    "StunMethod",
    "decode",
    "encode",
    "is_stun",
    "long_term_key",
    "message_length",
    "new_transaction_id",
    "retransmission_schedule",
    "saslprep",
    "short_term_key",
    "verify_fingerprint",
    "verify_integrity",
]

MAGIC_COOKIE: Final = 0x2112A442
_COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_SIZE: Final = 20
FINGERPRINT_XOR: Final = 0x5354554E
_MAX_MESSAGE: Final = 65535 + HEADER_SIZE

_FAMILY_V4: Final = 0x01
_FAMILY_V6: Final = 0x02


class StunError(WarpgateError, ValueError):
    """STUN bytes are malformed, or a message cannot be encoded as asked."""


class StunClass(IntEnum):
    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class StunMethod(IntEnum):
    BINDING = 0x001


class Attr(IntEnum):
    """Attribute types this codec understands (RFC 8489 section 18.3, RFC 5780)."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    # TURN (RFC 8656, RFC 6062): typed helpers live in warpgate.sansio.turn; the XOR
    # addresses decode to (ip, port) here, the other values stay raw bytes.
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    RESERVATION_TOKEN = 0x0022
    CONNECTION_ID = 0x002A
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    ICMP = 0x8004
    # ICE (RFC 8445): known so they are not reported as unknown; values stay raw bytes.
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


_ADDRESS_ATTRS: Final = frozenset(
    {Attr.MAPPED_ADDRESS, Attr.ALTERNATE_SERVER, Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS}
)
_XOR_ADDRESS_ATTRS: Final = frozenset(
    {Attr.XOR_MAPPED_ADDRESS, Attr.XOR_PEER_ADDRESS, Attr.XOR_RELAYED_ADDRESS}
)
# Text attributes and their RFC limits in bytes (USERNAME < 513, REALM/NONCE/SOFTWARE < 763).
_TEXT_ATTRS: Final[dict[int, int]] = {
    Attr.USERNAME: 513,
    Attr.REALM: 763,
    Attr.NONCE: 763,
    Attr.SOFTWARE: 763,
}
_KNOWN: Final = frozenset(int(a) for a in Attr)
# Computed by encode() from its arguments; values given in a message are not re-encoded.
_COMPUTED: Final = frozenset(
    {Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT}
)


class ErrorCode(NamedTuple):
    """ERROR-CODE: a code 300..699 and a reason phrase."""

    code: int
    reason: str = ""


class ChangeRequest(NamedTuple):
    """CHANGE-REQUEST (RFC 5780): ask the server to answer from its other IP and/or port."""

    change_ip: bool = False
    change_port: bool = False


Address = tuple[str, int]
AttrValue = bytes | str | int | tuple[str, int] | ErrorCode | ChangeRequest | tuple[int, ...]


def new_transaction_id() -> bytes:
    """96 random bits, as RFC 8489 asks (a cryptographically random source)."""
    return secrets.token_bytes(12)


@dataclass(frozen=True)
class StunMessage:
    """One STUN message.

    ``attributes`` keeps wire order; an attribute type may repeat.  A decoded message
    includes MESSAGE-INTEGRITY (bytes), MESSAGE-INTEGRITY-SHA256 (bytes) and FINGERPRINT
    (int) as received; :func:`encode` ignores those three and computes fresh ones.
    """

    method: int
    cls: StunClass
    transaction_id: bytes = field(default_factory=new_transaction_id)
    attributes: tuple[tuple[int, AttrValue], ...] = ()
    #: Comprehension-required attribute types (< 0x8000) this codec does not know.
    unknown_required: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.transaction_id) != 12:
            raise StunError("a STUN transaction id is 12 bytes")
        if not 0 <= self.method < 0x1000:
            raise StunError(f"STUN method {self.method:#x} does not fit 12 bits")

    def get(self, kind: int) -> AttrValue | None:
        """The first value of attribute ``kind``, or None."""
        for k, v in self.attributes:
            if k == kind:
                return v
        return None

    def _address(self, kind: int) -> Address | None:
        value = self.get(kind)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return (value[0], int(value[1]))
        return None

    @property
    def xor_mapped_address(self) -> Address | None:
        return self._address(Attr.XOR_MAPPED_ADDRESS)

    @property
    def mapped_address(self) -> Address | None:
        """XOR-MAPPED-ADDRESS if present, else the classic MAPPED-ADDRESS."""
        return self.xor_mapped_address or self._address(Attr.MAPPED_ADDRESS)

    @property
    def other_address(self) -> Address | None:
        return self._address(Attr.OTHER_ADDRESS)

    @property
    def response_origin(self) -> Address | None:
        return self._address(Attr.RESPONSE_ORIGIN)

    @property
    def error_code(self) -> ErrorCode | None:
        value = self.get(Attr.ERROR_CODE)
        return value if isinstance(value, ErrorCode) else None


# ------------------------------------------------------------------ message type


def _message_type(method: int, cls: int) -> int:
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def _split_type(kind: int) -> tuple[int, StunClass]:
    method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2)
    cls = ((kind >> 4) & 0b01) | ((kind >> 7) & 0b10)
    return method, StunClass(cls)


# ------------------------------------------------------------------ attributes


def _pack_address(value: object, xor: bool, tid: bytes) -> bytes:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise StunError(f"an address attribute takes (ip, port), not {value!r}")
    host, port = value
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError as exc:
        raise StunError(f"not an IP address: {host!r}") from exc
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise StunError(f"not a port: {port!r}")
    raw = ip.packed
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _COOKIE_BYTES + tid, strict=False))
    family = _FAMILY_V4 if ip.version == 4 else _FAMILY_V6
    return struct.pack("!BBH", 0, family, port) + raw


def _unpack_address(value: bytes, xor: bool, tid: bytes) -> Address:
    if len(value) < 4:
        raise StunError("address attribute too short")
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    raw = value[4:]
    if family == _FAMILY_V4 and len(raw) == 4:
        pass
    elif family == _FAMILY_V6 and len(raw) == 16:
        pass
    else:
        raise StunError(f"address attribute: family {family:#x} with {len(raw)} address bytes")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _COOKIE_BYTES + tid, strict=False))
    ip = ipaddress.ip_address(raw)
    return str(ip), port


def _pack_value(kind: int, value: AttrValue, tid: bytes) -> bytes:
    if kind in _ADDRESS_ATTRS or kind in _XOR_ADDRESS_ATTRS:
        return _pack_address(value, kind in _XOR_ADDRESS_ATTRS, tid)
    if kind in _TEXT_ATTRS:
        raw = value.encode() if isinstance(value, str) else value
        if not isinstance(raw, bytes):
            raise StunError(f"attribute {kind:#06x} takes text, not {value!r}")
        if len(raw) >= _TEXT_ATTRS[kind]:
            raise StunError(f"attribute {kind:#06x} is {len(raw)} bytes, too long")
        return raw
    if kind == Attr.ERROR_CODE:
        if not isinstance(value, ErrorCode):
            raise StunError(f"ERROR-CODE takes an ErrorCode, not {value!r}")
        if not 300 <= value.code <= 699:
            raise StunError(f"ERROR-CODE {value.code} is outside 300..699")
        reason = value.reason.encode()
        if len(reason) >= 763:
            raise StunError("ERROR-CODE reason is too long")
        return struct.pack("!HBB", 0, value.code // 100, value.code % 100) + reason
    if kind == Attr.CHANGE_REQUEST:
        if not isinstance(value, ChangeRequest):
            raise StunError(f"CHANGE-REQUEST takes a ChangeRequest, not {value!r}")
        return struct.pack(
            "!I", (0x4 if value.change_ip else 0) | (0x2 if value.change_port else 0)
        )
    if kind == Attr.RESPONSE_PORT:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise StunError(f"RESPONSE-PORT takes a port number, not {value!r}")
        return struct.pack("!HH", value, 0)
    if kind == Attr.UNKNOWN_ATTRIBUTES:
        if not isinstance(value, tuple) or not all(
            isinstance(t, int) and 0 <= t <= 0xFFFF for t in value
        ):
            raise StunError(f"UNKNOWN-ATTRIBUTES takes a tuple of types, not {value!r}")
        return struct.pack(f"!{len(value)}H", *value)
    if isinstance(value, bytes):
        return value
    raise StunError(f"attribute {kind:#06x} takes raw bytes, not {value!r}")


def _unpack_value(kind: int, value: bytes, tid: bytes) -> AttrValue:
    if kind in _ADDRESS_ATTRS or kind in _XOR_ADDRESS_ATTRS:
        return _unpack_address(value, kind in _XOR_ADDRESS_ATTRS, tid)
    if kind in _TEXT_ATTRS:
        if len(value) >= _TEXT_ATTRS[kind]:
            raise StunError(f"attribute {kind:#06x} is {len(value)} bytes, too long")
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise StunError(f"attribute {kind:#06x} is not UTF-8") from exc
    if kind == Attr.ERROR_CODE:
        if len(value) < 4:
            raise StunError("ERROR-CODE too short")
        cls, number = value[2] & 0x07, value[3]
        if not 3 <= cls <= 6 or number > 99:
            raise StunError(f"ERROR-CODE class {cls} number {number} is invalid")
        try:
            reason = value[4:].decode()
        except UnicodeDecodeError as exc:
            raise StunError("ERROR-CODE reason is not UTF-8") from exc
        return ErrorCode(cls * 100 + number, reason)
    if kind == Attr.CHANGE_REQUEST:
        if len(value) != 4:
            raise StunError("CHANGE-REQUEST is 4 bytes")
        flags = struct.unpack("!I", value)[0]
        return ChangeRequest(bool(flags & 0x4), bool(flags & 0x2))
    if kind == Attr.RESPONSE_PORT:
        if len(value) != 4:
            raise StunError("RESPONSE-PORT is 4 bytes")
        return int(struct.unpack_from("!H", value)[0])
    if kind == Attr.UNKNOWN_ATTRIBUTES:
        if len(value) % 2:
            raise StunError("UNKNOWN-ATTRIBUTES has an odd length")
        return struct.unpack(f"!{len(value) // 2}H", value)
    if kind == Attr.MESSAGE_INTEGRITY and len(value) != 20:
        raise StunError("MESSAGE-INTEGRITY is 20 bytes")
    if kind == Attr.MESSAGE_INTEGRITY_SHA256 and not (
        16 <= len(value) <= 32 and len(value) % 4 == 0
    ):
        raise StunError("MESSAGE-INTEGRITY-SHA256 is 16..32 bytes, a multiple of 4")
    if kind == Attr.FINGERPRINT:
        if len(value) != 4:
            raise StunError("FINGERPRINT is 4 bytes")
        return int(struct.unpack("!I", value)[0])
    return bytes(value)


def _tlv(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise StunError(f"attribute {kind:#06x} value is too long")
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _iter_tlvs(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, type, value) of each attribute in a whole message; StunError if ragged."""
    pos = HEADER_SIZE
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise StunError("truncated attribute header")
        kind, length = struct.unpack_from("!HH", data, pos)
        value_end = pos + 4 + length
        padded_end = value_end + (-length % 4)
        if padded_end > end:
            raise StunError(f"attribute {kind:#06x} runs past the end of the message")
        yield pos, kind, data[pos + 4 : value_end]
        pos = padded_end


# ------------------------------------------------------------------ hashes and keys


def _crc(data: bytes) -> int:
    return (zlib.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _with_length(data: bytes, length: int) -> bytes:
    """``data`` (a message prefix) with its header length field set to ``length``."""
    return data[:2] + struct.pack("!H", length) + data[4:]


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013), the password preparation of RFC 5389 and RFC 5769.

    For ASCII passwords it is the identity, as is RFC 8489's OpaqueString.
    Raises :class:`StunError` for prohibited characters.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    for ch in prepared:
        if any(check(ch) for check in prohibited):
            raise StunError(f"character U+{ord(ch):04X} is not allowed in a STUN password")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared) or not (
            stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])
        ):
            raise StunError("a STUN password breaks the bidirectional text rules")
    return prepared


def short_term_key(password: str) -> bytes:
    """The MESSAGE-INTEGRITY key of a short-term credential: the prepared password."""
    return saslprep(password).encode()


def long_term_key(username: str, realm: str, password: str, *, algorithm: str = "md5") -> bytes:
    """The key of a long-term credential: MD5 (or, with PASSWORD-ALGORITHM, SHA-256) of
    ``username:realm:password`` (the password SASLprep'd)."""
    material = f"{username}:{realm}:".encode() + saslprep(password).encode()
    if algorithm == "md5":
        return hashlib.md5(material, usedforsecurity=False).digest()
    if algorithm == "sha256":
        return hashlib.sha256(material).digest()
    raise StunError(f"unknown STUN password algorithm {algorithm!r}")


# ------------------------------------------------------------------ encode / decode


def encode(
    msg: StunMessage,
    *,
    integrity_key: bytes | None = None,
    integrity_sha256: bool = False,
    fingerprint: bool = True,
) -> bytes:
    """The wire form of ``msg``.

    With ``integrity_key``, MESSAGE-INTEGRITY (HMAC-SHA1) is appended, and with
    ``integrity_sha256`` also MESSAGE-INTEGRITY-SHA256; then FINGERPRINT unless
    ``fingerprint=False``.  Attributes are padded with zero bytes.
    """
    body = b"".join(
        _tlv(kind, _pack_value(kind, value, msg.transaction_id))
        for kind, value in msg.attributes
        if kind not in _COMPUTED
    )
    header = struct.pack("!HHI", _message_type(msg.method, msg.cls), 0, MAGIC_COOKIE)
    data = header + msg.transaction_id + body
    if integrity_key is not None:
        # The HMAC covers the header with a length that already counts its own attribute.
        mac = hmac.new(integrity_key, _with_length(data, len(data) - 20 + 24), hashlib.sha1)
        data += _tlv(Attr.MESSAGE_INTEGRITY, mac.digest())
        if integrity_sha256:
            mac = hmac.new(integrity_key, _with_length(data, len(data) - 20 + 36), hashlib.sha256)
            data += _tlv(Attr.MESSAGE_INTEGRITY_SHA256, mac.digest())
    elif integrity_sha256:
        raise StunError("MESSAGE-INTEGRITY-SHA256 needs an integrity_key")
    if fingerprint:
        crc = _crc(_with_length(data, len(data) - 20 + 8))
        data += _tlv(Attr.FINGERPRINT, struct.pack("!I", crc))
    if len(data) - HEADER_SIZE > 0xFFFF:
        raise StunError("STUN message is too long")
    return _with_length(data, len(data) - HEADER_SIZE)


def _check_header(data: bytes) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise StunError(f"STUN data must be bytes, not {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise StunError(f"{len(data)} bytes is shorter than a STUN header")
    if data[0] & 0xC0:
        raise StunError("the first two bits of a STUN message are zero")
    if data[4:8] != _COOKIE_BYTES:
        raise StunError("no STUN magic cookie (an RFC 3489 message?)")
    length = struct.unpack_from("!H", data, 2)[0]
    if length % 4:
        raise StunError(f"STUN message length {length} is not a multiple of 4")
    if len(data) != HEADER_SIZE + length:
        raise StunError(
            f"STUN header says {HEADER_SIZE + length} bytes but the message has {len(data)}"
        )


def decode(data: bytes) -> StunMessage:
    """Parse one whole STUN message; raise :class:`StunError` if it is malformed.

    A FINGERPRINT, if present, must be last and must match.  Attributes after
    MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored,
    as RFC 8489 section 14.5 says.
    """
    _check_header(data)
    data = bytes(data)
    method, cls = _split_type(struct.unpack_from("!H", data)[0])
    tid = data[8:20]
    attributes: list[tuple[int, AttrValue]] = []
    unknown: list[int] = []
    seen_integrity = seen_fingerprint = False
    for offset, kind, value in _iter_tlvs(data):
        if seen_fingerprint:
            raise StunError("FINGERPRINT is not the last attribute")
        if kind == Attr.FINGERPRINT:
            seen_fingerprint = True
            if len(value) == 4:
                expected = _crc(_with_length(data[:offset], offset + 8 - HEADER_SIZE))
                if struct.unpack("!I", value)[0] != expected:
                    raise StunError("FINGERPRINT does not match")
        elif seen_integrity and kind != Attr.MESSAGE_INTEGRITY_SHA256:
            continue
        elif kind in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256):
            seen_integrity = True
        if kind in _KNOWN:
            attributes.append((Attr(kind), _unpack_value(kind, value, tid)))
        else:
            attributes.append((kind, bytes(value)))
            if kind < 0x8000:
                unknown.append(kind)
    return StunMessage(method, cls, tid, tuple(attributes), tuple(unknown))


def _integrity_attr(data: bytes, kind: int) -> tuple[int, bytes] | None:
    for offset, k, value in _iter_tlvs(data):
        if k == kind:
            return offset, value
    return None


def verify_integrity(data: bytes, key: bytes) -> bool:
    """Whether ``data`` carries a MESSAGE-INTEGRITY-SHA256 (checked if present) or else a
    MESSAGE-INTEGRITY that matches ``key``.  False for messages without one, and for
    malformed bytes (never raises for bad input)."""
    try:
        _check_header(data)
        data = bytes(data)
        for kind, digest, sizes in (
            (Attr.MESSAGE_INTEGRITY_SHA256, hashlib.sha256, (16, 20, 24, 28, 32)),
            (Attr.MESSAGE_INTEGRITY, hashlib.sha1, (20,)),
        ):
            found = _integrity_attr(data, kind)
            if found is None:
                continue
            offset, value = found
            if len(value) not in sizes:
                return False
            signed = _with_length(data[:offset], offset + 4 + len(value) - HEADER_SIZE)
            mac = hmac.new(key, signed, digest).digest()[: len(value)]
            return hmac.compare_digest(mac, value)
    except StunError:
        return False
    return False


def verify_fingerprint(data: bytes) -> bool:
    """Whether ``data`` ends with a FINGERPRINT that matches (never raises)."""
    try:
        _check_header(data)
        data = bytes(data)
        last = None
        for offset, kind, value in _iter_tlvs(data):
            last = (offset, kind, value)
    except StunError:
        return False
    if last is None or last[1] != Attr.FINGERPRINT or len(last[2]) != 4:
        return False
    offset = last[0]
    expected = _crc(_with_length(data[:offset], offset + 8 - HEADER_SIZE))
    return struct.unpack("!I", last[2])[0] == expected


def is_stun(data: bytes) -> bool:
    """A cheap test to demultiplex one datagram: the top two bits are zero, the magic
    cookie is there, and the header length matches the datagram."""
    return (
        len(data) >= HEADER_SIZE
        and not data[0] & 0xC0
        and data[4:8] == _COOKIE_BYTES
        and len(data) == HEADER_SIZE + ((data[2] << 8) | data[3])
        and not data[3] & 0x03
    )


def message_length(header: bytes) -> int:
    """The total size of the message a 20-byte header starts (for stream framing, as
    STUN over TCP is framed by its own header).  Raises :class:`StunError` for a header
    that is not STUN."""
    if len(header) < HEADER_SIZE:
        raise StunError("need the 20-byte header")
    if header[0] & 0xC0 or header[4:8] != _COOKIE_BYTES:
        raise StunError("not a STUN header")
    length = (header[2] << 8) | header[3]
    if length % 4:
        raise StunError(f"STUN message length {length} is not a multiple of 4")
    return HEADER_SIZE + length


def retransmission_schedule(
    rto: float = 0.5, rc: int = 7, rm: int = 16
) -> tuple[tuple[float, ...], float]:
    """RFC 8489 section 6.2.1 over UDP: the send times of the ``rc`` transmissions
    (RTO doubling after each) relative to the first, and when the transaction fails.

    The defaults give sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s and failure at 39.5 s.
    """
    if rto <= 0 or rc < 1 or rm < 1:
        raise StunError("the STUN retransmission parameters must be positive")
    sends = []
    at, interval = 0.0, rto
    for _ in range(rc):
        sends.append(at)
        at += interval
        interval *= 2
    return tuple(sends), sends[-1] + rm * rto
