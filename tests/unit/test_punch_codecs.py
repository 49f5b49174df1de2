"""Punch coordination messages, probe datagrams and the strategy planner (sans-IO):
golden vectors, round trips, hypothesis fuzzing of both parsers, and the plan for every
pair of NAT types."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio.address import NatType, PortAllocation
from warpgate.sansio.punch_messages import (
    Abort,
    AbortReason,
    Endpoint,
    Offer,
    PunchMessageError,
    PunchTransport,
    Schedule,
    Sync,
    decode_punch_message,
    is_punch_message,
)
from warpgate.sansio.punch_plan import Strategy, direct_hopeless, plan, predicted_ports
from warpgate.sansio.punch_probe import (
    KEEPALIVE,
    PROBE,
    PROBE_ACK,
    Probe,
    ProbeError,
    decode_probe,
    is_probe,
)

FUZZ = settings(max_examples=300, deadline=None)
SESSION = bytes(range(16))
EP = Endpoint(
    ipaddress.ip_address("198.51.100.130"),
    40000,
    40000,
    NatType.PORT_RESTRICTED,
    PortAllocation.PRESERVING,
)

# Golden vectors: the version 1 wire format, byte for byte.
OFFER_V1 = bytes.fromhex("0120000102030405060708090a0b0c0d0e0f020101040100009c409c4004c6336482")
SYNC_V1 = bytes.fromhex("0122" + "00" * 16 + "3ff8000000000000")
ABORT_V1 = bytes.fromhex("0123" + "00" * 16 + "01")
PROBE_V1 = bytes.fromhex("e001000102030405060708090a0b0c0d0e0f0007")
# The same offer with the sender's signal hints appended (count, then length-prefixed).
HINT = "mqtt://198.51.100.1:1883"
OFFER_HINTS_V1 = OFFER_V1 + bytes.fromhex("0118") + HINT.encode()


def test_golden_vectors() -> None:
    offer = Offer(SESSION, PunchTransport.UDP, (EP,), Schedule.RTT)
    assert offer.encode() == OFFER_V1
    assert decode_punch_message(OFFER_V1) == offer
    assert Sync(bytes(16), 1.5).encode() == SYNC_V1
    assert decode_punch_message(SYNC_V1) == Sync(bytes(16), 1.5)
    assert Abort(bytes(16), AbortReason.IMPOSSIBLE).encode() == ABORT_V1
    assert decode_punch_message(ABORT_V1) == Abort(bytes(16), AbortReason.IMPOSSIBLE)
    assert Probe(PROBE, SESSION, 7).encode() == PROBE_V1
    assert decode_probe(PROBE_V1) == Probe(PROBE, SESSION, 7)
    hinted = Offer(SESSION, PunchTransport.UDP, (EP,), Schedule.RTT, hints=(HINT,))
    assert hinted.encode() == OFFER_HINTS_V1
    assert decode_punch_message(OFFER_HINTS_V1) == hinted


def test_the_largest_offer_fits_a_message() -> None:
    eps = tuple(
        Endpoint(ipaddress.ip_address(f"2001:db8::{i}"), 1, 2, NatType.SYMMETRIC) for i in range(8)
    )
    hints = tuple(f"mqtt://{'b' * 160}{i}.example:1883"[:180] for i in range(4))
    offer = Offer(SESSION, PunchTransport.UDP, eps, hints=hints, answer=True)
    assert decode_punch_message(offer.encode()) == offer
    with pytest.raises(PunchMessageError, match="hints"):
        Offer(SESSION, PunchTransport.UDP, eps, hints=(*hints, "x"))
    with pytest.raises(PunchMessageError, match="hint must be"):
        Offer(SESSION, PunchTransport.UDP, eps, hints=("x" * 181,))


def test_answer_ipv6_and_many_endpoints_round_trip() -> None:
    eps = tuple(
        Endpoint(ipaddress.ip_address(ip), 1000 + i, 2000 + i, NatType(i % 8), 2, -3)
        for i, ip in enumerate(["203.0.113.1", "2001:db8::1"] * 4)
    )
    answer = Offer(SESSION, PunchTransport.TCP, eps, Schedule.NTP, answer=True)
    assert decode_punch_message(answer.encode()) == answer


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (OFFER_V1[:1], "too short"),
        (b"\x02" + OFFER_V1[1:], "version 2"),
        (OFFER_V1[:2] + b"\x00" * 16 + b"\x02\x01\x09", "at most 8"),
        (OFFER_V1[:-1], "truncated"),
        (OFFER_V1 + b"\x00", "0 hints"),
        (OFFER_HINTS_V1 + b"\x00", "stray bytes after the hints"),
        (OFFER_HINTS_V1[:-1], "hint 0: bad length"),
        (OFFER_V1 + b"\x01\x02\xff\xfe", "not UTF-8"),
        (OFFER_V1[:18] + b"\x07" + OFFER_V1[19:], "transport"),
        (SYNC_V1[:-8] + bytes.fromhex("7ff0000000000000"), "finite"),
        (ABORT_V1[:-1] + b"\x63", "abort reason"),
        (b"\x01\x2f" + bytes(16), "unknown punch message type"),
        (bytes(1100), "too large"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(PunchMessageError, match=why):
        decode_punch_message(data)


def test_other_signal_messages_are_not_punch_messages() -> None:
    assert is_punch_message(OFFER_V1)
    assert not is_punch_message(b"\x01\x01" + bytes(20))  # a reverse-connect request


def test_probe_kinds_and_errors() -> None:
    for kind in (PROBE, PROBE_ACK, KEEPALIVE):
        assert is_probe(Probe(kind, SESSION).encode())
    assert not is_probe(b"\xd0abc") and not is_probe(b"")
    with pytest.raises(ProbeError, match="expected 20"):
        decode_probe(PROBE_V1[:-1])
    with pytest.raises(ProbeError, match="version"):
        decode_probe(PROBE_V1[:1] + b"\x09" + PROBE_V1[2:])
    with pytest.raises(ProbeError, match="kind"):
        decode_probe(b"\xef" + PROBE_V1[1:])


@FUZZ
@given(st.binary(max_size=1200))
def test_fuzz_punch_message_parser(data: bytes) -> None:
    try:
        msg = decode_punch_message(data)
    except PunchMessageError:
        return
    assert decode_punch_message(msg.encode()) == msg


@FUZZ
@given(st.binary(max_size=40))
def test_fuzz_probe_parser(data: bytes) -> None:
    try:
        probe = decode_probe(data)
    except ProbeError:
        return
    assert probe.encode() == data


@FUZZ
@given(
    st.integers(0, 5),
    st.integers(0, len(OFFER_HINTS_V1) - 1),
    st.integers(0, 255),
)
def test_fuzz_damaged_genuine_offer(_n: int, at: int, value: int) -> None:
    damaged = bytearray(OFFER_HINTS_V1)
    damaged[at] = value
    try:
        msg = decode_punch_message(bytes(damaged))
    except PunchMessageError:
        return
    assert decode_punch_message(msg.encode()) == msg


def ep(nat: NatType, alloc: PortAllocation = PortAllocation.PRESERVING) -> Endpoint:
    return Endpoint(ipaddress.ip_address("203.0.113.9"), 5000, 5000, nat, alloc)


EIM = [NatType.OPEN, NatType.FULL_CONE, NatType.RESTRICTED, NatType.PORT_RESTRICTED]


@pytest.mark.parametrize("a", EIM)
@pytest.mark.parametrize("b", EIM)
def test_cone_pairs_are_probed_and_opened_simultaneously(a: NatType, b: NatType) -> None:
    assert plan([ep(a)], [ep(b)], PunchTransport.UDP).strategy is Strategy.PROBE
    assert plan([ep(a)], [ep(b)], PunchTransport.TCP).strategy is Strategy.SIMULTANEOUS_OPEN


def test_symmetric_pairs() -> None:
    sym = ep(NatType.SYMMETRIC, PortAllocation.RANDOM)
    udp = PunchTransport.UDP
    for lenient in (NatType.OPEN, NatType.FULL_CONE, NatType.RESTRICTED):
        assert plan([sym], [ep(lenient)], udp).strategy is Strategy.PROBE
        assert plan([ep(lenient)], [sym], udp).strategy is Strategy.PROBE
    pr = ep(NatType.PORT_RESTRICTED)
    assert plan([sym], [pr], udp).strategy is Strategy.BIRTHDAY_HARD
    assert plan([pr], [sym], udp).strategy is Strategy.BIRTHDAY_EASY
    assert plan([sym], [sym], udp).strategy is Strategy.IMPOSSIBLE
    assert plan([sym], [pr], PunchTransport.TCP).strategy is Strategy.IMPOSSIBLE
    blocked = ep(NatType.UDP_BLOCKED)
    assert plan([blocked], [pr], udp).strategy is Strategy.IMPOSSIBLE
    assert plan([blocked], [pr], PunchTransport.TCP).strategy is Strategy.SIMULTANEOUS_OPEN
    assert plan([], [pr], udp).strategy is Strategy.IMPOSSIBLE


def test_sequential_allocation_is_aimed_at_the_next_ports() -> None:
    seq = Endpoint(
        ipaddress.ip_address("203.0.113.9"),
        6000,
        5000,
        NatType.SYMMETRIC,
        PortAllocation.SEQUENTIAL,
        2,
    )
    assert predicted_ports(seq, PunchTransport.UDP) == [6000, 6002, 6004, 6006]
    assert plan([seq], [seq], PunchTransport.UDP).strategy is Strategy.PROBE


def test_direct_hopeless() -> None:
    assert not direct_hopeless(NatType.OPEN, "tcp")
    assert not direct_hopeless(NatType.FULL_CONE, "udp")
    assert direct_hopeless(NatType.FULL_CONE, "tcp")
    assert direct_hopeless(NatType.PORT_RESTRICTED, "udp")
    assert not direct_hopeless(NatType.UNKNOWN, "udp")
