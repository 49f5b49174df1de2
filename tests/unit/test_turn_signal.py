"""The relay offer and relay answer (signal messages) of the ``turn`` method: golden
vectors, round trips, and fuzzing (bad bytes only ever raise SignalMessageError)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio import turn_signal as ts
from warpgate.sansio.signal_messages import SignalMessageError, decode_signal_message
from warpgate.turn.addresses import offer_refusal

TOKEN = bytes(range(16))
RELAYED = ("203.0.113.5", 49152)
SERVER = ("203.0.113.5", 3478)


def test_offer_golden_vectors() -> None:
    wire = ts.RelayOffer(TOKEN, RELAYED).encode()
    assert wire.hex() == "0110" + TOKEN.hex() + "1100" + "04cb007105c000" + "00"
    assert ts.decode_relay_offer(wire) == ts.RelayOffer(TOKEN, RELAYED, "udp")
    full = ts.RelayOffer(TOKEN, RELAYED, "tcp", b"ADDR", SERVER, answer_wanted=True).encode()
    assert full.hex() == (
        "0110" + TOKEN.hex() + "0601" + "04cb007105c000" + "04cb0071050d96" + b"ADDR".hex()
    )
    offer = ts.decode_relay_offer(full)
    assert offer.answer_wanted and offer.server == SERVER and offer.address == b"ADDR"
    v6 = ts.RelayOffer(TOKEN, ("2001:db8::7", 3478)).encode()
    assert ts.decode_relay_offer(v6).relayed == ("2001:db8::7", 3478)


def test_answer_golden_vector() -> None:
    wire = ts.RelayAnswer(TOKEN, ("198.51.100.9", 40000)).encode()
    assert wire.hex() == "0111" + TOKEN.hex() + "04c6336409" + "9c40"
    assert ts.decode_relay_answer(wire) == ts.RelayAnswer(TOKEN, ("198.51.100.9", 40000))


def test_messages_are_not_taken_for_other_signal_messages() -> None:
    offer = ts.RelayOffer(TOKEN, RELAYED).encode()
    answer = ts.RelayAnswer(TOKEN, RELAYED).encode()
    with pytest.raises(SignalMessageError, match="unknown signal message type 16"):
        decode_signal_message(offer)
    with pytest.raises(SignalMessageError, match="unknown signal message type 17"):
        decode_signal_message(answer)
    assert not ts.is_relay_offer(answer) and not ts.is_relay_answer(offer)
    assert not ts.is_relay_offer(b"\x01\x01rest")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x01\x10" + TOKEN, "too short"),
        (b"\x01\x10" + TOKEN + b"\x05\x00\x04" + b"\0" * 6, "transport"),
        (b"\x01\x10" + TOKEN + b"\x11\x00\x05" + b"\0" * 6, "family"),
        (b"\x01\x10" + TOKEN + b"\x11\x00\x04" + b"\0" * 5, "expected 6"),
        (b"\x01\x10" + TOKEN + b"\x11\x00\x04\1\2\3\4\0\0\0", "port is 0"),
        (b"\x01\x10" + TOKEN + b"\x11\x00\x00\x00", "without a relayed address"),
        (b"\x01\x10" + TOKEN + b"\x11\x00\x04\1\2\3\4\0\1", "server address: missing"),
        (b"\x01\x10" + TOKEN + b"\x11\x01\x04\1\2\3\4\0\1\0", "names no server"),
        (b"\x01\x01", "not a relay offer"),
    ],
)
def test_bad_offers_are_clear_errors(wire: bytes, match: str) -> None:
    with pytest.raises(SignalMessageError, match=match):
        ts.decode_relay_offer(wire)


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x01\x11" + TOKEN[:4], "too short"),
        (b"\x01\x11" + TOKEN + b"\x00", "one address"),
        (b"\x01\x11" + TOKEN + b"\x04\1\2\3\4\0\1extra", "one address"),
        (b"\x01\x10" + TOKEN, "not a relay answer"),
    ],
)
def test_bad_answers_are_clear_errors(wire: bytes, match: str) -> None:
    with pytest.raises(SignalMessageError, match=match):
        ts.decode_relay_answer(wire)


def test_bad_messages_cannot_be_encoded() -> None:
    with pytest.raises(SignalMessageError, match="16 bytes"):
        ts.RelayOffer(b"short", RELAYED).encode()
    with pytest.raises(SignalMessageError, match="not an IP"):
        ts.RelayOffer(TOKEN, ("relay.example", 1)).encode()
    with pytest.raises(SignalMessageError, match="udp or tcp"):
        ts.RelayOffer(TOKEN, RELAYED, "sctp").encode()
    with pytest.raises(SignalMessageError, match="names its server"):
        ts.RelayOffer(TOKEN, RELAYED, answer_wanted=True).encode()
    with pytest.raises(SignalMessageError, match="out of range"):
        ts.RelayAnswer(TOKEN, ("198.51.100.9", 0)).encode()


addresses = st.tuples(st.ip_addresses().map(str), st.integers(1, 65535))


@given(
    st.binary(min_size=16, max_size=16),
    addresses,
    st.sampled_from(["udp", "tcp"]),
    st.binary(max_size=40),
    st.one_of(st.none(), addresses),
    st.booleans(),
)
def test_offers_and_answers_round_trip(
    token: bytes,
    relayed: tuple[str, int],
    transport: str,
    address: bytes,
    server: tuple[str, int] | None,
    wanted: bool,
) -> None:
    offer = ts.RelayOffer(token, relayed, transport, address, server, wanted and server is not None)
    assert ts.decode_relay_offer(offer.encode()) == offer
    answer = ts.RelayAnswer(token, relayed)
    assert ts.decode_relay_answer(answer.encode()) == answer


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_fuzz_offer_and_answer_parsers(data: bytes) -> None:
    for prefix, parse in (
        (b"\x01\x10", ts.decode_relay_offer),
        (b"\x01\x11", ts.decode_relay_answer),
    ):
        try:
            parse(prefix + data)
        except SignalMessageError:
            pass


# --- where an offer may send us ------------------------------------------------------


def _offer(relayed: str, server: str | None = None, port: int = 40000) -> ts.RelayOffer:
    return ts.RelayOffer(
        bytes(16),
        (relayed, port),
        "udp",
        server=(server, 3478) if server else None,
        answer_wanted=server is not None,
    )


@pytest.mark.parametrize(
    "relayed", ["127.0.0.1", "::1", "0.0.0.0", "169.254.9.9", "224.0.0.5", "::ffff:127.0.0.1"]
)
def test_offer_never_aims_at_loopback_or_link_local(relayed: str) -> None:
    for public in (True, False):
        assert offer_refusal(_offer(relayed), own_servers=[], we_are_public=public)


def test_offer_to_a_private_relay_only_when_we_are_private_too() -> None:
    assert "private" in offer_refusal(_offer("192.168.1.20"), own_servers=[], we_are_public=True)
    assert offer_refusal(_offer("192.168.1.20"), own_servers=[], we_are_public=False) == ""
    assert offer_refusal(_offer("9.9.9.9"), own_servers=[], we_are_public=True) == ""


def test_offer_on_a_relay_we_use_ourselves_is_fine() -> None:
    """A loopback coturn (tests, the demo) relays from its own addresses: trusted, because
    it is in our own turn_servers."""
    own = [("127.0.0.1", 3478)]
    assert offer_refusal(_offer("127.0.0.1"), own_servers=own, we_are_public=True) == ""
    assert offer_refusal(_offer("127.0.0.2"), own_servers=own, we_are_public=True)


def test_offer_server_to_answer_is_checked_too() -> None:
    offer = _offer("9.9.9.9", server="127.0.0.1")
    assert "127.0.0.1" in offer_refusal(offer, own_servers=[], we_are_public=False)
    assert offer_refusal(offer, own_servers=[("127.0.0.1", 3478)], we_are_public=False) == ""


def test_on_our_own_relays_host_only_relay_ports_and_our_server() -> None:
    """Trusting our own relay's host is no licence to aim us at its other services."""
    own = [("127.0.0.1", 3478)]
    for port in (22, 6379, 11211):
        why = offer_refusal(_offer("127.0.0.1", port=port), own_servers=own, we_are_public=False)
        assert "no relay port" in why
    offer = ts.RelayOffer(
        bytes(16), ("9.9.9.9", 40000), "udp", server=("127.0.0.1", 11211), answer_wanted=True
    )
    assert offer_refusal(offer, own_servers=own, we_are_public=False)
    mapped = _offer("::ffff:127.0.0.1")
    assert offer_refusal(mapped, own_servers=own, we_are_public=False) == ""  # it is ours
