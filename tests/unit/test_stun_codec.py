"""The sans-IO STUN codec: RFC 5769 golden vectors byte for byte, round trips,
MESSAGE-INTEGRITY (short- and long-term keys, SHA-1 and SHA-256), FINGERPRINT, the
RFC 5780 attributes, and fuzzing (arbitrary bytes only ever raise StunError)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.errors import WarpgateError
from warpgate.sansio import stun
from warpgate.sansio.stun import (
    Attr,
    ChangeRequest,
    ErrorCode,
    StunClass,
    StunError,
    StunMessage,
    StunMethod,
)

DATA = json.loads((Path(__file__).parents[1] / "data" / "stun_rfc5769.json").read_text())
VECTORS: dict[str, dict[str, Any]] = DATA["vectors"]
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def vector(name: str) -> bytes:
    return bytes.fromhex(" ".join(VECTORS[name]["hex"]))


def test_the_vectors_name_their_source() -> None:
    assert "RFC 5769" in DATA["source"]
    assert {v["section"] for v in VECTORS.values()} == {"2.1", "2.2", "2.3", "2.4"}


# ------------------------------------------------------------------ RFC 5769


def test_sample_request() -> None:
    data, v = vector("sample_request"), VECTORS["sample_request"]
    msg = stun.decode(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (StunMethod.BINDING, StunClass.REQUEST, TID)
    assert msg.get(Attr.SOFTWARE) == v["software"]
    assert msg.get(Attr.USERNAME) == v["username"]
    assert msg.get(Attr.PRIORITY) == bytes.fromhex(v["priority_hex"])
    assert msg.get(Attr.ICE_CONTROLLED) == bytes.fromhex(v["ice_controlled_hex"])
    assert msg.get(Attr.FINGERPRINT) == 0xE57A3BCF
    assert msg.unknown_required == ()
    assert [k for k, _ in msg.attributes] == [
        Attr.SOFTWARE,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert stun.is_stun(data)
    assert stun.verify_fingerprint(data)
    assert stun.verify_integrity(data, stun.short_term_key(v["password"]))
    assert not stun.verify_integrity(data, b"not the password")


@pytest.mark.parametrize("name", ["ipv4_response", "ipv6_response"])
def test_sample_responses(name: str) -> None:
    data, v = vector(name), VECTORS[name]
    msg = stun.decode(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (StunMethod.BINDING, StunClass.SUCCESS, TID)
    assert msg.xor_mapped_address == tuple(v["mapped"])
    assert msg.mapped_address == tuple(v["mapped"])
    assert msg.get(Attr.SOFTWARE) == v["software"]
    assert stun.verify_fingerprint(data)
    assert stun.verify_integrity(data, stun.short_term_key(v["password"]))


@pytest.mark.parametrize("name", ["ipv4_response", "ipv6_response"])
def test_sample_responses_rebuilt_byte_for_byte(name: str) -> None:
    # The RFC pads SOFTWARE with a space; ours pads with zero.  With the RFC's padding
    # put back, our MESSAGE-INTEGRITY and FINGERPRINT equal the published ones.
    data, v = vector(name), VECTORS[name]
    msg = stun.decode(data)
    ours = stun.encode(msg, integrity_key=stun.short_term_key(v["password"]))
    assert len(ours) == len(data)
    software_pad = 20 + 4 + len(v["software"])
    assert ours[:software_pad] == data[:software_pad]
    assert ours[software_pad] == 0 and data[software_pad] == 0x20
    respaced = bytearray(ours)
    respaced[software_pad] = 0x20
    key = stun.short_term_key(v["password"])
    # Recompute the two hashes over the RFC's padding, as encode() would have.
    reencoded = _reseal(bytes(respaced), key)
    assert reencoded == data


def _reseal(data: bytes, key: bytes) -> bytes:
    """Recompute MESSAGE-INTEGRITY and FINGERPRINT of ``data`` in place (test helper,
    written independently of the codec's own code path)."""
    import hashlib
    import hmac

    mi = data.index(struct.pack("!HH", 0x0008, 20), 20)
    signed = data[:2] + struct.pack("!H", mi + 24 - 20) + data[4:mi]
    mac = hmac.new(key, signed, hashlib.sha1).digest()
    out = data[: mi + 4] + mac + data[mi + 24 :]
    fp = len(out) - 8
    crc = (zlib.crc32(out[:fp]) ^ 0x5354554E) & 0xFFFFFFFF
    return out[:fp] + struct.pack("!HHI", 0x8028, 4, crc)


def test_long_term_request() -> None:
    data, v = vector("long_term_request"), VECTORS["long_term_request"]
    msg = stun.decode(data)
    assert (msg.method, msg.cls) == (StunMethod.BINDING, StunClass.REQUEST)
    assert msg.get(Attr.USERNAME) == v["username"]
    assert msg.get(Attr.NONCE) == v["nonce"]
    assert msg.get(Attr.REALM) == v["realm"]
    assert stun.saslprep(v["password"]) == v["password_saslprep"]
    key = stun.long_term_key(v["username"], v["realm"], v["password"])
    assert key == stun.long_term_key(v["username"], v["realm"], v["password_saslprep"])
    assert stun.verify_integrity(data, key)
    assert not stun.verify_integrity(data, stun.long_term_key("x", v["realm"], v["password"]))
    assert not stun.verify_fingerprint(data)  # this vector has none
    # Rebuilt from its parts, it comes out byte for byte.
    assert stun.encode(msg, integrity_key=key, fingerprint=False) == data


def test_short_request_vector_rebuilt_byte_for_byte() -> None:
    data, v = vector("sample_request"), VECTORS["sample_request"]
    msg = stun.decode(data)
    key = stun.short_term_key(v["password"])
    ours = stun.encode(msg, integrity_key=key)
    # Only USERNAME's padding differs (0x20 in the RFC); reseal with the RFC's padding.
    pad = ours.index(b"evtj:h6vY") + 9
    assert ours[pad : pad + 3] == b"\0\0\0"
    respaced = ours[:pad] + b"   " + ours[pad + 3 :]
    assert _reseal(respaced, key) == data


# ------------------------------------------------------------------ round trips


def roundtrip(msg: StunMessage, **kw: Any) -> StunMessage:
    return stun.decode(stun.encode(msg, **kw))


@pytest.mark.parametrize(
    "address", [("192.0.2.1", 32853), ("2001:db8::1", 1), ("0.0.0.0", 0), ("::", 65535)]
)
@pytest.mark.parametrize(
    "kind",
    [Attr.MAPPED_ADDRESS, Attr.XOR_MAPPED_ADDRESS, Attr.OTHER_ADDRESS, Attr.RESPONSE_ORIGIN],
)
def test_address_attributes_round_trip(kind: Attr, address: tuple[str, int]) -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, attributes=((kind, address),))
    assert roundtrip(msg).get(kind) == address


def test_xor_mapped_address_is_xored_on_the_wire() -> None:
    msg = StunMessage(
        StunMethod.BINDING,
        StunClass.SUCCESS,
        TID,
        ((Attr.XOR_MAPPED_ADDRESS, ("192.0.2.1", 32853)),),
    )
    assert stun.encode(msg, fingerprint=False)[20:] == bytes.fromhex("002000080001a147e112a643")


def test_message_type_bits() -> None:
    cases = {
        (StunMethod.BINDING, StunClass.REQUEST): 0x0001,
        (StunMethod.BINDING, StunClass.INDICATION): 0x0011,
        (StunMethod.BINDING, StunClass.SUCCESS): 0x0101,
        (StunMethod.BINDING, StunClass.ERROR): 0x0111,
        (0x003, StunClass.REQUEST): 0x0003,  # TURN Allocate
        (0xFFF, StunClass.ERROR): 0x3FFF,
    }
    for (method, cls), wire in cases.items():
        data = stun.encode(StunMessage(method, cls), fingerprint=False)
        assert struct.unpack_from("!H", data)[0] == wire
        back = stun.decode(data)
        assert (back.method, back.cls) == (method, cls)


def test_every_attribute_kind_round_trips() -> None:
    attrs: tuple[tuple[int, Any], ...] = (
        (Attr.USERNAME, "alice:bob"),
        (Attr.SOFTWARE, "warpgate ✓"),
        (Attr.REALM, "example.org"),
        (Attr.NONCE, "abc"),
        (Attr.ERROR_CODE, ErrorCode(420, "Unknown Attribute")),
        (Attr.ERROR_CODE, ErrorCode(300, "")),
        (Attr.CHANGE_REQUEST, ChangeRequest(change_ip=True, change_port=False)),
        (Attr.CHANGE_REQUEST, ChangeRequest(change_ip=False, change_port=True)),
        (Attr.RESPONSE_PORT, 40000),
        (Attr.UNKNOWN_ATTRIBUTES, (0x0024, 0x7FFF, 0x1)),
        (Attr.PADDING, b"\0" * 7),
        (0x8F00, b"optional, unknown"),
    )
    msg = StunMessage(StunMethod.BINDING, StunClass.ERROR, attributes=attrs)
    back = roundtrip(msg)
    assert back.attributes[:-1] == attrs
    assert back.attributes[-1][0] == Attr.FINGERPRINT
    assert back.error_code == ErrorCode(420, "Unknown Attribute")
    assert back.unknown_required == ()


def test_change_request_flags_on_the_wire() -> None:
    msg = StunMessage(
        StunMethod.BINDING,
        StunClass.REQUEST,
        TID,
        ((Attr.CHANGE_REQUEST, ChangeRequest(True, True)),),
    )
    assert stun.encode(msg, fingerprint=False)[20:] == bytes.fromhex("0003000400000006")


def test_unknown_attributes_are_kept_or_reported() -> None:
    msg = StunMessage(
        StunMethod.BINDING,
        StunClass.REQUEST,
        attributes=((0x7777, b"required"), (0xC001, b"optional")),
    )
    back = roundtrip(msg)
    assert back.unknown_required == (0x7777,)
    assert back.get(0x7777) == b"required"
    assert back.get(0xC001) == b"optional"


def test_encode_computes_integrity_and_fingerprint_freshly() -> None:
    key = stun.short_term_key("secret")
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, attributes=((Attr.USERNAME, "u"),))
    data = stun.encode(msg, integrity_key=key, integrity_sha256=True)
    back = stun.decode(data)
    assert [k for k, _ in back.attributes] == [
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.MESSAGE_INTEGRITY_SHA256,
        Attr.FINGERPRINT,
    ]
    assert stun.verify_integrity(data, key)
    assert not stun.verify_integrity(data, b"other")
    # Re-encoding a decoded message recomputes the three, never copies them.
    assert stun.encode(back, integrity_key=key, integrity_sha256=True) == data
    assert stun.encode(back, fingerprint=False) == stun.encode(msg, fingerprint=False)


def test_sha256_integrity_is_preferred_and_checked() -> None:
    key = stun.long_term_key("u", "r", "p", algorithm="sha256")
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
    data = bytearray(stun.encode(msg, integrity_key=key, integrity_sha256=True, fingerprint=False))
    assert stun.verify_integrity(bytes(data), key)
    data[-1] ^= 1  # corrupt the SHA-256 MAC only: the (valid) SHA-1 one does not rescue it
    assert not stun.verify_integrity(bytes(data), key)


def test_integrity_ignores_later_attributes_but_fingerprint_covers_them() -> None:
    key = b"k"
    data = stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST), integrity_key=key)
    assert stun.verify_integrity(data, key) and stun.verify_fingerprint(data)
    tampered = bytearray(data)
    tampered[-1] ^= 1
    assert stun.verify_integrity(bytes(tampered), key)  # FINGERPRINT is after the MAC
    assert not stun.verify_fingerprint(bytes(tampered))
    with pytest.raises(StunError, match="FINGERPRINT does not match"):
        stun.decode(bytes(tampered))


def test_integrity_covers_the_header() -> None:
    key = b"k"
    data = bytearray(
        stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST), integrity_key=key)
    )
    data[10] ^= 1  # transaction id
    assert not stun.verify_integrity(bytes(data), key)


def test_without_integrity_nothing_verifies() -> None:
    data = stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST))
    assert not stun.verify_integrity(data, b"")
    assert not stun.verify_integrity(b"garbage", b"")


# ------------------------------------------------------------------ bad input


def header(length: int = 0, kind: int = 0x0001, cookie: int = stun.MAGIC_COOKIE) -> bytes:
    return struct.pack("!HHI", kind, length, cookie) + TID


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than a STUN header"),
        (header()[:19], "shorter than a STUN header"),
        (b"\x40" + header()[1:], "first two bits"),
        (header(cookie=0x12345678), "magic cookie"),
        (header(length=3) + b"\0\0\0", "multiple of 4"),
        (header(length=4), "header says 24 bytes"),
        (header() + b"\0\0\0\0", "header says 20 bytes"),
        (header(length=4) + b"\x80\x22\x00", "header says"),
        (header(length=4) + struct.pack("!HH", 0x8022, 1), "runs past the end"),
        (header(length=8) + struct.pack("!HH", 0x0020, 4) + b"\0\x01\0\0", "address attribute"),
        (header(length=12) + struct.pack("!HH", 0x0001, 8) + b"\0\x03\0\0\1\2\3\4", "family"),
        (header(length=8) + struct.pack("!HH", 0x8022, 2) + b"\xff\xfe\0\0", "not UTF-8"),
        (header(length=8) + struct.pack("!HH", 0x0009, 4) + b"\0\0\x02\x00", "ERROR-CODE class"),
        (header(length=8) + struct.pack("!HH", 0x0009, 4) + b"\0\0\x04\x64", "ERROR-CODE class"),
        (header(length=8) + struct.pack("!HH", 0x0003, 2) + b"\0\0\0\0", "CHANGE-REQUEST"),
        (header(length=8) + struct.pack("!HH", 0x0008, 4) + b"\0" * 4, "MESSAGE-INTEGRITY is 20"),
        (header(length=8) + struct.pack("!HH", 0x8028, 3) + b"\0" * 4, "FINGERPRINT is 4"),
        (header(length=8) + struct.pack("!HH", 0x000A, 3) + b"\0" * 4, "odd length"),
    ],
)
def test_malformed_messages_raise_stun_error(data: bytes, why: str) -> None:
    with pytest.raises(StunError, match=why):
        stun.decode(data)
    assert not stun.verify_integrity(data, b"k")
    assert not stun.verify_fingerprint(data)


def test_nothing_may_follow_fingerprint() -> None:
    data = stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID))
    extra = struct.pack("!HH", 0x8022, 0)
    longer = data[:2] + struct.pack("!H", len(data) - 20 + 4) + data[4:] + extra
    with pytest.raises(StunError, match=r"FINGERPRINT|not the last"):
        stun.decode(longer)


def test_attributes_after_integrity_are_ignored() -> None:
    data = stun.encode(
        StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID),
        integrity_key=b"k",
        fingerprint=False,
    )
    extra = struct.pack("!HH", 0x8022, 4) + b"evil"
    longer = data[:2] + struct.pack("!H", len(data) - 20 + 8) + data[4:] + extra
    msg = stun.decode(longer)
    assert msg.get(Attr.SOFTWARE) is None
    assert stun.verify_integrity(longer, b"k")


def test_stun_error_is_a_warpgate_value_error() -> None:
    assert issubclass(StunError, WarpgateError) and issubclass(StunError, ValueError)


@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        (((Attr.XOR_MAPPED_ADDRESS, ("not-an-ip", 1)),), "not an IP"),
        (((Attr.MAPPED_ADDRESS, ("1.2.3.4", 70000)),), "not a port"),
        (((Attr.ERROR_CODE, ErrorCode(200, "ok")),), "outside 300..699"),
        (((Attr.USERNAME, "x" * 513),), "too long"),
        (((Attr.CHANGE_REQUEST, 6),), "ChangeRequest"),
        (((0x7000, "text"),), "raw bytes"),
    ],
)
def test_bad_values_cannot_be_encoded(attrs: tuple[tuple[int, Any], ...], why: str) -> None:
    with pytest.raises(StunError, match=why):
        stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST, attributes=attrs))


def test_bad_messages_cannot_be_built() -> None:
    with pytest.raises(StunError):
        StunMessage(StunMethod.BINDING, StunClass.REQUEST, b"short")
    with pytest.raises(StunError):
        StunMessage(0x1000, StunClass.REQUEST)
    with pytest.raises(StunError):
        stun.saslprep("bad\u0007control")


def test_is_stun_demultiplexes() -> None:
    data = stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST))
    assert stun.is_stun(data)
    assert not stun.is_stun(data[:-4])
    assert not stun.is_stun(b"\x80" + data[1:])  # RTP/DTLS-like first byte
    assert not stun.is_stun(b"\x16\xfe\xfd" + bytes(30))  # DTLS record
    assert not stun.is_stun(b"")


def test_message_length_frames_a_stream() -> None:
    data = stun.encode(StunMessage(StunMethod.BINDING, StunClass.REQUEST))
    assert stun.message_length(data[:20]) == len(data)
    with pytest.raises(StunError):
        stun.message_length(b"GET / HTTP/1.1\r\n\r\n..")
    with pytest.raises(StunError):
        stun.message_length(data[:10])


def test_retransmission_schedule_is_rfc_8489s() -> None:
    sends, give_up = stun.retransmission_schedule()
    assert sends == (0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5)
    assert give_up == 39.5
    with pytest.raises(StunError):
        stun.retransmission_schedule(rto=0)


def test_transaction_ids_are_random() -> None:
    ids = {stun.new_transaction_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(t) == 12 for t in ids)


# ------------------------------------------------------------------ fuzzing


def _decode_or_stun_error(data: bytes) -> None:
    try:
        msg = stun.decode(data)
    except StunError:
        pass
    else:
        assert stun.is_stun(data)
        assert isinstance(msg, StunMessage)
    assert isinstance(stun.verify_integrity(data, b"key"), bool)
    assert isinstance(stun.verify_fingerprint(data), bool)
    assert isinstance(stun.is_stun(data), bool)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decode_or_stun_error(data)


@st.composite
def plausible_messages(draw: st.DrawFn) -> bytes:
    """Valid headers around random attribute soup: reaches the attribute parsers."""
    kinds = st.sampled_from([int(a) for a in Attr] + [0x7777, 0xC0DE])
    attrs = draw(st.lists(st.tuples(kinds, st.binary(max_size=40), st.booleans()), max_size=6))
    body = b""
    for kind, value, honest_length in attrs:
        length = len(value) if honest_length else draw(st.integers(0, 0xFFFF))
        body += struct.pack("!HH", kind, length) + value + b"\0" * (-len(value) % 4)
    kind = draw(st.integers(0, 0x3FFF))
    return (
        struct.pack("!HHI", kind, len(body), stun.MAGIC_COOKIE)
        + draw(st.binary(min_size=12, max_size=12))
        + body
    )


@settings(max_examples=1000, deadline=None)
@given(plausible_messages())
def test_fuzz_plausible_messages(data: bytes) -> None:
    _decode_or_stun_error(data)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just(Attr.XOR_MAPPED_ADDRESS), st.ip_addresses().map(str), st.integers(0, 65535)
            ),
            st.tuples(st.just(Attr.SOFTWARE), st.text(max_size=60)),
            st.tuples(st.just(0xC000), st.binary(max_size=50)),
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_fuzz_encode_decode_round_trip(raw: list[tuple[Any, ...]], fingerprint: bool) -> None:
    attrs = tuple(
        (a[0], (a[1], a[2])) if a[0] == Attr.XOR_MAPPED_ADDRESS else (a[0], a[1]) for a in raw
    )
    msg = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, attributes=attrs)
    data = stun.encode(msg, integrity_key=b"k", fingerprint=fingerprint)
    back = stun.decode(data)
    assert back.attributes[: len(attrs)] == attrs
    assert stun.verify_integrity(data, b"k")
    assert stun.verify_fingerprint(data) is fingerprint
