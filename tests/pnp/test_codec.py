"""The PNP packet codec: round trips, signatures, limits, a golden vector and fuzzing."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio.pnp import (
    MAX_PACKET,
    MAX_VALUE,
    Op,
    PnpError,
    Request,
    Response,
    Status,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    make_get,
    make_signed,
    normalise_name,
    peek_request_id,
    verify_request,
)

FUZZ = settings(max_examples=300, deadline=None)
KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
OTHER = ec.derive_private_key(0xFEDCBA0987654321, ec.SECP256R1())


def put(name: str = "alice", value: bytes = b"addr", **kw: object) -> Request:
    args: dict[str, object] = {
        "key": KEY,
        "request_id": 7,
        "timestamp_ms": 1_700_000_000_000,
        "nonce": bytes(range(16)),
        "ttl": 3600,
        "value": value,
    }
    args.update(kw)
    return make_signed(Op.PUT, name, **args)  # type: ignore[arg-type]


def test_names_are_normalised() -> None:
    assert normalise_name(" Alice-1 ") == "alice-1"
    assert normalise_name("a" * 63) == "a" * 63
    for bad in ("", "-a", "a-", "a.b", "a_b", "a" * 64, "ä", "a b"):
        with pytest.raises(PnpError):
            normalise_name(bad)


def test_round_trip_and_signature() -> None:
    req = put()
    data = encode_request(req)
    back = decode_request(data)
    assert back == req
    verify_request(back)
    get = make_get("Bob", 9)
    assert decode_request(encode_request(get)) == get


def test_tampering_breaks_the_signature() -> None:
    data = bytearray(encode_request(put()))
    for pos in (2, 8, len(data) - 70, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 1
        with pytest.raises(PnpError) as info:
            verify_request(decode_request(bytes(bad)))
        assert info.value.status in (Status.BAD_SIGNATURE, Status.MALFORMED)


def test_signature_by_another_key_is_rejected() -> None:
    req = put()
    forged = put(key=OTHER)
    mixed = Request(
        req.op,
        req.request_id,
        req.name,
        req.owner,
        req.timestamp_ms,
        req.nonce,
        req.ttl,
        req.value,
        forged.signature,
    )
    with pytest.raises(PnpError) as info:
        verify_request(decode_request(encode_request(mixed)))
    assert info.value.status == Status.BAD_SIGNATURE


def test_limits() -> None:
    with pytest.raises(PnpError) as info:
        put(value=bytes(MAX_VALUE + 1))
    assert info.value.status == Status.TOO_LARGE
    assert len(encode_request(put(value=bytes(MAX_VALUE), name="a" * 63))) == MAX_PACKET
    with pytest.raises(PnpError) as info:
        decode_request(bytes([1, 2]) + bytes(MAX_PACKET))
    assert info.value.status == Status.TOO_LARGE
    with pytest.raises(PnpError) as info:
        decode_request(bytes([9]) + encode_request(put())[1:])
    assert info.value.status == Status.BAD_VERSION


def test_response_round_trip() -> None:
    resp = Response(Status.OK, 5, 123, put().owner, b"v" * 10, "ok é")
    assert decode_response(encode_response(resp)) == resp
    long = Response(Status.MALFORMED, 1, message="é" * 600)
    assert len(decode_response(encode_response(long)).message.encode()) <= 512


# Golden vector: a fixed key and fixed fields.  ECDSA signatures are randomised, so the
# vector pins the signed bytes (everything but the signature) and a signature known to
# verify.


def test_golden_vector() -> None:
    req = put()
    data = encode_request(req)
    unsigned = data[:-64]
    assert unsigned.hex() == (
        "0102000000070561"
        "6c696365"
        + req.owner.hex()
        + "0000018bcfe56800"
        + "000102030405060708090a0b0c0d0e0f"
        + "00000e10"
        + "0004"
        + b"addr".hex()
    )
    assert req.owner.hex() == GOLDEN_OWNER
    assert hashlib.sha256(req.signed_part).hexdigest() == GOLDEN_SIGNED_SHA256
    # A signature made once with KEY over these bytes (fixed forever).
    fixed = decode_request(unsigned + bytes.fromhex(GOLDEN_SIG))
    verify_request(fixed)
    assert peek_request_id(data) == 7
    assert encode_response(Response(Status.NAME_TAKEN, 7, message="x")).hex() == (
        "01800300000007" + "00" * 8 + "00" * 33 + "0000" + "0001" + "78"
    )


GOLDEN_OWNER = "039fad84aeae08bbef7f010014d82cef6a09de2b0cf871b5ce0c4f1d13a59a5934"
GOLDEN_SIGNED_SHA256 = "1561c25dae2c6300d2e4c478bc5403a7c31d02b236e91b0eb8e8421f0c561c9a"
GOLDEN_SIG = (
    "dffebe5ddc826239245d33412f4f61af90425dcad7b4383cc1c7d1160d4cc0e0"
    "d57a104890d32978e15c3b0708883eaa6de38b493e589b0b58e39580fb40fd88"
)


@FUZZ
@given(st.binary(max_size=MAX_PACKET + 20))
def test_fuzz_decode_request_raises_only_pnp_error(data: bytes) -> None:
    try:
        req = decode_request(data)
    except PnpError:
        return
    try:
        verify_request(req)
    except PnpError:
        pass
    assert encode_request(req) == data


@FUZZ
@given(st.binary(max_size=1200))
def test_fuzz_decode_response_raises_only_pnp_error(data: bytes) -> None:
    try:
        resp = decode_response(data)
    except PnpError:
        return
    assert encode_response(resp) == data


@FUZZ
@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    st.binary(max_size=MAX_VALUE),
    st.integers(0, 2**32 - 1),
    st.integers(1, 2**32 - 1),
)
def test_fuzz_mutated_packets(name: str, value: bytes, rid: int, ttl: int) -> None:
    req = put(name, value, request_id=rid, ttl=ttl)
    data = encode_request(req)
    assert decode_request(data) == req
    for cut in (1, 5, 40, len(data) - 1):
        with pytest.raises(PnpError):
            decode_request(data[:cut])
