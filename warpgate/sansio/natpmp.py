"""NAT-PMP (RFC 6886) and PCP (RFC 6887) messages, sans-IO.

Bytes in, dataclasses out, and back; nothing here does I/O or reads a clock.

* NAT-PMP (version 0): :func:`encode_natpmp_external_request`,
  :func:`encode_natpmp_map_request`, and :func:`decode_natpmp_response` for both answers
  (:class:`NatPmpExternalResponse`, :class:`NatPmpMapResponse`).
* PCP (version 2): :func:`encode_pcp_map_request` builds a MAP request (12-byte nonce,
  lifetime, client address); :func:`decode_pcp_response` parses the answer into
  :class:`PcpMapResponse`.  Options after the MAP payload are skipped.
* :func:`decode_response` tells the two apart by the version byte: a NAT-PMP gateway
  answers a PCP request with a NAT-PMP "unsupported version" message and a PCP server
  answers NAT-PMP with a PCP one, which is how a client falls back.

Decoders raise only :class:`NatPmpError` for malformed input.  A well-formed answer with
a non-zero result code is returned as is: the caller decides, :func:`result_name` names it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from warpgate.errors import WarpgateError

NATPMP_PORT: Final = 5351
NATPMP_VERSION: Final = 0
PCP_VERSION: Final = 2
PCP_MAX_SIZE: Final = 1100  # RFC 6887 section 7
PCP_NONCE_SIZE: Final = 12

# RFC 6886 section 3.1: 250 ms, doubling, nine attempts at most.
NATPMP_INITIAL_RTO: Final = 0.25
NATPMP_MAX_ATTEMPTS: Final = 9


class NatPmpError(WarpgateError, ValueError):
    """NAT-PMP / PCP bytes are malformed, or a request cannot be encoded as asked."""


class NatPmpOp(IntEnum):
    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class NatPmpResult(IntEnum):
    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


class PcpOp(IntEnum):
    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class PcpResult(IntEnum):
    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


#: IANA protocol numbers PCP uses.
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
_PROTO_NUMBERS = {"udp": PROTO_UDP, "tcp": PROTO_TCP}


@dataclass(frozen=True)
class NatPmpExternalResponse:
    result: int
    epoch: int  # seconds since the gateway's port-mapping table was (re)initialised
    external_ip: ipaddress.IPv4Address


@dataclass(frozen=True)
class NatPmpMapResponse:
    protocol: str  # "udp" / "tcp"
    result: int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


@dataclass(frozen=True)
class NatPmpVersionResponse:
    """A short NAT-PMP answer carrying only a result code (e.g. unsupported version)."""

    opcode: int
    result: int
    epoch: int


@dataclass(frozen=True)
class PcpMapResponse:
    result: int
    lifetime: int
    epoch: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PcpErrorResponse:
    """A PCP answer to something other than MAP, or one too short to carry MAP data
    (servers may answer errors with the header only)."""

    opcode: int
    result: int
    lifetime: int
    epoch: int


NatPmpResponse = NatPmpExternalResponse | NatPmpMapResponse | NatPmpVersionResponse
PcpResponse = PcpMapResponse | PcpErrorResponse


def result_name(version: int, code: int) -> str:
    """``"NOT_AUTHORIZED"`` etc. for a result code of NAT-PMP (0) or PCP (2)."""
    enum: type[IntEnum] = NatPmpResult if version == NATPMP_VERSION else PcpResult
    try:
        return enum(code).name
    except ValueError:
        return f"result {code}"


def _proto_op(protocol: str) -> NatPmpOp:
    try:
        return {"udp": NatPmpOp.MAP_UDP, "tcp": NatPmpOp.MAP_TCP}[protocol.lower()]
    except KeyError:
        raise NatPmpError(f"protocol must be 'udp' or 'tcp', not {protocol!r}") from None


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise NatPmpError(f"{name} must be 0..65535, not {value}")


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise NatPmpError(f"{name} must be 0..2**32-1, not {value}")


# --------------------------------------------------------------------------- NAT-PMP


def encode_natpmp_external_request() -> bytes:
    """RFC 6886 section 3.2: version 0, opcode 0."""
    return bytes((NATPMP_VERSION, NatPmpOp.EXTERNAL_ADDRESS))


def encode_natpmp_map_request(
    protocol: str, internal_port: int, external_port: int, lifetime: int
) -> bytes:
    """RFC 6886 section 3.3.  ``lifetime=0`` (with ``external_port=0``) deletes a mapping."""
    op = _proto_op(protocol)
    _check_u16("internal_port", internal_port)
    _check_u16("external_port", external_port)
    _check_u32("lifetime", lifetime)
    if internal_port == 0:
        raise NatPmpError("internal_port 0 is reserved (it means: every mapping)")
    return struct.pack("!BBHHHI", NATPMP_VERSION, op, 0, internal_port, external_port, lifetime)


def decode_natpmp_response(data: bytes) -> NatPmpResponse:
    """Parse a NAT-PMP answer (opcode 128 + request opcode)."""
    if len(data) < 8:
        raise NatPmpError(f"NAT-PMP response too short ({len(data)} bytes)")
    version, opcode, result, epoch = struct.unpack_from("!BBHI", data)
    if version != NATPMP_VERSION:
        raise NatPmpError(f"not a NAT-PMP response (version {version})")
    if opcode < 128:
        raise NatPmpError(f"NAT-PMP opcode {opcode} is a request, not a response")
    op = opcode - 128
    if result != NatPmpResult.SUCCESS and len(data) < 12:
        return NatPmpVersionResponse(op, result, epoch)
    if op == NatPmpOp.EXTERNAL_ADDRESS:
        if len(data) < 12:
            raise NatPmpError(f"NAT-PMP external address response too short ({len(data)})")
        return NatPmpExternalResponse(result, epoch, ipaddress.IPv4Address(data[8:12]))
    if op in (NatPmpOp.MAP_UDP, NatPmpOp.MAP_TCP):
        if len(data) < 16:
            raise NatPmpError(f"NAT-PMP map response too short ({len(data)} bytes)")
        internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
        protocol = "udp" if op == NatPmpOp.MAP_UDP else "tcp"
        return NatPmpMapResponse(protocol, result, epoch, internal, external, lifetime)
    if result != NatPmpResult.SUCCESS:
        return NatPmpVersionResponse(op, result, epoch)
    raise NatPmpError(f"unknown NAT-PMP response opcode {opcode}")


def encode_natpmp_external_response(
    result: int, epoch: int, external_ip: ipaddress.IPv4Address | str
) -> bytes:
    """Server side (used by tests and fakes)."""
    ip = ipaddress.IPv4Address(external_ip)
    return struct.pack("!BBHI", NATPMP_VERSION, 128, result, epoch) + ip.packed


def encode_natpmp_map_response(
    protocol: str, result: int, epoch: int, internal_port: int, external_port: int, lifetime: int
) -> bytes:
    """Server side (used by tests and fakes)."""
    op = _proto_op(protocol)
    return struct.pack(
        "!BBHIHHI", NATPMP_VERSION, 128 + op, result, epoch, internal_port, external_port, lifetime
    )


# --------------------------------------------------------------------------- PCP


def _ip16(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> bytes:
    """PCP carries every address in 16 bytes, IPv4 as ::ffff:a.b.c.d."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + addr.packed).packed
    return addr.packed


def _from_ip16(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    v6 = ipaddress.IPv6Address(raw)
    return v6.ipv4_mapped or v6


def encode_pcp_map_request(
    *,
    nonce: bytes,
    protocol: str | int,
    internal_port: int,
    lifetime: int,
    client_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
    external_port: int = 0,
    external_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str = "0.0.0.0",
) -> bytes:
    """RFC 6887 sections 7.1 and 11.1: a 24-byte header and a 36-byte MAP payload.

    ``client_ip`` is the source address the request leaves from (the server answers
    ADDRESS_MISMATCH when a NAT in between rewrites it).  ``lifetime=0`` deletes.
    """
    if len(nonce) != PCP_NONCE_SIZE:
        raise NatPmpError(f"a PCP nonce is {PCP_NONCE_SIZE} bytes, not {len(nonce)}")
    proto = _PROTO_NUMBERS.get(protocol.lower(), -1) if isinstance(protocol, str) else protocol
    if not 0 <= proto <= 255:
        raise NatPmpError(f"unknown protocol {protocol!r}")
    _check_u16("internal_port", internal_port)
    _check_u16("external_port", external_port)
    _check_u32("lifetime", lifetime)
    if internal_port == 0 and proto != 0:
        raise NatPmpError("internal_port 0 maps every port; only with protocol 0")
    header = struct.pack("!BBHI", PCP_VERSION, PcpOp.MAP, 0, lifetime) + _ip16(client_ip)
    payload = (
        nonce + struct.pack("!B3xHH", proto, internal_port, external_port) + _ip16(external_ip)
    )
    return header + payload


def decode_pcp_response(data: bytes) -> PcpResponse:
    """Parse a PCP response; the MAP payload when there is one."""
    if len(data) < 24:
        raise NatPmpError(f"PCP response too short ({len(data)} bytes)")
    if len(data) > PCP_MAX_SIZE or len(data) % 4:
        raise NatPmpError(f"PCP message length {len(data)} is invalid")
    version, r_op, _reserved, result, lifetime, epoch = struct.unpack_from("!BBBBII", data)
    if version != PCP_VERSION:
        raise NatPmpError(f"not a PCP response (version {version})")
    if not r_op & 0x80:
        raise NatPmpError("PCP message is a request, not a response")
    op = r_op & 0x7F
    if op == PcpOp.MAP and len(data) >= 60:
        nonce = bytes(data[24:36])
        proto, internal, external = struct.unpack_from("!B3xHH", data, 36)
        ext_ip = _from_ip16(bytes(data[44:60]))
        return PcpMapResponse(result, lifetime, epoch, nonce, proto, internal, external, ext_ip)
    if op == PcpOp.MAP and result == PcpResult.SUCCESS:
        raise NatPmpError(f"PCP MAP success response too short ({len(data)} bytes)")
    return PcpErrorResponse(op, result, lifetime, epoch)


def encode_pcp_map_response(
    *,
    result: int,
    lifetime: int,
    epoch: int,
    nonce: bytes,
    protocol: int,
    internal_port: int,
    external_port: int,
    external_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
) -> bytes:
    """Server side (used by tests and fakes)."""
    header = struct.pack("!BBBBII", PCP_VERSION, 0x80 | PcpOp.MAP, 0, result, lifetime, epoch)
    payload = (
        nonce + struct.pack("!B3xHH", protocol, internal_port, external_port) + _ip16(external_ip)
    )
    return header + b"\x00" * 12 + payload


def decode_response(data: bytes) -> NatPmpResponse | PcpResponse:
    """Dispatch on the version byte."""
    if not data:
        raise NatPmpError("empty datagram")
    if data[0] == NATPMP_VERSION:
        return decode_natpmp_response(data)
    if data[0] == PCP_VERSION:
        return decode_pcp_response(data)
    raise NatPmpError(f"unknown NAT-PMP/PCP version {data[0]}")


def retransmit_schedule(
    initial: float = NATPMP_INITIAL_RTO, attempts: int = NATPMP_MAX_ATTEMPTS
) -> list[float]:
    """Waits after each send (RFC 6886 section 3.1: 250 ms, doubling)."""
    return [initial * (2**i) for i in range(attempts)]
