"""The relay offer (signal message) of the ``turn`` method: golden vectors, round trips,
and fuzzing (bad bytes only ever raise SignalMessageError)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio import turn_signal as ts
from warpgate.sansio.signal_messages import SignalMessageError, decode_signal_message

TOKEN = bytes(range(16))


def test_offer_golden_vector() -> None:
    wire = ts.RelayOffer(TOKEN, ("203.0.113.5", 49152)).encode()
    assert wire.hex() == "0110" + TOKEN.hex() + "1104" + "cb007105" + "c000"
    assert ts.decode_relay_offer(wire) == ts.RelayOffer(TOKEN, ("203.0.113.5", 49152), "udp")
    with_address = ts.RelayOffer(TOKEN, ("203.0.113.5", 49152), "udp", b"ADDR").encode()
    assert with_address == wire + b"ADDR"
    assert ts.decode_relay_offer(with_address).address == b"ADDR"
    v6 = ts.RelayOffer(TOKEN, ("2001:db8::7", 3478), "tcp").encode()
    assert v6[18:20] == b"\x06\x06" and ts.decode_relay_offer(v6).relayed == ("2001:db8::7", 3478)


def test_offer_is_not_taken_for_another_signal_message() -> None:
    wire = ts.RelayOffer(TOKEN, ("203.0.113.5", 1)).encode()
    with pytest.raises(SignalMessageError, match="unknown signal message type 16"):
        decode_signal_message(wire)
    assert not ts.is_relay_offer(b"\x01\x01rest")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x01\x10" + TOKEN, "too short"),
        (b"\x01\x10" + TOKEN + b"\x05\x04" + b"\0" * 6, "transport"),
        (b"\x01\x10" + TOKEN + b"\x11\x05" + b"\0" * 6, "family"),
        (b"\x01\x10" + TOKEN + b"\x11\x04" + b"\0" * 5, "expected 6"),
        (b"\x01\x10" + TOKEN + b"\x11\x06" + b"\0" * 17, "expected 18"),
        (b"\x01\x10" + TOKEN + b"\x11\x04" + b"\1\2\3\4\0\0", "port is 0"),
        (b"\x01\x01", "not a relay offer"),
    ],
)
def test_bad_offers_are_clear_errors(wire: bytes, match: str) -> None:
    with pytest.raises(SignalMessageError, match=match):
        ts.decode_relay_offer(wire)


def test_bad_offers_cannot_be_encoded() -> None:
    with pytest.raises(SignalMessageError, match="16 bytes"):
        ts.RelayOffer(b"short", ("203.0.113.5", 1)).encode()
    with pytest.raises(SignalMessageError, match="not an IP"):
        ts.RelayOffer(TOKEN, ("relay.example", 1)).encode()
    with pytest.raises(SignalMessageError, match="udp or tcp"):
        ts.RelayOffer(TOKEN, ("203.0.113.5", 1), "sctp").encode()


@given(
    st.binary(min_size=16, max_size=16),
    st.ip_addresses(),
    st.integers(1, 65535),
    st.sampled_from(["udp", "tcp"]),
)
def test_offers_round_trip(token: bytes, ip: object, port: int, transport: str) -> None:
    offer = ts.RelayOffer(token, (str(ip), port), transport)
    assert ts.decode_relay_offer(offer.encode()) == offer


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_fuzz_offer_parser(data: bytes) -> None:
    try:
        ts.decode_relay_offer(b"\x01\x10" + data)
    except SignalMessageError:
        pass
