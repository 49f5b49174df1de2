"""The node address codec (sans-IO).

A node address is what one node hands to another out of band (a file, a QR code, a
name record) so the other can connect: the node's public key (to authenticate the link),
its machine id (for stable port derivation), its network interfaces with whatever is
known about the NAT in front of each, and hints naming the servers through which it can
be reached (signal broker, relay, name server).

Binary layout (version 1, all integers big-endian; full description in ``docs/address.md``)::

    offset size  field
    0      2     magic b"WG"
    2      1     version (1)
    3      33    public key (SEC1 compressed EC point)
    36     16    machine id
    52     ...   records: type u8, length u16, value

Record types known to version 1 are ``0x01`` (interface) and ``0x02`` (hint).  Records
appear in non-decreasing type order.  Unknown record types are skipped, so a later
version can add records that this decoder ignores; type ``0x00`` is reserved and
rejected.  Decoding never raises anything but :class:`~warpgate.errors.AddressError`.

The text form is ``"wg1"`` followed by the lowercase RFC 4648 base32 encoding, without
padding, of the binary form plus its CRC-32 (4 bytes, big-endian), so that copying
mistakes are caught instead of producing a subtly different address.

Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

from warpgate.errors import AddressError

__all__ = [
    "ADDRESS_VERSION",
    "MAX_ADDRESS_SIZE",
    "MAX_HINTS",
    "MAX_HINT_BYTES",
    "MAX_INTERFACES",
    "SUPPORTED_VERSIONS",
    "TEXT_PREFIX",
    "Hint",
    "HintKind",
    "InterfaceAddress",
    "NatType",
    "NodeAddress",
    "PortAllocation",
    "decode_address",
    "encode_address",
    "is_text_address",
    "parse_address",
]

ADDRESS_VERSION: Final = 1
"""The version this build writes."""

SUPPORTED_VERSIONS: Final = (1,)
"""The versions this build reads."""

MAX_ADDRESS_SIZE: Final = 1024
"""Largest binary address, in bytes.  ``decode`` rejects longer input before parsing."""

MAX_INTERFACES: Final = 16
MAX_HINTS: Final = 8
MAX_HINT_BYTES: Final = 255
"""Largest hint value, in UTF-8 bytes."""

PUBLIC_KEY_SIZE: Final = 33
MACHINE_ID_SIZE: Final = 16

MAGIC: Final = b"WG"
TEXT_PREFIX: Final = "wg1"
"""Prefix of the text form.  It names the text scheme; the version is inside the bytes."""

_HEADER = struct.Struct(f">2sB{PUBLIC_KEY_SIZE}s{MACHINE_ID_SIZE}s")
HEADER_SIZE: Final = _HEADER.size  # 52
_RECORD_HEAD = struct.Struct(">BH")  # type, length
_IFACE_FIXED = struct.Struct(">BBBBBHHh")  # flags, if_index, prefix, nat, alloc, port, ext, delta

REC_INTERFACE: Final = 0x01
REC_HINT: Final = 0x02

_FLAG_IPV6: Final = 0x01
_FLAG_EXT_IP: Final = 0x02
_FLAGS_KNOWN: Final = _FLAG_IPV6 | _FLAG_EXT_IP

_CRC_SIZE: Final = 4
_B32_ALPHABET: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# Longest text the decoder will look at: prefix + base32 of the largest address + CRC.
_MAX_TEXT_LEN: Final = len(TEXT_PREFIX) + -(-(MAX_ADDRESS_SIZE + _CRC_SIZE) * 8 // 5)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
BytesLike = bytes | bytearray | memoryview


class NatType(enum.IntEnum):
    """What is known about the NAT (or firewall) in front of an interface.

    The classic STUN (RFC 3489) classes, described with RFC 4787 terms:
    """

    UNKNOWN = 0
    """Not measured (yet), or the measurement was inconclusive."""
    OPEN = 1
    """No NAT and no firewall: the interface address is public and reachable."""
    FULL_CONE = 2
    """Endpoint-independent mapping and endpoint-independent filtering: once mapped, anyone
    can send to the external address."""
    RESTRICTED = 3
    """Endpoint-independent mapping, address-dependent filtering: only hosts the node has
    sent to can reach the mapping (from any of their ports)."""
    PORT_RESTRICTED = 4
    """Endpoint-independent mapping, address-and-port-dependent filtering: only the exact
    IP:port the node has sent to can reach the mapping."""
    SYMMETRIC = 5
    """Address(-and-port)-dependent mapping: each destination gets a different external
    port, so a port learnt through STUN is not the one a peer will see."""
    UDP_BLOCKED = 6
    """UDP does not get out at all; only TCP (or a relay over TCP) can work."""
    UDP_FIREWALL = 7
    """Public address but a firewall drops unsolicited inbound UDP ("symmetric UDP
    firewall" in RFC 3489): reachable only after the node sends first."""


class PortAllocation(enum.IntEnum):
    """How the NAT picks external ports for new mappings."""

    UNKNOWN = 0
    """Not measured."""
    PRESERVING = 1
    """External port equals the internal port when free."""
    SEQUENTIAL = 2
    """Each new mapping gets the previous external port plus ``port_delta``."""
    RANDOM = 3
    """No usable pattern."""


class HintKind(enum.IntEnum):
    """What a :class:`Hint` URL points at."""

    SIGNAL = 1
    """A signal broker the node listens on (e.g. ``mqtt://198.51.100.2:1883``)."""
    RELAY = 2
    """A relay (TURN) server the node can allocate on (e.g. ``turn:198.51.100.3:3478``)."""
    NAME = 3
    """A name server (PNP) holding the node's name record."""


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AddressError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise AddressError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_ip(name: str, value: object) -> IPAddress:
    if isinstance(value, str):
        try:
            value = ipaddress.ip_address(value)
        except ValueError:
            raise AddressError(f"{name} is not an IP address: {value!r}") from None
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise AddressError(f"{name} must be an IPv4Address or IPv6Address, got {value!r}")
    if isinstance(value, ipaddress.IPv6Address) and value.scope_id is not None:
        raise AddressError(
            f"{name} {value} has a scope id, which means nothing to a peer; "
            "pass the address without '%scope'"
        )
    return value


def _check_enum(name: str, enum_type: type[enum.IntEnum], value: object) -> Any:
    if isinstance(value, enum_type):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return enum_type(value)
        except ValueError:
            pass
    known = ", ".join(f"{m.name}={m.value}" for m in enum_type)
    raise AddressError(f"{name} must be a {enum_type.__name__} ({known}), got {value!r}")


def _as_bytes(name: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise AddressError(f"{name} must be bytes, got {type(value).__name__}")


@dataclass(frozen=True)
class Hint:
    """A URL of a server through which the node can be reached."""

    kind: HintKind
    value: str
    """The URL, e.g. ``"mqtt://198.51.100.2:1883"``; 1 to 255 bytes of UTF-8."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _check_enum("hint kind", HintKind, self.kind))
        if not isinstance(self.value, str):
            raise AddressError(f"hint value must be a str, got {type(self.value).__name__}")
        try:
            size = len(self.value.encode("utf-8"))
        except UnicodeEncodeError:
            raise AddressError(f"hint value is not encodable as UTF-8: {self.value!r}") from None
        if not 1 <= size <= MAX_HINT_BYTES:
            raise AddressError(
                f"hint value must be 1..{MAX_HINT_BYTES} bytes of UTF-8, got {size} bytes"
            )


@dataclass(frozen=True)
class InterfaceAddress:
    """One network interface address of a node and what is known about its NAT.

    ``nic_ip`` may also be given as a string; it is converted.  IPv6 scope ids (``%eth0``)
    are rejected: they are local to the host that has them.
    """

    nic_ip: IPAddress
    """The address on the NIC.  Its family is the family of the whole entry."""
    port: int
    """Listen port on ``nic_ip``, 0..65535 (0 = no listener)."""
    prefix_len: int = 0
    """Netmask as a prefix length (for same-LAN detection); at most 32 / 128."""
    if_index: int = 0
    """Small local index, 0..255, pairing the IPv4 and IPv6 entries of one NIC."""
    ext_ip: IPAddress | None = None
    """External (NAT-mapped) address if known; same family as ``nic_ip``."""
    ext_port: int = 0
    """Mapped external port if known (UPnP/STUN), 0 = unknown."""
    nat_type: NatType = NatType.UNKNOWN
    port_allocation: PortAllocation = PortAllocation.UNKNOWN
    port_delta: int = 0
    """Signed step between consecutive mappings, -32768..32767 (for SEQUENTIAL)."""

    def __post_init__(self) -> None:
        nic_ip = _check_ip("nic_ip", self.nic_ip)
        object.__setattr__(self, "nic_ip", nic_ip)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_int("prefix_len", self.prefix_len, 0, nic_ip.max_prefixlen)
        _check_int("if_index", self.if_index, 0, 0xFF)
        if self.ext_ip is not None:
            ext_ip = _check_ip("ext_ip", self.ext_ip)
            if ext_ip.version != nic_ip.version:
                raise AddressError(
                    f"ext_ip {ext_ip} is IPv{ext_ip.version} but nic_ip {nic_ip} is "
                    f"IPv{nic_ip.version}; both must be the same family"
                )
            object.__setattr__(self, "ext_ip", ext_ip)
        _check_int("ext_port", self.ext_port, 0, 0xFFFF)
        object.__setattr__(self, "nat_type", _check_enum("nat_type", NatType, self.nat_type))
        object.__setattr__(
            self,
            "port_allocation",
            _check_enum("port_allocation", PortAllocation, self.port_allocation),
        )
        _check_int("port_delta", self.port_delta, -0x8000, 0x7FFF)

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.nic_ip.version


@dataclass(frozen=True)
class NodeAddress:
    """Everything a peer needs to reach and authenticate a node.

    ``interfaces`` and ``hints`` may be given as any iterable; they are stored as tuples.
    A value that exists always encodes: limits (including :data:`MAX_ADDRESS_SIZE`) are
    checked on construction.
    """

    public_key: bytes
    """SEC1 compressed EC point: 33 bytes, first byte 0x02 or 0x03 (shape checked only)."""
    machine_id: bytes
    """Exactly 16 bytes."""
    interfaces: tuple[InterfaceAddress, ...] = ()
    """At most 16."""
    hints: tuple[Hint, ...] = ()
    """At most 8."""

    def __post_init__(self) -> None:
        key = _as_bytes("public_key", self.public_key)
        if len(key) != PUBLIC_KEY_SIZE or key[0] not in (0x02, 0x03):
            raise AddressError(
                f"public_key must be a {PUBLIC_KEY_SIZE}-byte SEC1 compressed point starting "
                f"with 0x02 or 0x03, got {len(key)} bytes"
                + (f" starting with 0x{key[0]:02x}" if key else "")
            )
        object.__setattr__(self, "public_key", key)
        machine_id = _as_bytes("machine_id", self.machine_id)
        if len(machine_id) != MACHINE_ID_SIZE:
            raise AddressError(f"machine_id must be {MACHINE_ID_SIZE} bytes, got {len(machine_id)}")
        object.__setattr__(self, "machine_id", machine_id)

        interfaces = _as_tuple("interfaces", self.interfaces)
        if len(interfaces) > MAX_INTERFACES:
            raise AddressError(
                f"at most {MAX_INTERFACES} interfaces fit in an address, got {len(interfaces)}"
            )
        for i, iface in enumerate(interfaces):
            if not isinstance(iface, InterfaceAddress):
                raise AddressError(f"interfaces[{i}] must be an InterfaceAddress, got {iface!r}")
        object.__setattr__(self, "interfaces", interfaces)

        hints = _as_tuple("hints", self.hints)
        if len(hints) > MAX_HINTS:
            raise AddressError(f"at most {MAX_HINTS} hints fit in an address, got {len(hints)}")
        for i, hint in enumerate(hints):
            if not isinstance(hint, Hint):
                raise AddressError(f"hints[{i}] must be a Hint, got {hint!r}")
        object.__setattr__(self, "hints", hints)

        size = len(_encode(self))
        if size > MAX_ADDRESS_SIZE:
            raise AddressError(
                f"address encodes to {size} bytes, more than MAX_ADDRESS_SIZE "
                f"({MAX_ADDRESS_SIZE}); drop some hints or interfaces"
            )

    def encode(self) -> bytes:
        """The canonical binary form (deterministic)."""
        return _encode(self)

    @classmethod
    def decode(cls, data: BytesLike) -> NodeAddress:
        """Parse the binary form.  Raises only :class:`AddressError` on bad input."""
        return _decode(data)

    def to_text(self) -> str:
        """The copyable text form: ``"wg1"`` + lowercase base32 (no padding) of bytes + CRC-32."""
        data = _encode(self)
        raw = data + zlib.crc32(data).to_bytes(_CRC_SIZE, "big")
        return TEXT_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    @classmethod
    def from_text(cls, text: str) -> NodeAddress:
        """Parse the text form; surrounding whitespace and letter case are ignored."""
        return _from_text(text)


def _as_tuple(name: str, value: object) -> tuple[Any, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise AddressError(f"{name} must be a sequence, got {type(value).__name__}")
    return tuple(value)


# --- encoding ---------------------------------------------------------------------------


def _record(rtype: int, value: bytes) -> bytes:
    return _RECORD_HEAD.pack(rtype, len(value)) + value


def _encode_interface(iface: InterfaceAddress) -> bytes:
    flags = (_FLAG_IPV6 if iface.nic_ip.version == 6 else 0) | (
        _FLAG_EXT_IP if iface.ext_ip is not None else 0
    )
    value = (
        _IFACE_FIXED.pack(
            flags,
            iface.if_index,
            iface.prefix_len,
            iface.nat_type,
            iface.port_allocation,
            iface.port,
            iface.ext_port,
            iface.port_delta,
        )
        + iface.nic_ip.packed
    )
    if iface.ext_ip is not None:
        value += iface.ext_ip.packed
    return _record(REC_INTERFACE, value)


def _encode(addr: NodeAddress) -> bytes:
    parts = [_HEADER.pack(MAGIC, ADDRESS_VERSION, addr.public_key, addr.machine_id)]
    parts.extend(_encode_interface(iface) for iface in addr.interfaces)
    parts.extend(
        _record(REC_HINT, bytes([hint.kind]) + hint.value.encode("utf-8")) for hint in addr.hints
    )
    return b"".join(parts)


# --- decoding ---------------------------------------------------------------------------


def _decode_interface(value: bytes) -> InterfaceAddress:
    fixed = _IFACE_FIXED.size
    if len(value) < fixed:
        raise AddressError(f"record is {len(value)} bytes, an interface needs at least {fixed}")
    flags, if_index, prefix_len, nat, alloc, port, ext_port, delta = _IFACE_FIXED.unpack_from(value)
    if flags & ~_FLAGS_KNOWN:
        raise AddressError(f"reserved interface flag bits set: 0x{flags:02x}")
    ip_size = 16 if flags & _FLAG_IPV6 else 4
    expected = fixed + ip_size * (2 if flags & _FLAG_EXT_IP else 1)
    if len(value) != expected:
        raise AddressError(
            f"record is {len(value)} bytes, an IPv{6 if ip_size == 16 else 4} interface "
            f"{'with' if flags & _FLAG_EXT_IP else 'without'} ext_ip is {expected}"
        )
    ip_type = ipaddress.IPv6Address if ip_size == 16 else ipaddress.IPv4Address
    nic_ip = ip_type(value[fixed : fixed + ip_size])
    ext_ip = ip_type(value[fixed + ip_size :]) if flags & _FLAG_EXT_IP else None
    # Enum values are checked here (and again, harmlessly, by __post_init__) so the
    # message names the wire field.
    return InterfaceAddress(
        nic_ip=nic_ip,
        port=port,
        prefix_len=prefix_len,
        if_index=if_index,
        ext_ip=ext_ip,
        ext_port=ext_port,
        nat_type=_check_enum("nat_type", NatType, nat),
        port_allocation=_check_enum("port_allocation", PortAllocation, alloc),
        port_delta=delta,
    )


def _decode_hint(value: bytes) -> Hint:
    if len(value) < 2:
        raise AddressError(f"record is {len(value)} bytes, a hint needs a kind and a value")
    try:
        text = value[1:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AddressError(f"hint value is not valid UTF-8 ({exc.reason})") from None
    return Hint(kind=_check_enum("hint kind", HintKind, value[0]), value=text)


def _decode(data: BytesLike) -> NodeAddress:
    if isinstance(data, str):
        raise TypeError("decode() takes bytes; use NodeAddress.from_text() for the text form")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"decode() takes bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_ADDRESS_SIZE:
        raise AddressError(
            f"address is {len(data)} bytes, more than MAX_ADDRESS_SIZE ({MAX_ADDRESS_SIZE})"
        )
    if data[:3].lower() == TEXT_PREFIX.encode():
        raise AddressError("this is the text form; use NodeAddress.from_text()")
    if len(data) < 3:
        raise AddressError(f"truncated: {len(data)} bytes, the header alone needs {HEADER_SIZE}")
    if data[:2] != MAGIC:
        raise AddressError(f"not a node address: bad magic {data[:2]!r}, expected {MAGIC!r}")
    if data[2] not in SUPPORTED_VERSIONS:
        readable = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise AddressError(
            f"unsupported node address version {data[2]}; this build reads version {readable}"
        )
    if len(data) < HEADER_SIZE:
        raise AddressError(f"truncated: {len(data)} bytes, the header alone needs {HEADER_SIZE}")
    _magic, _version, key, machine_id = _HEADER.unpack_from(data)

    interfaces: list[InterfaceAddress] = []
    hints: list[Hint] = []
    offset = HEADER_SIZE
    last_type = 0
    index = 0
    while offset < len(data):
        where = f"record {index} at offset {offset}"
        if len(data) - offset < _RECORD_HEAD.size:
            raise AddressError(f"truncated: {where} has an incomplete type/length head")
        rtype, length = _RECORD_HEAD.unpack_from(data, offset)
        offset += _RECORD_HEAD.size
        if rtype == 0:
            raise AddressError(f"{where}: record type 0 is reserved")
        if rtype < last_type:
            raise AddressError(
                f"{where}: record type {rtype} after type {last_type}; "
                "records must be in non-decreasing type order"
            )
        last_type = rtype
        end = offset + length
        if end > len(data):
            raise AddressError(
                f"truncated: {where} declares {length} bytes but only {len(data) - offset} remain"
            )
        value = data[offset:end]
        offset = end
        try:
            if rtype == REC_INTERFACE:
                if len(interfaces) == MAX_INTERFACES:
                    raise AddressError(f"more than {MAX_INTERFACES} interface records")
                interfaces.append(_decode_interface(value))
            elif rtype == REC_HINT:
                if len(hints) == MAX_HINTS:
                    raise AddressError(f"more than {MAX_HINTS} hint records")
                hints.append(_decode_hint(value))
            # Any other type: a record from a later version; skipped.
        except AddressError as exc:
            raise AddressError(f"{where}: {exc}") from None
        index += 1

    try:
        return NodeAddress(
            public_key=key, machine_id=machine_id, interfaces=tuple(interfaces), hints=tuple(hints)
        )
    except AddressError as exc:
        raise AddressError(f"header: {exc}") from None


def _from_text(text: str) -> NodeAddress:
    if not isinstance(text, str):
        raise TypeError(f"from_text() takes str, got {type(text).__name__}")
    text = text.strip()
    if not text[: len(TEXT_PREFIX)].lower() == TEXT_PREFIX:
        raise AddressError(
            f"not a node address text: expected it to start with {TEXT_PREFIX!r}, got {text[:8]!r}"
        )
    if len(text) > _MAX_TEXT_LEN:
        raise AddressError(f"address text is {len(text)} characters, at most {_MAX_TEXT_LEN}")
    body = text[len(TEXT_PREFIX) :].lower()
    bad = sorted(set(body) - _B32_ALPHABET)
    if bad:
        raise AddressError(
            f"address text contains characters outside base32 (a-z, 2-7): {''.join(bad)!r}"
        )
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise AddressError(
            f"address text has an impossible base32 length ({len(body)} characters); "
            "was it cut short?"
        ) from None
    if len(raw) < _CRC_SIZE:
        raise AddressError("address text is too short to hold an address")
    payload, crc = raw[:-_CRC_SIZE], raw[-_CRC_SIZE:]
    if zlib.crc32(payload).to_bytes(_CRC_SIZE, "big") != crc:
        raise AddressError("address text checksum mismatch: it was mistyped or cut short")
    return _decode(payload)


# --- public helpers ---------------------------------------------------------------------


def encode_address(addr: NodeAddress) -> bytes:
    """Same as ``addr.encode()``."""
    return addr.encode()


def decode_address(data: BytesLike) -> NodeAddress:
    """Same as ``NodeAddress.decode(data)``."""
    return _decode(data)


def is_text_address(text: str) -> bool:
    """Whether ``text`` looks like an address text form (not whether it is valid).

    Lets a caller tell an address text from a name such as ``"alice.p2p"``: names
    contain a dot, the text form never does.
    """
    text = text.strip()
    return text[: len(TEXT_PREFIX)].lower() == TEXT_PREFIX and "." not in text


def parse_address(value: NodeAddress | BytesLike | str) -> NodeAddress:
    """Accept an address in any of its forms: a :class:`NodeAddress`, bytes, or text.

    Raises :class:`AddressError` when the value is malformed, ``TypeError`` for other types.
    """
    if isinstance(value, NodeAddress):
        return value
    if isinstance(value, str):
        return _from_text(value)
    if type(value) is bytes:
        return _decode_cached(value)
    return _decode(value)


# A node dials the same few addresses again and again; decoding one is pure and the
# result immutable, so it is decoded once.  Malformed input raises and is not cached.
_decode_cached = functools.lru_cache(maxsize=256)(_decode)
