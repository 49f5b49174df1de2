"""The sans-IO TURN codec: golden vectors captured from a real coturn (401 challenge,
signed Allocate, its success and MESSAGE-INTEGRITY), ChannelData framing, the
long-term credential state machine, and fuzzing (bad bytes only ever raise StunError)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio import stun, turn
from warpgate.sansio.stun import Attr, ErrorCode, StunClass, StunError, StunMessage
from warpgate.sansio.turn import LongTermAuth, TurnError, TurnMethod

V = json.loads((Path(__file__).parents[1] / "data" / "turn_coturn_vectors.json").read_text())
TID1 = bytes(range(12))
TID2 = bytes(range(1, 13))


def _hex(name: str) -> bytes:
    return bytes.fromhex(V[name])


def _with_tid(msg: StunMessage, tid: bytes) -> StunMessage:
    return StunMessage(msg.method, msg.cls, tid, msg.attributes)


# ------------------------------------------------------------------ golden vectors


def test_unsigned_allocate_matches_the_captured_bytes() -> None:
    auth = LongTermAuth(V["username"], V["password"])
    assert auth.sign(_with_tid(turn.allocate(lifetime=600), TID1)) == _hex("allocate_unsigned")


def test_coturn_401_gives_realm_and_nonce_and_the_signed_request_matches() -> None:
    challenge = stun.decode(_hex("coturn_401"))
    assert challenge.method == TurnMethod.ALLOCATE and challenge.cls == StunClass.ERROR
    assert challenge.error_code == ErrorCode(401, "Unauthorized")
    auth = LongTermAuth(V["username"], V["password"])
    assert auth.accept_error(challenge, was_signed=False)
    assert auth.realm == V["realm"] and auth.nonce == challenge.get(Attr.NONCE)
    signed = auth.sign(_with_tid(turn.allocate(lifetime=600), TID2))
    assert signed == _hex("allocate_signed")
    # coturn accepted exactly these bytes, so the key derivation and MI are right.
    assert stun.verify_integrity(signed, stun.long_term_key("alice", "example.test", "secret-pw"))


def test_coturn_allocate_success_parses_and_its_integrity_verifies() -> None:
    raw = _hex("coturn_allocate_success")
    auth = LongTermAuth(V["username"], V["password"])
    auth.accept_error(stun.decode(_hex("coturn_401")), was_signed=False)
    assert auth.check_response(raw)
    alloc = turn.parse_allocation(stun.decode(raw))
    assert alloc.relayed[0] == "127.0.0.1" and 40000 <= alloc.relayed[1] <= 48000
    assert alloc.mapped == tuple(V["client_address"])
    assert alloc.lifetime == 600
    tampered = bytearray(raw)
    tampered[30] ^= 1  # inside XOR-RELAYED-ADDRESS
    assert not auth.check_response(bytes(tampered))


# ------------------------------------------------------------------ messages


def test_requests_round_trip_through_the_stun_codec() -> None:
    peer = ("203.0.113.7", 40001)
    perm = stun.decode(stun.encode(turn.create_permission([peer, ("2001:db8::1", 1)])))
    assert perm.method == TurnMethod.CREATE_PERMISSION
    assert [v for k, v in perm.attributes if k == Attr.XOR_PEER_ADDRESS] == [
        peer,
        ("2001:db8::1", 1),
    ]
    bind = stun.decode(stun.encode(turn.channel_bind(0x4001, peer)))
    assert bind.get(Attr.CHANNEL_NUMBER) == b"\x40\x01\x00\x00"
    assert bind.get(Attr.XOR_PEER_ADDRESS) == peer
    ind = stun.decode(stun.encode(turn.send_indication(peer, b"payload")))
    assert ind.cls == StunClass.INDICATION and ind.get(Attr.DATA) == b"payload"
    assert turn.parse_lifetime(stun.decode(stun.encode(turn.refresh(0)))) == 0
    assert stun.decode(stun.encode(turn.refresh())).get(Attr.LIFETIME) is None
    conn = stun.decode(stun.encode(turn.connection_bind(0xDEADBEEF)))
    assert turn.parse_connection_id(conn) == 0xDEADBEEF
    tcp = stun.decode(stun.encode(turn.allocate(protocol=turn.PROTO_TCP)))
    assert tcp.get(Attr.REQUESTED_TRANSPORT) == b"\x06\x00\x00\x00"
    assert stun.decode(stun.encode(turn.connect(peer))).get(Attr.XOR_PEER_ADDRESS) == peer


def test_data_indication_parses_and_incomplete_ones_are_errors() -> None:
    peer = ("198.51.100.9", 5000)
    msg = StunMessage(
        TurnMethod.DATA,
        StunClass.INDICATION,
        attributes=((Attr.XOR_PEER_ADDRESS, peer), (Attr.DATA, b"x")),
    )
    assert turn.parse_data_indication(stun.decode(stun.encode(msg))) == (peer, b"x")
    with pytest.raises(TurnError, match="DATA"):
        turn.parse_data_indication(
            StunMessage(
                TurnMethod.DATA, StunClass.INDICATION, attributes=((Attr.XOR_PEER_ADDRESS, peer),)
            )
        )
    with pytest.raises(TurnError, match="XOR-PEER-ADDRESS"):
        turn.parse_data_indication(
            StunMessage(TurnMethod.DATA, StunClass.INDICATION, attributes=((Attr.DATA, b""),))
        )


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(StunError, match="not an IP address"):
        turn.create_permission([("example.com", 1)])
    with pytest.raises(StunError, match="at least one"):
        turn.create_permission([])
    with pytest.raises(StunError, match="outside"):
        turn.channel_bind(0x3FFF, ("203.0.113.1", 1))
    with pytest.raises(StunError, match="REQUESTED-TRANSPORT"):
        turn.allocate(protocol=1)
    with pytest.raises(TurnError, match="not an Allocate success"):
        turn.parse_allocation(turn.allocate())


def test_error_responses_are_described_for_people() -> None:
    msg = StunMessage(
        TurnMethod.ALLOCATE,
        StunClass.ERROR,
        attributes=((Attr.ERROR_CODE, ErrorCode(486, "Quota")),),
    )
    err = turn.describe_error(msg)
    assert err.code == 486 and "allocation quota reached" in str(err) and "ALLOCATE" in str(err)


# ------------------------------------------------------------------ long-term credentials


def _error(code: int, **attrs: str) -> StunMessage:
    extra = tuple((Attr.REALM if k == "realm" else Attr.NONCE, v) for k, v in attrs.items())
    return StunMessage(
        TurnMethod.ALLOCATE,
        StunClass.ERROR,
        attributes=((Attr.ERROR_CODE, ErrorCode(code)), *extra),
    )


def test_401_to_a_signed_request_means_wrong_credentials() -> None:
    auth = LongTermAuth("u", "p")
    assert not auth.ready
    assert auth.accept_error(_error(401, realm="r", nonce="n1"), was_signed=False)
    assert auth.ready
    with pytest.raises(TurnError, match="rejected the credentials") as info:
        auth.accept_error(_error(401, realm="r", nonce="n2"), was_signed=True)
    assert info.value.code == 401


def test_438_replaces_the_nonce_and_is_bounded() -> None:
    auth = LongTermAuth("u", "p")
    auth.accept_error(_error(401, realm="r", nonce="n1"), was_signed=False)
    key = auth.key
    assert auth.accept_error(_error(438, nonce="n2"), was_signed=True)
    assert auth.nonce == "n2" and auth.key == key
    signed = stun.decode(auth.sign(turn.refresh()))
    assert signed.get(Attr.NONCE) == "n2" and signed.get(Attr.USERNAME) == "u"
    for i in range(LongTermAuth.MAX_STALE_RETRIES - 1):
        auth.accept_error(_error(438, nonce=f"x{i}"), was_signed=True)
    with pytest.raises(TurnError, match="438"):
        auth.accept_error(_error(438, nonce="again"), was_signed=True)
    auth2 = LongTermAuth("u", "p")
    with pytest.raises(TurnError, match="without REALM"):
        auth2.accept_error(_error(401), was_signed=False)
    assert not auth2.accept_error(_error(486), was_signed=False)


def test_indications_are_never_signed() -> None:
    auth = LongTermAuth("u", "p")
    auth.accept_error(_error(401, realm="r", nonce="n"), was_signed=False)
    raw = auth.sign(turn.send_indication(("203.0.113.1", 9), b"d"))
    assert stun.decode(raw).get(Attr.MESSAGE_INTEGRITY) is None


# ------------------------------------------------------------------ ChannelData


def test_channel_data_golden_vectors() -> None:
    assert turn.encode_channel_data(0x4000, b"abc") == bytes.fromhex("40000003616263")
    assert turn.encode_channel_data(0x4FFF, b"abc", pad=True) == bytes.fromhex("4fff000361626300")
    assert turn.encode_channel_data(0x4001, b"") == bytes.fromhex("40010000")
    assert turn.decode_channel_data(bytes.fromhex("4fff000361626300")) == (0x4FFF, b"abc")
    assert turn.channel_data_length(bytes.fromhex("40000005")) == 12
    assert turn.is_channel_data(bytes.fromhex("40000000"))
    assert not turn.is_channel_data(_hex("coturn_401"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x40\x00", "at least 4"),
        (bytes.fromhex("3fff0000"), "not a valid"),
        (bytes.fromhex("50000000"), "not a valid"),
        (bytes.fromhex("40000005aa"), "says 5 bytes"),
        (bytes.fromhex("40000000aaaaaaaa"), "more than 3"),
    ],
)
def test_bad_channel_data_is_an_error(data: bytes, match: str) -> None:
    with pytest.raises(StunError, match=match):
        turn.decode_channel_data(data)


@given(st.integers(turn.CHANNEL_MIN, turn.CHANNEL_MAX), st.binary(max_size=2000), st.booleans())
def test_channel_data_round_trips(channel: int, data: bytes, pad: bool) -> None:
    wire = turn.encode_channel_data(channel, data, pad=pad)
    assert turn.decode_channel_data(wire) == (channel, data)
    assert turn.is_channel_data(wire)
    if pad:
        assert turn.channel_data_length(wire[:4]) == len(wire)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_channel_data_only_raises_stun_error(data: bytes) -> None:
    for parse in (turn.decode_channel_data, turn.channel_data_length):
        try:
            parse(data)
        except StunError:
            pass


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [_hex(k) for k in ("coturn_401", "coturn_allocate_success", "allocate_signed")]
    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    ).map(lambda t: bytes(_mutate(bytearray(t[0]), t[1])))


def _mutate(data: bytearray, flips: list[tuple[int, int]]) -> bytearray:
    for pos, val in flips:
        if data:
            data[pos % len(data)] = val
    return data


@settings(max_examples=500)
@given(_mutations())
def test_fuzz_turn_parsers_on_mutated_coturn_answers(data: bytes) -> None:
    auth = LongTermAuth(V["username"], V["password"])
    auth.accept_error(stun.decode(_hex("coturn_401")), was_signed=False)
    assert isinstance(auth.check_response(data), bool)  # never raises
    try:
        msg = stun.decode(data)
    except StunError:
        return
    for parse in (
        turn.parse_allocation,
        turn.parse_data_indication,
        turn.parse_lifetime,
        turn.parse_connection_id,
    ):
        try:
            parse(msg)
        except StunError:
            pass
    try:
        auth.accept_error(msg, was_signed=True)
    except TurnError:
        pass


def test_lifetime_of_the_wrong_size_is_an_error() -> None:
    msg = StunMessage(
        TurnMethod.REFRESH, StunClass.SUCCESS, attributes=((Attr.LIFETIME, b"\0\0\1"),)
    )
    with pytest.raises(TurnError, match="4 bytes"):
        turn.parse_lifetime(msg)
    assert struct.unpack("!I", turn.lifetime_value(7))[0] == 7
