"""The per-message header of relay-first stream links: golden vectors, and fuzzing (bad
bytes only ever raise StreamHeaderError)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio import stream_migration as sm


def test_golden_vectors() -> None:
    assert sm.encode_data(b"hi") == b"\x00hi"
    assert sm.SWITCH_MESSAGE == b"\x01"
    assert sm.encode_ack(300).hex() == "0201" + "000000000000012c"
    assert sm.encode_resume(2**40).hex() == "0301" + "0000010000000000"
    assert sm.decode(b"\x00hi") == sm.Header(sm.DATA, body=b"hi")
    assert sm.decode(b"\x00") == sm.Header(sm.DATA, body=b"")
    assert sm.decode(b"\x01") == sm.Header(sm.SWITCH)
    assert sm.decode(bytes.fromhex("0201000000000000012c")) == sm.Header(sm.ACK, 300)
    assert sm.decode(bytes.fromhex("03010000010000000000")) == sm.Header(sm.RESUME, 2**40)
    assert sm.encode_round(3).hex() == "0401" + "0000000000000003"
    assert sm.decode(bytes.fromhex("04010000000000000003")) == sm.Header(sm.ROUND, 3)


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        (b"", "empty"),
        (b"\x01x", "switch message of 2 bytes"),
        (b"\x02", "without a version"),
        (bytes.fromhex("0202000000000000012c"), "version 2"),
        (bytes.fromhex("02010000"), "of 4 bytes"),
        (bytes.fromhex("0301" + "00" * 9), "of 11 bytes"),
        (bytes.fromhex("0402" + "00" * 8), "kind 4 of version 2"),
        (bytes.fromhex("0401" + "00" * 7), "of 9 bytes"),
        (b"\x07abc", "unknown message kind 7"),
    ],
)
def test_bad_messages_are_clear_errors(wire: bytes, says: str) -> None:
    with pytest.raises(sm.StreamHeaderError, match=says):
        sm.decode(wire)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_counters_round_trip(value: int) -> None:
    assert sm.decode(sm.encode_ack(value)) == sm.Header(sm.ACK, value)
    assert sm.decode(sm.encode_resume(value)) == sm.Header(sm.RESUME, value)
    assert sm.decode(sm.encode_round(value)) == sm.Header(sm.ROUND, value)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_fuzz_decode_only_raises_its_error(wire: bytes) -> None:
    try:
        head = sm.decode(wire)
    except sm.StreamHeaderError:
        return
    assert head.kind in (sm.DATA, sm.SWITCH, sm.ACK, sm.RESUME, sm.ROUND)
    if head.kind != sm.DATA and head.kind != sm.SWITCH:
        assert wire == bytes([head.kind, sm.VERSION]) + head.value.to_bytes(8, "big")
    if head.kind == sm.DATA:
        assert sm.encode_data(head.body) == wire
