"""The node address codec: golden vectors, round trips, malformed input, fuzzing."""

from __future__ import annotations

import dataclasses
import struct
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from warpgate.errors import AddressError, WarpgateError
from warpgate.sansio import address as address_module
from warpgate.sansio.address import (
    ADDRESS_VERSION,
    MAX_ADDRESS_SIZE,
    MAX_HINTS,
    MAX_INTERFACES,
    Hint,
    HintKind,
    InterfaceAddress,
    NatType,
    NodeAddress,
    PortAllocation,
    decode_address,
    encode_address,
    is_text_address,
    parse_address,
)

DATA = Path(__file__).resolve().parent.parent / "data"

KEY = bytes([0x02]) + bytes(range(0xA0, 0xC0))
MACHINE_ID = bytes(range(0x10, 0x20))

MINIMAL = NodeAddress(public_key=b"\x03" + bytes(32), machine_id=bytes(16))

# Two interfaces of each family, all with ext_ip and ext_port, plus two hints: the
# "typical multi-homed node behind NAT" case the size target is stated for.
FULL = NodeAddress(
    public_key=KEY,
    machine_id=MACHINE_ID,
    interfaces=(
        InterfaceAddress(
            nic_ip=IPv4Address("192.168.1.10"),
            port=40000,
            prefix_len=24,
            if_index=1,
            ext_ip=IPv4Address("203.0.113.5"),
            ext_port=40001,
            nat_type=NatType.PORT_RESTRICTED,
            port_allocation=PortAllocation.SEQUENTIAL,
            port_delta=2,
        ),
        InterfaceAddress(
            nic_ip=IPv4Address("10.0.0.7"),
            port=40000,
            prefix_len=8,
            if_index=2,
            ext_ip=IPv4Address("203.0.113.5"),
            ext_port=40002,
            nat_type=NatType.SYMMETRIC,
            port_allocation=PortAllocation.RANDOM,
            port_delta=-1,
        ),
        InterfaceAddress(
            nic_ip=IPv6Address("2001:db8::10"),
            port=40000,
            prefix_len=64,
            if_index=1,
            ext_ip=IPv6Address("2001:db8::10"),
            ext_port=40000,
            nat_type=NatType.OPEN,
            port_allocation=PortAllocation.PRESERVING,
        ),
        InterfaceAddress(
            nic_ip=IPv6Address("2001:db8:1::7"),
            port=40000,
            prefix_len=64,
            if_index=2,
            ext_ip=IPv6Address("2001:db8:1::7"),
            ext_port=40003,
            nat_type=NatType.UDP_FIREWALL,
            port_allocation=PortAllocation.PRESERVING,
        ),
    ),
    hints=(
        Hint(HintKind.SIGNAL, "mqtt://198.51.100.2:1883"),
        Hint(HintKind.RELAY, "turn:198.51.100.3:3478"),
    ),
)

# The same bytes as tests/data/*.bin, inline so that a format change is loud in review.
MINIMAL_HEX = (
    "5747010300000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000"
)
FULL_HEX = (
    "57470102a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babb"
    "bcbdbebf101112131415161718191a1b1c1d1e1f01001302011804029c409c41"
    "0002c0a8010acb00710501001302020805039c409c42ffff0a000007cb007105"
    "01002b03014001019c409c40000020010db80000000000000000000000102001"
    "0db800000000000000000000001001002b03024007019c409c43000020010db8"
    "00010000000000000000000720010db800010000000000000000000702001901"
    "6d7174743a2f2f3139382e35312e3130302e323a31383833020017027475726e"
    "3a3139382e35312e3130302e333a33343738"
)
# FULL followed by a record of a type (0x40) version 1 does not know: "later".
FUTURE_RECORD_HEX = FULL_HEX + "4000056c61746572"

GOLDEN = [
    ("address_v1_minimal.bin", MINIMAL, MINIMAL_HEX),
    ("address_v1_full.bin", FULL, FULL_HEX),
]

HEADER = 52


def record(rtype: int, value: bytes) -> bytes:
    return struct.pack(">BH", rtype, len(value)) + value


def iface_value(
    flags: int = 0,
    if_index: int = 0,
    prefix: int = 24,
    nat: int = 0,
    alloc: int = 0,
    port: int = 1,
    ext_port: int = 0,
    delta: int = 0,
    ips: bytes = bytes([10, 0, 0, 1]),
) -> bytes:
    return (
        struct.pack(">BBBBBHHh", flags, if_index, prefix, nat, alloc, port, ext_port, delta) + ips
    )


def header(version: int = 1, key: bytes = KEY) -> bytes:
    return b"WG" + bytes([version]) + key + MACHINE_ID


def record_types(data: bytes) -> list[int]:
    """Walk the records of a well-formed encoding and list their types."""
    types, offset = [], HEADER
    while offset < len(data):
        rtype, length = struct.unpack_from(">BH", data, offset)
        types.append(rtype)
        offset += 3 + length
    return types


# --- golden vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "value", "hex_"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vector(filename: str, value: NodeAddress, hex_: str) -> None:
    on_disk = (DATA / filename).read_bytes()
    assert on_disk == bytes.fromhex(hex_)
    assert value.encode() == on_disk
    assert NodeAddress.decode(on_disk) == value


def test_golden_future_record_is_skipped() -> None:
    on_disk = (DATA / "address_v1_future_record.bin").read_bytes()
    assert on_disk == bytes.fromhex(FUTURE_RECORD_HEX)
    decoded = NodeAddress.decode(on_disk)
    assert decoded == FULL
    # Canonical re-encoding drops the record this version does not understand.
    assert decoded.encode() == bytes.fromhex(FULL_HEX)


def test_layout_of_header() -> None:
    data = FULL.encode()
    assert data[:2] == b"WG"
    assert data[2] == ADDRESS_VERSION == 1
    assert data[3:36] == KEY
    assert data[36:52] == MACHINE_ID
    assert record_types(data) == [1, 1, 1, 1, 2, 2]


def test_size_two_interfaces_of_each_family_and_two_hints() -> None:
    size = len(FULL.encode())
    assert size == 242
    assert size <= 300


def test_maximal_address_fits() -> None:
    iface = InterfaceAddress(IPv6Address("2001:db8::1"), 1, ext_ip=IPv6Address("2001:db8::2"))
    hints = [Hint(HintKind.NAME, "x" * 20)] * MAX_HINTS
    addr = NodeAddress(KEY, MACHINE_ID, (iface,) * MAX_INTERFACES, tuple(hints))
    assert len(addr.encode()) == HEADER + 16 * 46 + 8 * 24
    assert NodeAddress.decode(addr.encode()) == addr


# --- round trips ------------------------------------------------------------------------


def test_round_trip_and_aliases() -> None:
    data = encode_address(FULL)
    assert data == FULL.encode()
    assert decode_address(data) == FULL
    assert NodeAddress.decode(bytearray(data)) == FULL
    assert NodeAddress.decode(memoryview(data)) == FULL


def test_encoding_is_deterministic() -> None:
    rebuilt = dataclasses.replace(FULL, interfaces=list(FULL.interfaces))  # type: ignore[arg-type]
    assert rebuilt == FULL
    assert rebuilt.encode() == FULL.encode()
    assert hash(rebuilt) == hash(FULL)


def test_text_round_trip() -> None:
    text = FULL.to_text()
    assert text.startswith("wg1")
    assert text == text.lower() and "=" not in text
    assert NodeAddress.from_text(text) == FULL
    assert NodeAddress.from_text(f"  \n\t{text}\r\n ") == FULL
    assert NodeAddress.from_text(text.upper()) == FULL  # QR alphanumeric mode is uppercase
    assert NodeAddress.from_text(MINIMAL.to_text()) == MINIMAL


def test_text_form_golden() -> None:
    assert MINIMAL.to_text() == (
        "wg1k5dqcayaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaax7xfia"
    )


def test_parse_address_accepts_every_form() -> None:
    assert parse_address(FULL) is FULL
    assert parse_address(FULL.encode()) == FULL
    assert parse_address(FULL.to_text()) == FULL
    with pytest.raises(AddressError):
        parse_address("alice.p2p")
    with pytest.raises(TypeError):
        parse_address(42)  # type: ignore[arg-type]


def test_is_text_address() -> None:
    assert is_text_address(FULL.to_text())
    assert is_text_address("  WG1ABC ")
    assert not is_text_address("alice.p2p")
    assert not is_text_address("wg1.p2p")


def test_str_inputs_convert() -> None:
    iface = InterfaceAddress("192.0.2.1", 5, ext_ip="198.51.100.1")  # type: ignore[arg-type]
    assert iface.nic_ip == IPv4Address("192.0.2.1")
    assert iface.ext_ip == IPv4Address("198.51.100.1")
    assert iface.family == 4
    assert InterfaceAddress(IPv6Address("::1"), 0).family == 6
    assert InterfaceAddress(IPv4Address("192.0.2.1"), 5, nat_type=3).nat_type is (  # type: ignore[arg-type]
        NatType.RESTRICTED
    )


# --- construction errors ----------------------------------------------------------------

V4 = IPv4Address("192.0.2.1")
V6 = IPv6Address("2001:db8::1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nic_ip": V4, "port": 65536}, r"port must be in 0\.\.65535"),
        ({"nic_ip": V4, "port": -1}, r"port must be in 0\.\.65535"),
        ({"nic_ip": V4, "port": True}, r"port must be an int"),
        ({"nic_ip": V4, "port": 1, "prefix_len": 33}, r"prefix_len must be in 0\.\.32"),
        ({"nic_ip": V6, "port": 1, "prefix_len": 129}, r"prefix_len must be in 0\.\.128"),
        ({"nic_ip": V4, "port": 1, "if_index": 256}, r"if_index must be in 0\.\.255"),
        ({"nic_ip": V4, "port": 1, "ext_ip": V6}, r"same family"),
        ({"nic_ip": V6, "port": 1, "ext_ip": V4}, r"same family"),
        ({"nic_ip": V4, "port": 1, "ext_port": 70000}, r"ext_port"),
        ({"nic_ip": V4, "port": 1, "nat_type": 8}, r"nat_type must be a NatType"),
        ({"nic_ip": V4, "port": 1, "port_allocation": 9}, r"port_allocation"),
        ({"nic_ip": V4, "port": 1, "port_delta": 32768}, r"port_delta must be in -32768"),
        ({"nic_ip": V4, "port": 1, "port_delta": -32769}, r"port_delta"),
        ({"nic_ip": "not-an-ip", "port": 1}, r"nic_ip is not an IP address"),
        ({"nic_ip": 3232235777, "port": 1}, r"nic_ip must be an IPv4Address"),
        ({"nic_ip": IPv6Address("fe80::1%eth0"), "port": 1}, r"scope id"),
    ],
)
def test_invalid_interface(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AddressError, match=match):
        InterfaceAddress(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value", "match"),
    [
        (HintKind.SIGNAL, "", r"1\.\.255 bytes"),
        (HintKind.SIGNAL, "x" * 256, r"got 256 bytes"),
        (HintKind.SIGNAL, "é" * 128, r"got 256 bytes"),
        (HintKind.SIGNAL, "\udc80", r"not encodable as UTF-8"),
        (HintKind.SIGNAL, b"mqtt://x", r"must be a str"),
        (0, "mqtt://x", r"hint kind must be a HintKind"),
        (4, "mqtt://x", r"hint kind"),
    ],
)
def test_invalid_hint(kind: object, value: object, match: str) -> None:
    with pytest.raises(AddressError, match=match):
        Hint(kind, value)  # type: ignore[arg-type]


def test_hint_limits_ok() -> None:
    assert Hint(HintKind.NAME, "x" * 255).value == "x" * 255
    assert Hint(3, "pnp://n").kind is HintKind.NAME  # type: ignore[arg-type]


IFACE = InterfaceAddress(V4, 1)
HINT = Hint(HintKind.SIGNAL, "mqtt://x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"public_key": KEY[:32]}, r"33-byte SEC1 compressed point .* got 32 bytes"),
        ({"public_key": b"\x04" + KEY[1:]}, r"starting with 0x04"),
        ({"public_key": b""}, r"got 0 bytes"),
        ({"public_key": "02" * 33}, r"public_key must be bytes"),
        ({"machine_id": bytes(15)}, r"machine_id must be 16 bytes, got 15"),
        ({"machine_id": bytes(17)}, r"machine_id must be 16 bytes, got 17"),
        ({"interfaces": [IFACE] * 17}, r"at most 16 interfaces"),
        ({"hints": [HINT] * 9}, r"at most 8 hints"),
        ({"interfaces": ["192.0.2.1"]}, r"interfaces\[0\] must be an InterfaceAddress"),
        ({"hints": [IFACE]}, r"hints\[0\] must be a Hint"),
        ({"interfaces": IFACE}, r"interfaces must be a sequence"),
        ({"hints": [Hint(HintKind.NAME, "x" * 255)] * 4}, r"more than MAX_ADDRESS_SIZE"),
    ],
)
def test_invalid_node_address(kwargs: dict[str, object], match: str) -> None:
    values: dict[str, object] = {"public_key": KEY, "machine_id": MACHINE_ID, **kwargs}
    with pytest.raises(AddressError, match=match):
        NodeAddress(**values)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    assert issubclass(AddressError, ValueError)
    assert issubclass(AddressError, WarpgateError)


# --- decoding: unknown records ----------------------------------------------------------


def test_unknown_record_types_are_skipped() -> None:
    base = FULL.encode()
    extended = base + record(0x03, b"") + record(0x40, b"abc" * 10) + record(0xFF, bytes(300))
    decoded = NodeAddress.decode(extended)
    assert decoded == FULL
    assert decoded.encode() == base


def test_unknown_record_in_the_middle_is_skipped() -> None:
    # Type 0x01 records, then an unknown 0x01 < 0x02 is impossible; but unknown types
    # between known ones of a future version (e.g. 0x02 then 0x03 then 0x03) are fine.
    data = header() + record(0x01, iface_value()) + record(0x02, b"\x01mqtt://x")
    data += record(0x03, b"z") + record(0x03, b"")
    decoded = NodeAddress.decode(data)
    assert decoded.interfaces[0].nic_ip == IPv4Address("10.0.0.1")
    assert decoded.hints == (Hint(HintKind.SIGNAL, "mqtt://x"),)


# --- decoding: malformed input ----------------------------------------------------------

GOOD_IFACE = record(0x01, iface_value())
V6_IPS = bytes(16)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"truncated: 0 bytes"),
        (b"W", r"truncated: 1 bytes"),
        (b"WG", r"truncated: 2 bytes"),
        (b"XY\x01" + bytes(49), r"bad magic"),
        (b"wg1k5dqcayaaaa", r"text form; use NodeAddress.from_text"),
        (header()[:51], r"truncated: 51 bytes, the header alone needs 52"),
        (header(version=0), r"unsupported node address version 0; this build reads version 1"),
        (header(version=2), r"unsupported node address version 2; this build reads version 1"),
        (header(version=255), r"version 255"),
        (header(key=b"\x04" + KEY[1:]), r"header: public_key .* starting with 0x04"),
        (header() + b"\x01", r"incomplete type/length head"),
        (header() + b"\x01\x00", r"incomplete type/length head"),
        (header() + GOOD_IFACE + b"\xff", r"record 1 .* incomplete type/length head"),
        (header() + b"\x01\x00\x20" + bytes(10), r"declares 32 bytes but only 10 remain"),
        (header() + b"\x40\xff\xff", r"declares 65535 bytes but only 0 remain"),
        (header() + record(0x00, b""), r"record type 0 is reserved"),
        (header() + bytes(8), r"record type 0 is reserved"),
        (header() + record(0x02, b"\x01x") + GOOD_IFACE, r"type 1 after type 2"),
        (header() + record(0x40, b"") + GOOD_IFACE, r"type 1 after type 64"),
        (header() + record(0x01, b""), r"interface needs at least 11"),
        (header() + record(0x01, iface_value()[:14]), r"record is 14 bytes, an IPv4 interface"),
        (header() + record(0x01, iface_value() + b"\x00"), r"is 16 bytes, an IPv4 interface"),
        (header() + record(0x01, iface_value(flags=2)), r"IPv4 interface with ext_ip is 19"),
        (header() + record(0x01, iface_value(flags=1)), r"IPv6 interface without ext_ip is 27"),
        (header() + record(0x01, iface_value(flags=4)), r"reserved interface flag bits"),
        (header() + record(0x01, iface_value(flags=0x81)), r"reserved interface flag bits"),
        (header() + record(0x01, iface_value(nat=8)), r"nat_type must be a NatType"),
        (header() + record(0x01, iface_value(alloc=4)), r"port_allocation must be a Port"),
        (header() + record(0x01, iface_value(prefix=33)), r"prefix_len must be in 0\.\.32"),
        (
            header() + record(0x01, iface_value(flags=1, prefix=129, ips=V6_IPS)),
            r"prefix_len must be in 0\.\.128",
        ),
        (header() + GOOD_IFACE * 17, r"record 16 .* more than 16 interface records"),
        (header() + record(0x02, b""), r"a hint needs a kind and a value"),
        (header() + record(0x02, b"\x01"), r"a hint needs a kind and a value"),
        (header() + record(0x02, b"\x00x"), r"hint kind must be a HintKind"),
        (header() + record(0x02, b"\x04x"), r"hint kind"),
        (header() + record(0x02, b"\x01\xff"), r"not valid UTF-8"),
        (header() + record(0x02, b"\x01\xed\xb2\x80"), r"not valid UTF-8"),  # surrogate
        (header() + record(0x02, b"\x01\xc0\x80"), r"not valid UTF-8"),  # overlong NUL
        (header() + record(0x02, b"\x01" + b"x" * 256), r"got 256 bytes"),
        (header() + record(0x02, b"\x01x") * 9, r"more than 8 hint records"),
        (header() + record(0x40, bytes(MAX_ADDRESS_SIZE - HEADER - 2)), r"more than MAX_ADDR"),
        (bytes(MAX_ADDRESS_SIZE + 1), r"1025 bytes, more than MAX_ADDRESS_SIZE \(1024\)"),
    ],
)
def test_malformed_input(data: bytes, match: str) -> None:
    with pytest.raises(AddressError, match=match):
        NodeAddress.decode(data)


def test_largest_accepted_input() -> None:
    data = header() + record(0x40, bytes(MAX_ADDRESS_SIZE - HEADER - 3))
    assert len(data) == MAX_ADDRESS_SIZE
    assert NodeAddress.decode(data) == NodeAddress(KEY, MACHINE_ID)


def test_every_truncation_of_full_fails_or_is_a_prefix_address() -> None:
    data = FULL.encode()
    boundaries = {HEADER}
    offset = HEADER
    for _ in record_types(data):
        offset += 3 + struct.unpack_from(">H", data, offset + 1)[0]
        boundaries.add(offset)
    for cut in range(len(data)):
        if cut in boundaries:
            # Cutting exactly between records leaves a valid, shorter address.
            assert NodeAddress.decode(data[:cut]).encode() == data[:cut]
        else:
            with pytest.raises(AddressError):
                NodeAddress.decode(data[:cut])


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="from_text"):
        NodeAddress.decode(FULL.to_text())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        NodeAddress.decode(None)  # type: ignore[arg-type]


# --- text form errors -------------------------------------------------------------------


def test_text_errors() -> None:
    text = FULL.to_text()
    with pytest.raises(AddressError, match="start with 'wg1'"):
        NodeAddress.from_text("")
    with pytest.raises(AddressError, match="start with 'wg1'"):
        NodeAddress.from_text("wg2" + text[3:])
    with pytest.raises(AddressError, match="outside base32"):
        NodeAddress.from_text(text[:20] + "0" + text[21:])
    with pytest.raises(AddressError, match="outside base32"):
        NodeAddress.from_text(text[:20] + " " + text[20:])
    with pytest.raises(AddressError, match="checksum mismatch"):
        typo = "a" if text[30] != "a" else "b"
        NodeAddress.from_text(text[:30] + typo + text[31:])
    with pytest.raises(AddressError, match=r"impossible base32 length|checksum|too short"):
        NodeAddress.from_text(text[:-1])
    with pytest.raises(AddressError, match="too short"):
        NodeAddress.from_text("wg1aaaa")
    with pytest.raises(AddressError, match="at most"):
        NodeAddress.from_text("wg1" + "a" * 5000)
    with pytest.raises(TypeError):
        NodeAddress.from_text(FULL.encode())  # type: ignore[arg-type]


def test_every_truncation_of_text_fails() -> None:
    text = FULL.to_text()
    for cut in range(len(text)):
        with pytest.raises(AddressError):
            NodeAddress.from_text(text[:cut])


# --- hypothesis -------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(0, 0xFFFF)


@st.composite
def interfaces(draw: st.DrawFn) -> InterfaceAddress:
    version = draw(st.sampled_from([4, 6]))
    ips = st.ip_addresses(v=4) if version == 4 else st.ip_addresses(v=6)
    return InterfaceAddress(
        nic_ip=draw(ips),
        port=draw(ports),
        prefix_len=draw(st.integers(0, 32 if version == 4 else 128)),
        if_index=draw(st.integers(0, 255)),
        ext_ip=draw(st.none() | ips),
        ext_port=draw(ports),
        nat_type=draw(st.sampled_from(NatType)),
        port_allocation=draw(st.sampled_from(PortAllocation)),
        port_delta=draw(st.integers(-0x8000, 0x7FFF)),
    )


hint_values = st.text(min_size=1, max_size=80).filter(lambda s: len(s.encode("utf-8")) <= 255)
hints = st.builds(Hint, st.sampled_from(HintKind), hint_values)


@st.composite
def node_addresses(draw: st.DrawFn) -> NodeAddress:
    key = draw(st.sampled_from([b"\x02", b"\x03"])) + draw(st.binary(min_size=32, max_size=32))
    try:
        return NodeAddress(
            public_key=key,
            machine_id=draw(st.binary(min_size=16, max_size=16)),
            interfaces=tuple(draw(st.lists(interfaces(), max_size=MAX_INTERFACES))),
            hints=tuple(draw(st.lists(hints, max_size=MAX_HINTS))),
        )
    except AddressError as exc:  # only the overall size limit can trip here
        assert "MAX_ADDRESS_SIZE" in str(exc)
        assume(False)
        raise


@FUZZ
@given(node_addresses())
def test_fuzz_round_trip(addr: NodeAddress) -> None:
    data = addr.encode()
    assert len(data) <= MAX_ADDRESS_SIZE
    assert NodeAddress.decode(data) == addr
    assert NodeAddress.decode(data).encode() == data
    assert NodeAddress.from_text(addr.to_text()) == addr


def check_decode(data: bytes) -> None:
    """Decoding either fails with AddressError or yields a canonical address."""
    try:
        decoded = NodeAddress.decode(data)
    except AddressError:
        return
    again = decoded.encode()
    assert NodeAddress.decode(again) == decoded
    if all(t in (1, 2) for t in record_types(data)):
        assert again == data  # no unknown records: the input was already canonical


@FUZZ
@given(st.binary(max_size=MAX_ADDRESS_SIZE + 8))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_bytes_after_a_valid_header(tail: bytes) -> None:
    check_decode(header() + tail)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 0x43), st.binary(max_size=40)).map(lambda t: record(*t)),
        max_size=12,
    )
)
def test_fuzz_well_framed_records(records: list[bytes]) -> None:
    check_decode(header() + b"".join(records))


Mutation = tuple[str, int, int, bytes]  # op, position, argument, inserted bytes

mutation = st.tuples(
    st.sampled_from(["truncate", "flip", "set", "insert", "delete"]),
    st.integers(0, 2000),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=8),
)


def mutate(data: bytes, ops: list[Mutation]) -> bytes:
    buf = bytearray(data)
    for op, position, arg, inserted in ops:
        pos = position % (len(buf) + 1)
        if op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = inserted
        elif op == "delete":
            del buf[pos : pos + 1 + arg % 8]
        elif buf:
            pos %= len(buf)
            buf[pos] = buf[pos] ^ (1 << (arg % 8)) if op == "flip" else arg
    return bytes(buf)


@FUZZ
@given(node_addresses(), st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_valid_encodings(addr: NodeAddress, ops: list[Mutation]) -> None:
    check_decode(mutate(addr.encode(), ops))


@FUZZ
@given(node_addresses(), st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_mutated_text(addr: NodeAddress, ops: list[Mutation]) -> None:
    text = mutate(addr.to_text().encode("ascii"), ops).decode("latin-1")
    try:
        decoded = NodeAddress.from_text(text)
    except AddressError:
        return
    assert NodeAddress.from_text(decoded.to_text()) == decoded


def test_module_exports() -> None:
    for name in address_module.__all__:
        assert hasattr(address_module, name)
