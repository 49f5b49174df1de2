"""The link's sans-IO layers: handshake payloads, records, stream parsing, signal
messages -- round trips and hypothesis fuzzing of every parser of network bytes."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.identity.keystore import public_key_bytes
from warpgate.sansio.address import InterfaceAddress, NodeAddress
from warpgate.sansio.link_handshake import (
    LinkAuthError,
    LinkHandshake,
    LinkIdentity,
    LinkProtocolError,
    verify_payload,
)
from warpgate.sansio.link_records import (
    END,
    MAX_CHUNK,
    PING,
    RECORD_HEADER,
    DatagramRecordCodec,
    Message,
    Ping,
    RecordCodec,
    RecordStreamParser,
)
from warpgate.sansio.noise import CipherState
from warpgate.sansio.signal_messages import (
    ReverseConnect,
    SignalMessageError,
    decode_signal_message,
)

FUZZ = settings(max_examples=200, deadline=None)


def identity() -> LinkIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    return LinkIdentity.create(key, public_key_bytes(key.public_key()))


ALICE, BOB = identity(), identity()


def handshake(intent: bytes = b"") -> tuple[LinkHandshake, LinkHandshake]:
    a = LinkHandshake(ALICE, initiator=True, expected_identity=BOB.public_key, intent=intent)
    b = LinkHandshake(BOB, initiator=False)
    msg3 = a.receive(b.receive(a.start()) or b"")
    assert msg3 is not None and b.receive(msg3) is None
    return a, b


def test_handshake_proves_both_identities_and_carries_the_intent() -> None:
    a, b = handshake(intent=b"reverse-42")
    assert a.remote_identity == BOB.public_key and b.remote_identity == ALICE.public_key
    assert b.intent == b"reverse-42" and a.handshake_hash == b._noise.handshake_hash
    send, _ = a.split()
    _, receive = b.split()
    assert receive.decrypt(send.encrypt(b"x")) == b"x"


def test_wrong_expected_identity_is_refused() -> None:
    a = LinkHandshake(ALICE, initiator=True, expected_identity=ALICE.public_key)
    b = LinkHandshake(BOB, initiator=False)
    with pytest.raises(LinkAuthError, match="not the expected"):
        a.receive(b.receive(a.start()) or b"")


def test_payload_signed_for_another_static_key_is_refused() -> None:
    payload = BOB.payload()
    with pytest.raises(LinkAuthError):
        verify_payload(payload, os.urandom(32))


@FUZZ
@given(st.binary(max_size=400))
def test_handshake_messages_fuzz_only_raise_protocol_errors(data: bytes) -> None:
    for initiator in (True, False):
        hs = LinkHandshake(ALICE, initiator=initiator, expected_identity=None)
        if initiator:
            hs.start()
        try:
            hs.receive(data)
        except (LinkProtocolError, LinkAuthError):
            pass


@FUZZ
@given(st.binary(max_size=300))
def test_identity_payload_fuzz(data: bytes) -> None:
    try:
        verify_payload(data, os.urandom(32))
    except (LinkProtocolError, LinkAuthError):
        pass


def codecs(max_message: int = 4 << 20) -> tuple[RecordCodec, RecordCodec]:
    k1, k2 = os.urandom(32), os.urandom(32)
    return (
        RecordCodec(CipherState(k1), CipherState(k2), max_message=max_message),
        RecordCodec(CipherState(k2), CipherState(k1), max_message=max_message),
    )


@pytest.mark.parametrize("size", [0, 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 3 * MAX_CHUNK])
def test_wire_messages_parse_back(size: int) -> None:
    sender, receiver = codecs()
    data = os.urandom(size)
    parser = RecordStreamParser()
    events = [receiver.open(r) for r in parser.feed(bytes(sender.seal_message_wire(data)))]
    assert [e for e in events if e is not None] == [Message(data)]
    assert parser.buffered == 0


def test_a_64_kib_message_is_one_record() -> None:
    sender, _receiver = codecs()
    assert len(sender.seal_message(bytes(65536))) == 1


def test_an_impossible_record_length_is_refused_before_buffering() -> None:
    parser = RecordStreamParser()
    with pytest.raises(LinkProtocolError, match="exceeds"):
        parser.feed(bytes([END]) + (MAX_CHUNK + 17).to_bytes(3, "big") + bytes(10))
    assert parser.buffered == 0


def test_record_type_is_authenticated() -> None:
    sender, receiver = codecs()
    kind, ciphertext = sender.seal_message(b"hello")[0]
    assert kind == END
    with pytest.raises(LinkProtocolError, match="authentication"):
        receiver.open((PING, ciphertext))


def test_oversized_reassembly_is_refused() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    sender = RecordCodec(CipherState(k1), CipherState(k2), max_message=4 << 20)
    receiver = RecordCodec(CipherState(k2), CipherState(k1), max_message=MAX_CHUNK)
    first, second = sender.seal_message(os.urandom(MAX_CHUNK + 10))
    assert receiver.open(first) is None  # a partial message, still within the limit
    with pytest.raises(LinkProtocolError, match="larger than"):
        receiver.open(second)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 4), st.binary(max_size=300)), max_size=10), st.data())
def test_stream_parser_reassembles_any_chunking(
    records: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(
        bytes([k]) + len(b).to_bytes(RECORD_HEADER - 1, "big") + b for k, b in records
    )
    parser = RecordStreamParser()
    got: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(stream):
        step = data.draw(st.integers(1, 64))
        got += [(k, bytes(b)) for k, b in parser.feed(stream[pos : pos + step])]
        pos += step
    assert got == records and parser.buffered == 0


@FUZZ
@given(st.binary(max_size=200))
def test_records_fuzz_only_raise_protocol_errors(data: bytes) -> None:
    _, receiver = codecs()
    try:
        for kind, body in RecordStreamParser().feed(data):
            receiver.open((kind, body))
    except LinkProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_datagram_records_fuzz_are_dropped_not_raised(data: bytes) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    receiver = DatagramRecordCodec(CipherState(k2), CipherState(k1), max_message=1200)
    assert receiver.open(data) is None
    assert receiver.rejected == 1


def test_datagram_replay_is_dropped() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    sender = DatagramRecordCodec(CipherState(k1), CipherState(k2), max_message=1200)
    receiver = DatagramRecordCodec(CipherState(k2), CipherState(k1), max_message=1200)
    (datagram,) = sender.seal_message(b"once")
    ping = sender.seal_control(PING, b"p")
    assert receiver.open(ping) == Ping(b"p")
    assert receiver.open(datagram) == Message(b"once")  # older nonce, inside the window
    assert receiver.open(datagram) is None and receiver.rejected == 1


def test_reverse_connect_message_round_trip() -> None:
    address = NodeAddress(
        public_key=ALICE.public_key,
        machine_id=bytes(16),
        interfaces=(InterfaceAddress(nic_ip="198.51.100.7", port=4000),),
    )
    message = ReverseConnect(b"intent", address)
    assert decode_signal_message(message.encode()) == message


@FUZZ
@given(st.binary(max_size=300))
def test_signal_messages_fuzz(data: bytes) -> None:
    try:
        decode_signal_message(data)
    except SignalMessageError:
        pass
