"""Fuzzing the link layers: Noise and the link handshake, records on streams and
datagrams, the TCP connection's handshake framing, and the UDP demux of a real node.

Documented errors: the handshake raises :class:`LinkProtocolError` (malformed or failed
Noise) or :class:`LinkAuthError` (a proof that does not verify); stream records raise
:class:`LinkProtocolError`; datagram records are dropped (``None``), never raised, except
:class:`LinkProtocolError` for an authentic but oversized message.  A damaged record must
never be accepted as something the peer did not send.  Stream parsers keep their buffers
bounded however much garbage arrives (``test_*_memory_bound``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.mutate import mutated
from tests.fuzz.profile import FUZZ, GARBAGE_BYTES
from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.identity.keystore import public_key_bytes
from warpgate.link.tcp import LINK_MAGIC, RESUME_MAGIC, LinkConnection, _frame
from warpgate.link.udp import HS1_MIN_SIZE
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
    MAX_RECORD,
    PONG,
    RECORD_HEADER,
    DatagramRecordCodec,
    Message,
    RecordCodec,
    RecordStreamParser,
)
from warpgate.sansio.link_resumption import ResumedHandshake, ResumptionTickets
from warpgate.sansio.noise import MAX_MESSAGE, NoiseError, NoiseHandshake, generate_static_key
from warpgate.sansio.noise import public_key as noise_public_key

HANDSHAKE_ERRORS = (LinkProtocolError, LinkAuthError)


def identity() -> LinkIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    return LinkIdentity.create(key, public_key_bytes(key.public_key()))


ALICE, BOB = identity(), identity()


def _genuine_messages() -> tuple[bytes, bytes, bytes]:
    a = LinkHandshake(ALICE, initiator=True, expected_identity=BOB.public_key, intent=b"why")
    b = LinkHandshake(BOB, initiator=False)
    m1 = a.start()
    m2 = b.receive(m1)
    assert m2 is not None
    m3 = a.receive(m2)
    assert m3 is not None
    return m1, m2, m3


M1, M2, M3 = _genuine_messages()


# --- Noise -----------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=200), mutated([M1, M2, M3])), min_size=1, max_size=3))
def test_noise_only_raises_noise_error(messages: list[bytes]) -> None:
    for initiator in (True, False):
        hs = NoiseHandshake(initiator=initiator, static_key=generate_static_key())
        if initiator:
            hs.write_message(b"")
        for message in messages:
            try:
                hs.read_message(message)
            except NoiseError:
                break
            if hs.complete:
                break
            hs.write_message(b"")


# --- link handshake --------------------------------------------------------------------


@FUZZ
@given(
    st.one_of(st.binary(max_size=400), mutated([M1])),
    st.one_of(st.binary(max_size=400), mutated([M3])),
)
def test_responder_handshake_only_raises_documented_errors(msg1: bytes, msg3: bytes) -> None:
    b = LinkHandshake(BOB, initiator=False)
    try:
        b.receive(msg1)
        b.receive(msg3)
    except HANDSHAKE_ERRORS:
        return
    # msg3 must be bound to this handshake: a random or replayed one never completes it.
    assert not b.complete or (msg3 == M3 and msg1 == M1), "forged handshake accepted"


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated([M2])))
def test_initiator_handshake_only_raises_documented_errors(msg2: bytes) -> None:
    a = LinkHandshake(ALICE, initiator=True, expected_identity=BOB.public_key)
    a.start()
    try:
        a.receive(msg2)
    except HANDSHAKE_ERRORS:
        return
    raise AssertionError("a message 2 made for another handshake was accepted")


def _ticket_secret() -> bytes:
    """The resumption secret of a full handshake alice -> bob."""
    a = LinkHandshake(ALICE, initiator=True, expected_identity=BOB.public_key)
    b = LinkHandshake(BOB, initiator=False)
    b.receive(a.receive(b.receive(a.start())))  # type: ignore[arg-type]
    a.split()
    b.split()
    assert a.resumption_secret == b.resumption_secret
    return a.resumption_secret


SECRET = _ticket_secret()
BOB_TICKETS = ResumptionTickets(BOB.public_key, lifetime=1e9)
BOB_TICKETS.remember(ALICE.public_key, SECRET, now=0)


def _resuming_alice() -> ResumedHandshake:
    tickets = ResumptionTickets(ALICE.public_key, lifetime=1e9)  # fresh: a fallback forgets
    tickets.remember(BOB.public_key, SECRET, now=0)
    hs = ResumedHandshake.dialling(ALICE, tickets, BOB.public_key, now=1)
    assert hs is not None
    return hs


def _genuine_resumed() -> tuple[bytes, bytes, bytes]:
    a = _resuming_alice()
    b = ResumedHandshake(BOB, initiator=False, tickets=BOB_TICKETS, now=1)
    r1 = a.start()
    r2 = b.receive(r1)
    assert r2
    r3 = a.receive(r2)
    assert r3 is not None and b.receive(r3) is None and b.complete
    return r1, r2, r3


R1, R2, R3 = _genuine_resumed()


@FUZZ
@given(
    st.one_of(st.binary(max_size=200), mutated([R1])),
    st.one_of(st.binary(max_size=200), mutated([R3, M1])),
)
def test_resumed_responder_only_raises_documented_errors(msg1: bytes, msg3: bytes) -> None:
    b = ResumedHandshake(BOB, initiator=False, tickets=BOB_TICKETS, now=1)
    try:
        b.receive(msg1)
        b.receive(msg3)
    except HANDSHAKE_ERRORS:
        return
    # Only the dialler that made message 1 can confirm it: a replay never completes.
    assert not b.complete or not b.resumed, "forged resumed handshake accepted"


@FUZZ
@given(st.one_of(st.binary(max_size=200), mutated([R2])))
def test_resumed_initiator_only_raises_documented_errors(msg2: bytes) -> None:
    a = _resuming_alice()
    a.start()
    try:
        reply = a.receive(msg2)
    except HANDSHAKE_ERRORS:
        return
    # An empty frame starts the full handshake; anything else must not verify.
    assert msg2 == b"" and reply and not a.resumed and not a.complete, "forged message 2"


PAYLOAD_SEEDS = [ALICE.payload(b"intent", plaintext=True), BOB.payload()]
ALICE_STATIC = noise_public_key(ALICE.noise_static)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(PAYLOAD_SEEDS)))
def test_handshake_payload_parser(payload: bytes) -> None:
    try:
        proof = verify_payload(payload, ALICE_STATIC)
    except HANDSHAKE_ERRORS:
        return
    assert proof.identity == ALICE.public_key  # only Alice's own signature verifies


# --- records ---------------------------------------------------------------------------


def _codecs(datagram: bool = False) -> tuple[Any, Any]:
    a = LinkHandshake(ALICE, initiator=True, expected_identity=BOB.public_key)
    b = LinkHandshake(BOB, initiator=False)
    m3 = a.receive(b.receive(a.start()) or b"")
    b.receive(m3 or b"")
    kind = DatagramRecordCodec if datagram else RecordCodec
    return kind(*a.split(), max_message=200_000), kind(*b.split(), max_message=200_000)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=100)), max_size=6))
def test_stream_records_random(records: list[tuple[int, bytes]]) -> None:
    _, receiver = _codecs()
    for record in records:
        try:
            receiver.open(record)
        except LinkProtocolError:
            return
        raise AssertionError("a random record authenticated")


@FUZZ
@given(st.binary(min_size=1, max_size=100), st.data())
def test_stream_records_damaged(payload: bytes, data: st.DataObject) -> None:
    sender, receiver = _codecs()
    kind, ciphertext = sender.seal_message(payload)[0]
    damaged = data.draw(mutated([bytes([kind]) + bytes(ciphertext)], max_mutations=2))
    if len(damaged) < 1:
        return
    try:
        event = receiver.open((damaged[0], damaged[1:]))
    except LinkProtocolError:
        return
    assert damaged == bytes([kind]) + bytes(ciphertext) and event == Message(payload)


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=8), st.data())
def test_datagram_records_drop_forgeries_and_replays(
    garbage: list[bytes], data: st.DataObject
) -> None:
    sender, receiver = _codecs(datagram=True)
    genuine = sender.seal_message(b"genuine")[0]
    damaged = data.draw(mutated([genuine], max_mutations=2))
    for record in [*garbage, damaged]:
        try:
            event = receiver.open(record)
        except LinkProtocolError:
            continue
        assert event is None or record == genuine
    assert receiver.open(genuine) == Message(b"genuine") or damaged == genuine
    assert receiver.open(genuine) is None  # a replay is dropped


@FUZZ
@given(st.lists(st.tuples(st.integers(0, PONG), st.binary(max_size=300)), max_size=10), st.data())
def test_stream_parser_any_chunking(records: list[tuple[int, bytes]], data: st.DataObject) -> None:
    size = RECORD_HEADER - 1
    wire = b"".join(bytes([k]) + len(b).to_bytes(size, "big") + b for k, b in records)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    parser = RecordStreamParser()
    got: list[tuple[int, bytes]] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += [(k, bytes(b)) for k, b in parser.feed(wire[start:end])]
    assert got == records and parser.buffered == 0


def _chunks(total: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    sent = 0
    while sent < total:
        size = rng.choice([1, 2, 3, 7, 1500, 16384, 65536, 200_000])
        start = rng.randrange(0, len(block) - size)
        yield block[start : start + size]
        sent += size


@pytest.mark.parametrize("seed", [1, 2])
def test_stream_parser_memory_bound(seed: int) -> None:
    """Megabytes of garbage: the parser never holds more than one partial record, and a
    length it could never accept is refused at once (the link then closes)."""
    parser = RecordStreamParser()
    records = refused = 0
    for chunk in _chunks(GARBAGE_BYTES, seed):
        try:
            for _kind, body in parser.feed(chunk):
                assert len(body) <= MAX_RECORD
                records += 1
        except LinkProtocolError:
            refused += 1
            parser = RecordStreamParser()  # what the link does: it closes
        assert parser.buffered < RECORD_HEADER + MAX_RECORD
    assert records + refused > 0


class _Transport(asyncio.Transport):
    """Just enough of an asyncio transport for a LinkConnection to talk to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    close = abort

    def is_closing(self) -> bool:
        return self.aborted

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: Any, default: Any = None) -> Any:
        return {"peername": ("198.51.100.9", 4000), "sockname": ("203.0.113.1", 5000)}.get(
            name, default
        )


async def _connection(
    tickets: ResumptionTickets | None = None,
) -> tuple[LinkConnection, _Transport]:
    conn = LinkConnection(
        LinkHandshake(BOB, initiator=False),
        method="inbound",
        max_message=1 << 20,
        tickets=tickets,
    )
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


@FUZZ
@given(
    st.one_of(st.binary(max_size=300), mutated([LINK_MAGIC + _frame(M1) + _frame(M3)])), st.data()
)
def test_tcp_handshake_framing(wire: bytes, data: st.DataObject) -> None:
    _feed_in_pieces(wire, data, tickets=None)


def _feed_in_pieces(wire: bytes, data: st.DataObject, tickets: ResumptionTickets | None) -> None:
    """Feed ``wire`` to a listening connection cut at random points: it must never
    raise, and may only fail with a LinkProtocolError that aborts the transport."""

    async def run() -> None:
        conn, transport = await _connection(tickets)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
        for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            conn.data_received(wire[start:end])
        if conn.ready.done():
            exc = conn.ready.exception()
            assert exc is None or isinstance(exc, LinkProtocolError), exc
            assert exc is None or transport.aborted

    asyncio.run(run())


@FUZZ
@given(
    st.one_of(st.binary(max_size=300), mutated([RESUME_MAGIC + _frame(R1) + _frame(R3)])),
    st.data(),
)
def test_tcp_resumed_handshake_framing(wire: bytes, data: st.DataObject) -> None:
    _feed_in_pieces(wire, data, tickets=BOB_TICKETS)


@pytest.mark.parametrize("seed", [3, 4])
async def test_tcp_connection_memory_bound(seed: int) -> None:
    """Garbage after the magic: the connection fails, and whatever else still arrives
    (a transport may deliver what it already read) is not kept."""
    conn, transport = await _connection()
    conn.data_received(LINK_MAGIC)
    peak = 0
    for chunk in _chunks(GARBAGE_BYTES // 2, seed):
        conn.data_received(chunk)
        peak = max(peak, len(conn._buffer))
    assert transport.aborted
    assert peak <= 2 + MAX_MESSAGE + 200_000  # at most one frame plus one delivered chunk
    assert isinstance(conn.ready.exception(), LinkProtocolError)


# --- the UDP demux of a real node -----------------------------------------------------


@pytest.fixture(scope="module")
def udp_node() -> Iterator[tuple[asyncio.AbstractEventLoop, Node]]:
    """One real node on loopback for the whole module, on a loop of its own (hypothesis
    examples are synchronous and drive it with ``run_until_complete``)."""
    loop = asyncio.new_event_loop()
    conf = dict_child({"identity_name": "fuzz-udp", "handshake_timeout": 1.0}, NODE_TEST_CONF)
    node = Node(ip="127.0.0.1", port=0, conf=conf)
    loop.run_until_complete(node.start())
    try:
        yield loop, node
    finally:
        loop.run_until_complete(node.close())
        loop.close()


def _udp_seeds() -> list[bytes]:
    hs = LinkHandshake(ALICE, initiator=True)
    index = (7).to_bytes(4, "big")
    return [
        b"\xd0" + index + hs.start(padding=HS1_MIN_SIZE - 5 - 32),
        b"\xd1" + index + index + M2,
        b"\xd2" + index + index + M3,
        b"\xd3" + index,
        b"\xd4" + index + bytes(8) + b"\x01" + bytes(16),
    ]


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=200), mutated(_udp_seeds())), min_size=1, max_size=4))
def test_udp_demux_never_raises(
    udp_node: tuple[asyncio.AbstractEventLoop, Node], datagrams: list[bytes]
) -> None:
    loop, node = udp_node
    listener = node.listeners[0]
    for datagram in datagrams:
        handled = loop.run_until_complete(
            node.udp.datagram_received(datagram, ("127.0.0.1", 9), listener)
        )
        assert isinstance(handled, bool)
    assert not node.links, "fuzz datagrams made a link"


def test_udp_node_still_serves_after_fuzz(udp_node: tuple[asyncio.AbstractEventLoop, Node]) -> None:
    loop, node = udp_node

    async def check() -> None:
        from warpgate import auto_connect

        peer_conf = dict_child({"identity_name": "fuzz-peer"}, NODE_TEST_CONF)
        async with Node(ip="127.0.0.1", port=0, conf=peer_conf) as peer:
            await peer.start()
            link, _ = await auto_connect(peer, node.address(), transport="udp", timeout=5)
            inbound = await node.accept(timeout=5)
            await link.send(b"still here")
            assert await inbound.recv(5) == b"still here"
            await link.close()

    loop.run_until_complete(check())


def test_max_chunk_fits_a_record() -> None:
    assert MAX_CHUNK + 16 <= MAX_RECORD < 1 << (8 * (RECORD_HEADER - 1))
    assert END in (0, 1)
