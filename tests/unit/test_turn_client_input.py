"""The TURN client's receive path and TCP framing never raise for hostile bytes: any
datagram from the server's address is parsed, dispatched or dropped and counted."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.sansio import stun, turn
from warpgate.sansio.stun import Attr, StunClass, StunMessage
from warpgate.sansio.turn import TurnMethod
from warpgate.turn.client import TurnClient, _TcpProtocol

PEER = ("198.51.100.7", 4000)


def _client() -> tuple[
    TurnClient, list[tuple[tuple[str, int], bytes]], list[tuple[int, tuple[str, int]]]
]:
    got: list[tuple[tuple[str, int], bytes]] = []
    attempts: list[tuple[int, tuple[str, int]]] = []
    client = TurnClient(
        ("203.0.113.1", 3478),
        "u",
        "p",
        on_data=lambda peer, data: got.append((peer, data)),
        on_connection_attempt=lambda cid, peer: attempts.append((cid, peer)),
    )
    return client, got, attempts


def _seeds() -> list[bytes]:
    data_ind = StunMessage(
        TurnMethod.DATA,
        StunClass.INDICATION,
        attributes=((Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"hi")),
    )
    attempt = StunMessage(
        TurnMethod.CONNECTION_ATTEMPT,
        StunClass.INDICATION,
        attributes=((Attr.CONNECTION_ID, struct.pack("!I", 7)), (Attr.XOR_PEER_ADDRESS, PEER)),
    )
    return [
        stun.encode(data_ind),
        stun.encode(attempt),
        turn.encode_channel_data(0x4000, b"payload"),
        stun.encode(StunMessage(TurnMethod.REFRESH, StunClass.SUCCESS)),
    ]


def test_indications_and_channel_data_are_delivered() -> None:
    client, got, attempts = _client()
    data_ind, attempt, channel, stray = _seeds()
    client._datagram(data_ind)
    client._datagram(attempt)
    assert got == [(PEER, b"hi")] and attempts == [(7, PEER)]
    client._datagram(channel)  # no channel bound: dropped
    client._datagram(stray)  # an answer to no transaction: ignored
    client._channel_peers[0x4000] = PEER
    client._datagram(channel)
    assert got[-1] == (PEER, b"payload")
    assert client.dropped == 1


@settings(max_examples=400)
@given(
    st.sampled_from(_seeds()),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=6),
    st.binary(max_size=8),
)
def test_fuzz_receive_path_never_raises(
    seed: bytes, flips: list[tuple[int, int]], tail: bytes
) -> None:
    client, _got, _attempts = _client()
    client._channel_peers[0x4000] = PEER
    data = bytearray(seed)
    for pos, val in flips:
        data[pos % len(data)] = val
    client._datagram(bytes(data) + tail)
    client._datagram(bytes(data[: len(data) // 2]))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_tcp_framing_never_raises(chunks: list[bytes]) -> None:
    client, _got, _attempts = _client()
    errors: list[Exception] = []
    client._socket_error = errors.append  # type: ignore[method-assign]
    proto = _TcpProtocol(client)
    for chunk in [*_seeds()[:2], *chunks]:
        proto.data_received(chunk)
    # Bad framing is reported as a connection error, never raised.
    assert all(isinstance(e, ConnectionError) for e in errors)
