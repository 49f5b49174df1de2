"""Resumed links: the NNpsk0 pattern against the official vectors, the ticket store's
bounds, and the resumed handshake's rules (who may complete it, and when)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.identity.keystore import public_key_bytes
from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity, LinkProtocolError
from warpgate.sansio.link_resumption import (
    TICKET_ID_SIZE,
    TICKETS_PER_PEER,
    ResumedHandshake,
    ResumptionTickets,
)
from warpgate.sansio.noise import NoiseError, NoiseHandshake

VECTORS = Path(__file__).resolve().parents[1] / "data" / "noise_nnpsk0_vectors.json"


def identity() -> LinkIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    return LinkIdentity.create(key, public_key_bytes(key.public_key()))


# --- Noise NNpsk0, official vectors ---------------------------------------------------------


def _vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text())["vectors"])


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["protocol_name"])
def test_nnpsk0_official_vector(vector: dict[str, Any]) -> None:
    h = bytes.fromhex
    cipher = vector["protocol_name"].split("_")[3]
    initiator, responder = (
        NoiseHandshake(
            initiator=role == "init",
            pattern="NNpsk0",
            psk=h(vector[f"{role}_psks"][0]),
            ephemeral_key=h(vector[f"{role}_ephemeral"]),
            prologue=h(vector[f"{role}_prologue"]),
            cipher=cipher,
        )
        for role in ("init", "resp")
    )
    assert initiator.protocol_name.decode() == vector["protocol_name"]
    messages = vector["messages"]
    for index, message in enumerate(messages[:2]):
        sender, receiver = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        written = sender.write_message(h(message["payload"]))
        assert written.hex() == message["ciphertext"], f"handshake message {index}"
        assert receiver.read_message(written).hex() == message["payload"]
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert initiator.remote_static is None  # NN: no static keys at all
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert initiator.extra_secret == responder.extra_secret and len(initiator.extra_secret) == 32
    for index, message in enumerate(messages[2:], start=2):
        send, recv = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        written = send.encrypt(h(message["payload"]))
        assert written.hex() == message["ciphertext"], f"transport message {index}"
        assert recv.decrypt(written).hex() == message["payload"]


def test_nnpsk0_refuses_a_wrong_psk_and_bad_arguments() -> None:
    i = NoiseHandshake(initiator=True, pattern="NNpsk0", psk=bytes(32))
    r = NoiseHandshake(initiator=False, pattern="NNpsk0", psk=b"\x01" * 32)
    with pytest.raises(NoiseError, match="authentication tag"):
        r.read_message(i.write_message(b"hi"))
    with pytest.raises(NoiseError, match="needs a 32-byte psk"):
        NoiseHandshake(initiator=True, pattern="NNpsk0")
    with pytest.raises(NoiseError, match="takes no psk"):
        NoiseHandshake(initiator=True, static_key=bytes(32), psk=bytes(32))
    with pytest.raises(NoiseError, match="unknown Noise pattern"):
        NoiseHandshake(initiator=True, pattern="IK", psk=bytes(32))


# --- the ticket store ------------------------------------------------------------------------


def test_both_sides_derive_matching_tickets_per_direction() -> None:
    a, b = b"A" * 33, b"B" * 33
    ta, tb = ResumptionTickets(a, lifetime=60), ResumptionTickets(b, lifetime=60)
    ta.remember(b, b"s" * 32, now=0)
    tb.remember(a, b"s" * 32, now=0)
    a_dials = ta.for_dialling(b, now=1)
    b_dials = tb.for_dialling(a, now=1)
    assert a_dials is not None and b_dials is not None
    assert len(a_dials.ticket_id) == TICKET_ID_SIZE
    assert tb.for_answering(a_dials.ticket_id, now=1) == (a, a_dials.psk)
    assert ta.for_answering(b_dials.ticket_id, now=1) == (b, b_dials.psk)
    # One direction's ticket is not the other's: a reflected message 1 is not answered.
    assert a_dials.ticket_id != b_dials.ticket_id and a_dials.psk != b_dials.psk
    assert ta.for_answering(a_dials.ticket_id, now=1) is None


def test_tickets_expire_and_can_be_forgotten() -> None:
    a, b = b"A" * 33, b"B" * 33
    tickets = ResumptionTickets(a, lifetime=10)
    tickets.remember(b, b"s" * 32, now=0)
    assert tickets.for_dialling(b, now=9.9) is not None
    assert tickets.for_dialling(b, now=10) is None
    tickets.remember(b, b"t" * 32, now=20)
    answer_id = next(iter(tickets._by_id))
    tickets.forget(b)
    assert tickets.for_dialling(b, now=21) is None
    assert tickets.for_answering(answer_id, now=21) is None
    assert len(tickets) == 0


def test_lifetime_zero_remembers_nothing_and_own_key_is_ignored() -> None:
    a = b"A" * 33
    off = ResumptionTickets(a, lifetime=0)
    off.remember(b"B" * 33, b"s" * 32, now=0)
    assert not off.enabled and len(off) == 0
    on = ResumptionTickets(a, lifetime=60)
    on.remember(a, b"s" * 32, now=0)
    assert len(on) == 0


def test_store_is_bounded_per_peer_and_in_all() -> None:
    a = b"A" * 33
    tickets = ResumptionTickets(a, lifetime=60, max_tickets=8)
    peer = b"P" * 33
    for n in range(TICKETS_PER_PEER + 3):
        tickets.remember(peer, bytes([n]) * 32, now=0)
    assert len(tickets) == TICKETS_PER_PEER  # the newest ones
    newest = tickets.for_dialling(peer, now=1)
    assert newest is not None
    for n in range(20):
        tickets.remember(bytes([n]) * 33, b"s" * 32, now=0)
    assert len(tickets) <= 8
    assert tickets.for_dialling(peer, now=1) is None  # the oldest peer went first
    assert tickets.for_dialling(bytes([19]) * 33, now=1) is not None


# --- the resumed handshake -------------------------------------------------------------------


def _full(ia: LinkIdentity, ib: LinkIdentity) -> tuple[ResumptionTickets, ResumptionTickets]:
    """Run a full handshake a -> b and return both sides' ticket stores."""
    i = LinkHandshake(ia, initiator=True, expected_identity=ib.public_key)
    r = LinkHandshake(ib, initiator=False)
    r.receive(i.receive(r.receive(i.start())))  # type: ignore[arg-type]
    i.split()
    r.split()
    assert i.resumption_secret == r.resumption_secret and len(i.resumption_secret) == 32
    ta = ResumptionTickets(ia.public_key, lifetime=60)
    tb = ResumptionTickets(ib.public_key, lifetime=60)
    ta.remember(ib.public_key, i.resumption_secret, now=0)
    tb.remember(ia.public_key, r.resumption_secret, now=0)
    return ta, tb


def _dialler(ia: LinkIdentity, ib: LinkIdentity, ta: ResumptionTickets, **kw: Any) -> Any:
    hs = ResumedHandshake.dialling(ia, ta, ib.public_key, now=1, **kw)
    assert hs is not None
    return hs


def test_resumed_handshake_round_trip() -> None:
    ia, ib = identity(), identity()
    ta, tb = _full(ia, ib)
    i = _dialler(ia, ib, ta, intent=b"why-i-dial")
    r = ResumedHandshake(ib, initiator=False, tickets=tb, now=1)
    m2 = r.receive(i.start())
    assert m2 and not r.complete  # message 1 alone could be a replay
    m3 = i.receive(m2)
    assert i.complete and i.remote_identity == ib.public_key and i.resumed
    assert r.receive(m3) is None
    assert r.complete and r.remote_identity == ia.public_key and r.resumed
    assert r.intent == b"why-i-dial"
    (i_send, i_recv), (r_send, r_recv) = i.transport_ciphers(), r.transport_ciphers()
    assert r_recv.decrypt(i_send.encrypt(b"ping")) == b"ping"
    assert i_recv.decrypt(r_send.encrypt(b"pong")) == b"pong"
    assert i.resumption_secret == b""  # a resumed link never extends its ticket


def test_replayed_first_message_cannot_complete() -> None:
    """An attacker replaying message 1 gets message 2 back but cannot produce the
    confirmation: the listener never gets a link."""
    ia, ib = identity(), identity()
    ta, tb = _full(ia, ib)
    recorded = _dialler(ia, ib, ta).start()
    for confirmation in (b"", bytes(16), bytes(40), recorded):
        victim = ResumedHandshake(ib, initiator=False, tickets=tb, now=1)
        assert victim.receive(recorded)  # message 2 goes out
        with pytest.raises(LinkProtocolError):
            victim.receive(confirmation)
        assert not victim.complete and victim.remote_identity is None


def test_unknown_ticket_falls_back_to_the_full_handshake_on_the_same_exchange() -> None:
    ia, ib = identity(), identity()
    ta, _tb = _full(ia, ib)
    i = _dialler(ia, ib, ta, intent=b"x")
    r = ResumedHandshake(
        ib, initiator=False, tickets=ResumptionTickets(b"B" * 33, lifetime=60), now=1
    )
    assert r.receive(i.start()) == b""  # "no such ticket"
    assert not r.resumed
    full1 = i.receive(b"")  # the dialler starts the full handshake
    assert not i.resumed and ta.for_dialling(ib.public_key, now=1) is None  # forgotten
    msg3 = i.receive(r.receive(full1))
    assert i.complete and i.remote_identity == ib.public_key
    assert r.receive(msg3) is None and r.complete and r.remote_identity == ia.public_key
    assert r.intent == b"x"
    i.transport_ciphers()
    r.transport_ciphers()
    assert i.resumption_secret == r.resumption_secret != b""  # a new ticket to keep


def test_listener_without_tickets_answers_with_the_full_handshake() -> None:
    ia, ib = identity(), identity()
    ta, _tb = _full(ia, ib)
    i = _dialler(ia, ib, ta)
    r = ResumedHandshake(ib, initiator=False, tickets=None, now=1)
    assert r.receive(i.start()) == b""


def test_tampered_messages_fail() -> None:
    ia, ib = identity(), identity()
    ta, tb = _full(ia, ib)
    i = _dialler(ia, ib, ta)
    m1 = bytearray(i.start())
    m1[-1] ^= 1
    with pytest.raises(LinkProtocolError, match="resumed link handshake failed"):
        ResumedHandshake(ib, initiator=False, tickets=tb, now=1).receive(bytes(m1))
    i = _dialler(ia, ib, ta)
    r = ResumedHandshake(ib, initiator=False, tickets=tb, now=1)
    m2 = bytearray(r.receive(i.start()))  # type: ignore[arg-type]
    m2[5] ^= 1
    with pytest.raises(LinkProtocolError):
        i.receive(bytes(m2))
    assert not i.complete


def test_expired_ticket_is_not_answered() -> None:
    ia, ib = identity(), identity()
    ta, tb = _full(ia, ib)
    m1 = _dialler(ia, ib, ta).start()
    assert ResumedHandshake(ib, initiator=False, tickets=tb, now=61).receive(m1) == b""


def test_plaintext_only_when_both_sides_ask() -> None:
    ia, ib = identity(), identity()
    for dialler_asks, listener_asks in ((True, True), (True, False), (False, True)):
        ta, tb = _full(ia, ib)
        i = _dialler(ia, ib, ta, plaintext=dialler_asks)
        r = ResumedHandshake(ib, initiator=False, tickets=tb, now=1, plaintext=listener_asks)
        r.receive(i.receive(r.receive(i.start())))  # type: ignore[arg-type]
        both = dialler_asks and listener_asks
        assert i.plaintext_agreed == r.plaintext_agreed == both
        assert (i.transport_ciphers() == (None, None)) == both


def test_dialler_needs_a_ticket() -> None:
    ia, ib = identity(), identity()
    with pytest.raises(LinkProtocolError, match="needs a ticket"):
        ResumedHandshake(
            ia,
            initiator=True,
            tickets=ResumptionTickets(ia.public_key, lifetime=60),
            now=0,
            expected_identity=ib.public_key,
        )


def test_expired_tickets_leave_both_indexes() -> None:
    """An expired ticket someone presents is dropped for good: presenting expired ids
    cannot grow the store past its bound (a review finding)."""
    own = b"A" * 33
    tickets = ResumptionTickets(own, lifetime=10, max_tickets=8)
    ids = []
    for n in range(8):
        peer = bytes([n]) * 33
        tickets.remember(peer, bytes([n]) * 32, now=0)
        ids.append(ResumptionTickets(peer, lifetime=10).for_dialling(own, now=0))
    for n in range(8):
        peer = bytes([n]) * 33
        other = ResumptionTickets(peer, lifetime=10)
        other.remember(own, bytes([n]) * 32, now=0)
        dial = other.for_dialling(own, now=0)
        assert dial is not None
        assert tickets.for_answering(dial.ticket_id, now=11) is None
    assert len(tickets) == 0 and not tickets._by_peer


def test_room_is_made_from_expired_tickets_first_then_the_least_used_peers() -> None:
    own = b"A" * 33
    tickets = ResumptionTickets(own, lifetime=10, max_tickets=4)
    tickets.remember(b"old" * 11, b"o" * 32, now=0)  # expires at 10
    for n in range(3):
        tickets.remember(bytes([n]) * 33, bytes([n]) * 32, now=5)
    assert tickets.for_dialling(bytes([0]) * 33, now=6) is not None  # peer 0: used lately
    tickets.remember(b"new" * 11, b"n" * 32, now=12)  # full: the expired one goes
    assert len(tickets) == 4 and b"old" * 11 not in tickets._by_peer
    tickets.remember(b"newer" * 7, b"m" * 32, now=12)  # full again: peer 1, least used
    assert tickets.for_dialling(bytes([1]) * 33, now=12) is None
    assert tickets.for_dialling(bytes([0]) * 33, now=12) is not None


def test_a_failed_handshake_stays_failed_and_calls_out_of_turn_are_refused() -> None:
    ia, ib = identity(), identity()
    ta, tb = _full(ia, ib)
    m1 = bytearray(_dialler(ia, ib, ta).start())
    m1[-1] ^= 1
    r = ResumedHandshake(ib, initiator=False, tickets=tb, now=1)
    with pytest.raises(LinkProtocolError):
        r.receive(bytes(m1))
    with pytest.raises(LinkProtocolError, match="cannot be used again"):
        r.receive(b"anything")
    i = _dialler(ia, ib, ta)
    with pytest.raises(LinkProtocolError, match="start"):
        i.receive(b"too early")
    i.start()
    with pytest.raises(LinkProtocolError, match="already started"):
        i.start()
    with pytest.raises(ValueError, match="intent"):
        _dialler(ia, ib, ta, intent=bytes(65))


def test_secrets_have_one_holder() -> None:
    """The handshake objects a link keeps do not also keep the ticket's secrets."""
    ia, ib = identity(), identity()
    i = LinkHandshake(ia, initiator=True, expected_identity=ib.public_key)
    r = LinkHandshake(ib, initiator=False)
    r.receive(i.receive(r.receive(i.start())))  # type: ignore[arg-type]
    i.split()
    assert i.resumption_secret and i._noise.extra_secret == b""
    ta, _tb = _full(ia, ib)
    d = _dialler(ia, ib, ta)
    d.start()
    assert d._ticket is None  # the psk lives in the store and in Noise's state only
