"""PNP (Peer Name Protocol) packets: signed name registrations and lookups (sans-IO).

A PNP server maps a short name (``alice``) to a value (a node's address bytes).  A name
belongs to the first public key that registers it, until the registration expires.
Version 1 of the wire format (all integers big-endian)::

    request
    offset size  field
    0      1     version (1)
    1      1     op: GET 1, PUT 2, DELETE 3
    2      4     request id (echoed in the response)
    6      1     name length n (1..63)
    7      n     name, ASCII [a-z0-9-], no leading or trailing '-'
    -- GET ends here; PUT and DELETE go on: --
    .      33    owner public key (SEC1 compressed P-256 point)
    .      8     timestamp, milliseconds since the Unix epoch (client's clock)
    .      16    nonce (random)
    .      4     TTL, seconds (PUT: asked-for lifetime; DELETE: 0)
    .      2     value length v (PUT: 0..1024; DELETE: 0)
    .      v     value
    end-64 64    ECDSA-P256-SHA256 signature by the owner, raw r || s, over
                 ``b"warpgate pnp v1\\x00"`` + every byte before it

    response
    0      1     version (1)
    1      1     0x80 (response marker)
    2      1     status (see :class:`Status`)
    3      4     request id
    7      8     expiry, milliseconds since the Unix epoch (0 when not applicable)
    15     33    owner public key, or 33 zero bytes
    48     2     value length v (0..1024)
    50     v     value
    .      2     message length m (0..512)
    .      m     message, UTF-8 (human-readable detail of an error)

GET is not signed (anyone may look a name up); responses are not signed (node
addresses carry the node's key, and links authenticate it).  :func:`decode_request` and
:func:`decode_response` raise only :class:`PnpError`; :func:`verify_request` checks the
signature.  Nothing here does I/O; time is passed in.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from warpgate.errors import WarpgateError

__all__ = [
    "KEY_SIZE",
    "MAX_MESSAGE",
    "MAX_NAME",
    "MAX_PACKET",
    "MAX_VALUE",
    "NONCE_SIZE",
    "PNP_VERSION",
    "SIG_SIZE",
    "Op",
    "PnpError",
    "Request",
    "Response",
    "Status",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "make_get",
    "make_signed",
    "normalise_name",
    "peek_request_id",
    "verify_request",
]

PNP_VERSION: Final = 1
KEY_SIZE: Final = 33
NONCE_SIZE: Final = 16
SIG_SIZE: Final = 64
MAX_NAME: Final = 63
MAX_VALUE: Final = 1024
MAX_MESSAGE: Final = 512
RESPONSE_MARK: Final = 0x80
DOMAIN: Final = b"warpgate pnp v1\x00"
NO_KEY: Final = bytes(KEY_SIZE)

_HEAD = struct.Struct(">BBIB")  # version, op, request id, name length
_SIGNED = struct.Struct(">33sQ16sIH")  # owner, timestamp, nonce, ttl, value length
_RESP_HEAD = struct.Struct(">BBBIQ33sH")  # version, mark, status, id, expires, owner, vlen
_U16 = struct.Struct(">H")
_CURVE = ec.SECP256R1()
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# The largest request: header, name, signed fields, value, signature.
MAX_PACKET: Final = _HEAD.size + MAX_NAME + _SIGNED.size + MAX_VALUE + SIG_SIZE


class Op(enum.IntEnum):
    GET = 1
    PUT = 2
    DELETE = 3


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_SIGNATURE = 2
    NAME_TAKEN = 3
    STALE = 4
    REPLAY = 5
    QUOTA = 6
    TOO_LARGE = 7
    MALFORMED = 8
    RATE_LIMITED = 9
    BAD_VERSION = 10
    INTERNAL = 11


class PnpError(WarpgateError, ValueError):
    """A PNP packet is malformed, too large, of another version, or badly signed.

    ``status`` is the response status a server answers with.
    """

    def __init__(self, message: str, status: Status = Status.MALFORMED) -> None:
        super().__init__(message)
        self.status = status


def normalise_name(name: str) -> str:
    """Lowercase ``name`` and check it: 1-63 of ``[a-z0-9-]``, no '-' at either end.

    :raises PnpError: the name is not valid.
    """
    if not isinstance(name, str):
        raise PnpError(f"a name must be a string, not {type(name).__name__}")
    norm = name.strip().lower()
    if not norm.isascii() or not _NAME_RE.match(norm):
        raise PnpError(
            f"invalid name {name!r}: use 1-63 characters of a-z, 0-9 and '-' (not at either end)"
        )
    return norm


@dataclass(frozen=True)
class Request:
    op: Op
    request_id: int
    name: str
    owner: bytes = NO_KEY
    timestamp_ms: int = 0
    nonce: bytes = bytes(NONCE_SIZE)
    ttl: int = 0
    value: bytes = b""
    signature: bytes = b""

    @property
    def signed_part(self) -> bytes:
        """The bytes the signature covers (domain tag included)."""
        return DOMAIN + _encode_unsigned(self)


@dataclass(frozen=True)
class Response:
    status: Status
    request_id: int
    expires_ms: int = 0
    owner: bytes = NO_KEY
    value: bytes = b""
    message: str = ""


def _check_u32(value: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value < 2**32:
        raise PnpError(f"{what} must fit in 32 bits")


def _encode_unsigned(req: Request) -> bytes:
    name = normalise_name(req.name).encode("ascii")
    _check_u32(req.request_id, "request id")
    head = _HEAD.pack(PNP_VERSION, int(req.op), req.request_id, len(name)) + name
    if req.op == Op.GET:
        return head
    if len(req.owner) != KEY_SIZE or len(req.nonce) != NONCE_SIZE:
        raise PnpError("owner key must be 33 bytes and nonce 16 bytes")
    if len(req.value) > MAX_VALUE:
        raise PnpError(f"value is {len(req.value)} bytes, over {MAX_VALUE}", Status.TOO_LARGE)
    _check_u32(req.ttl, "ttl")
    if not 0 <= req.timestamp_ms < 2**64:
        raise PnpError("timestamp out of range")
    return (
        head
        + _SIGNED.pack(req.owner, req.timestamp_ms, req.nonce, req.ttl, len(req.value))
        + (req.value)
    )


def encode_request(req: Request) -> bytes:
    """Serialise ``req`` (already signed for PUT/DELETE)."""
    body = _encode_unsigned(req)
    if req.op == Op.GET:
        return body
    if len(req.signature) != SIG_SIZE:
        raise PnpError("PUT and DELETE need a 64-byte signature")
    return body + req.signature


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_get(name: str, request_id: int) -> Request:
    return Request(Op.GET, request_id, normalise_name(name))


def make_signed(
    op: Op,
    name: str,
    *,
    key: ec.EllipticCurvePrivateKey,
    request_id: int,
    timestamp_ms: int,
    nonce: bytes,
    ttl: int = 0,
    value: bytes = b"",
) -> Request:
    """A PUT or DELETE request signed with ``key``."""
    if op == Op.GET:
        raise PnpError("GET requests are not signed")
    owner = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    unsigned = Request(
        op, request_id, normalise_name(name), owner, timestamp_ms, bytes(nonce), ttl, bytes(value)
    )
    sig = _sign(key, unsigned.signed_part)
    return Request(
        op, request_id, unsigned.name, owner, timestamp_ms, unsigned.nonce, ttl, unsigned.value, sig
    )


def peek_request_id(data: bytes) -> int:
    """The request id of a (possibly malformed) request, 0 if it has none."""
    if len(data) >= 6:
        return int.from_bytes(data[2:6], "big")
    return 0


def decode_request(data: bytes) -> Request:
    """Parse a request.  Checks structure and limits, not the signature.

    :raises PnpError: with status BAD_VERSION, TOO_LARGE or MALFORMED.
    """
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise PnpError("request is too short")
    version, op_byte, request_id, name_len = _HEAD.unpack_from(data)
    if version != PNP_VERSION:
        raise PnpError(f"unsupported PNP version {version}", Status.BAD_VERSION)
    if len(data) > MAX_PACKET:
        raise PnpError(f"request is {len(data)} bytes, over {MAX_PACKET}", Status.TOO_LARGE)
    try:
        op = Op(op_byte)
    except ValueError:
        raise PnpError(f"unknown op {op_byte}") from None
    if not 1 <= name_len <= MAX_NAME:
        raise PnpError("name length out of range")
    pos = _HEAD.size
    raw_name = data[pos : pos + name_len]
    if len(raw_name) != name_len:
        raise PnpError("request is truncated in the name")
    try:
        name = raw_name.decode("ascii")
    except UnicodeDecodeError:
        raise PnpError("name is not ASCII") from None
    if not _NAME_RE.match(name):
        raise PnpError("name has invalid characters (or is not lowercase)")
    pos += name_len
    if op == Op.GET:
        if pos != len(data):
            raise PnpError("trailing bytes after a GET request")
        return Request(op, request_id, name)
    if len(data) < pos + _SIGNED.size:
        raise PnpError("request is truncated in the signed fields")
    owner, ts, nonce, ttl, vlen = _SIGNED.unpack_from(data, pos)
    if owner[0] not in (2, 3):
        raise PnpError("owner is not a compressed P-256 public key")
    if vlen > MAX_VALUE:
        raise PnpError(f"value is {vlen} bytes, over {MAX_VALUE}", Status.TOO_LARGE)
    pos += _SIGNED.size
    if len(data) != pos + vlen + SIG_SIZE:
        raise PnpError("request length does not match its value length")
    value = data[pos : pos + vlen]
    if op == Op.DELETE and (vlen or ttl):
        raise PnpError("a DELETE carries no value and no TTL")
    if op == Op.PUT and ttl == 0:
        raise PnpError("a PUT needs a TTL of at least one second")
    return Request(op, request_id, name, owner, ts, nonce, ttl, value, data[pos + vlen :])


@lru_cache(maxsize=1024)
def _load_key(data: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, data)
    except ValueError:
        return None


def verify_request(req: Request) -> None:
    """Check the owner's signature of a PUT or DELETE.

    :raises PnpError: with status BAD_SIGNATURE.
    """
    if req.op == Op.GET:
        return
    key = _load_key(bytes(req.owner))
    if key is None:
        raise PnpError("owner key is not a valid P-256 point", Status.BAD_SIGNATURE)
    if len(req.signature) != SIG_SIZE:
        raise PnpError("signature must be 64 bytes", Status.BAD_SIGNATURE)
    r = int.from_bytes(req.signature[:32], "big")
    s = int.from_bytes(req.signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), req.signed_part, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise PnpError("signature does not match the owner key", Status.BAD_SIGNATURE) from None


def encode_response(resp: Response) -> bytes:
    _check_u32(resp.request_id, "request id")
    if len(resp.value) > MAX_VALUE:
        raise PnpError("response value too large", Status.TOO_LARGE)
    if len(resp.owner) != KEY_SIZE:
        raise PnpError("owner key must be 33 bytes")
    msg = resp.message.encode("utf-8")[:MAX_MESSAGE]
    msg = msg.decode("utf-8", "ignore").encode("utf-8")  # never cut a character in half
    return (
        _RESP_HEAD.pack(
            PNP_VERSION,
            RESPONSE_MARK,
            int(resp.status),
            resp.request_id,
            resp.expires_ms,
            resp.owner,
            len(resp.value),
        )
        + resp.value
        + _U16.pack(len(msg))
        + msg
    )


def decode_response(data: bytes) -> Response:
    """Parse a response.

    :raises PnpError: the bytes are not a valid version-1 response.
    """
    data = bytes(data)
    if len(data) < _RESP_HEAD.size:
        raise PnpError("response is too short")
    version, mark, status_byte, request_id, expires, owner, vlen = _RESP_HEAD.unpack_from(data)
    if version != PNP_VERSION:
        raise PnpError(f"unsupported PNP version {version}", Status.BAD_VERSION)
    if mark != RESPONSE_MARK:
        raise PnpError("not a response")
    try:
        status = Status(status_byte)
    except ValueError:
        raise PnpError(f"unknown status {status_byte}") from None
    if vlen > MAX_VALUE:
        raise PnpError("response value too large", Status.TOO_LARGE)
    pos = _RESP_HEAD.size
    value = data[pos : pos + vlen]
    pos += vlen
    if len(value) != vlen or len(data) < pos + 2:
        raise PnpError("response is truncated")
    (mlen,) = _U16.unpack_from(data, pos)
    pos += 2
    if mlen > MAX_MESSAGE or len(data) != pos + mlen:
        raise PnpError("response message length is wrong")
    try:
        message = data[pos:].decode("utf-8")
    except UnicodeDecodeError:
        raise PnpError("response message is not UTF-8") from None
    return Response(status, request_id, expires, owner, value, message)
