"""The signal envelope: golden vector, every rejection reason, the replay cache, fuzzing."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.mqtt.envelope_keys import (
    ALICE,
    ALICE_PUB,
    BOB,
    BOB_PUB,
    EPHEMERAL,
    EVE,
    EVE_PUB,
    NONCE,
    NOW,
)
from warpgate.errors import WarpgateError
from warpgate.sansio.envelope import (
    ENVELOPE_OVERHEAD,
    EnvelopeBadSignature,
    EnvelopeDecryptError,
    EnvelopeError,
    EnvelopeMalformed,
    EnvelopeReplayed,
    EnvelopeStale,
    EnvelopeTooLarge,
    EnvelopeWrongRecipient,
    ReplayCache,
    key_id,
    open_envelope,
    seal_envelope,
)

# seal_envelope(b"hello warpgate", alice -> bob, now=NOW, nonce=NONCE, ephemeral=0xE9E),
# with deterministic (RFC 6979) signatures: any change to the wire format changes it.
GOLDEN = bytes.fromhex(
    "0100027268876e19db7d7a651d55d5f3cd08b0f14f0f2d99ac383d56e705cc58b2de09c50b6a6cc980f2a7"
    "000001a3185c5000000102030405060708090a0b0c0d0e0f0286dbf7888e11bb4d9d323e3b78a31a035a42"
    "3a565e72ffda9e4d496f42b2204fd3ebc85be62e63666192302b1f7a51fdb9610ed32c9c7492fd6dabbb39"
    "b4daeb644ede18a012df47ccda349ce3b4297b7d96b55407e2c9344034428cd8b856159b33ffaf3079316f"
    "674de7e9393b447f06c135b61cf9256aba1493ae309a"
)


def seal(
    payload: bytes = b"hi",
    *,
    now: float = NOW,
    to: bytes = BOB_PUB,
    nonce: bytes | None = None,
    sender: ec.EllipticCurvePrivateKey = ALICE,
) -> bytes:
    return seal_envelope(
        payload,
        sender_private_key=sender,
        recipient_public_key=to,
        now=now,
        nonce=os.urandom(16) if nonce is None else nonce,
    )


def test_golden_vector_encodes_and_opens() -> None:
    assert (
        seal_envelope(
            b"hello warpgate",
            sender_private_key=ALICE,
            recipient_public_key=BOB_PUB,
            now=NOW,
            nonce=NONCE,
            ephemeral_private_key=EPHEMERAL,
        )
        == GOLDEN
    )
    opened = open_envelope(GOLDEN, BOB, BOB_PUB, NOW + 1)
    assert opened.payload == b"hello warpgate"
    assert opened.sender == ALICE_PUB and opened.nonce == NONCE and opened.timestamp == NOW
    assert GOLDEN[0] == 1 and GOLDEN[2:35] == ALICE_PUB and GOLDEN[35:43] == key_id(BOB_PUB)
    assert len(GOLDEN) == len(b"hello warpgate") + ENVELOPE_OVERHEAD


def test_every_envelope_has_a_fresh_key() -> None:
    one, two = seal(b"same", nonce=NONCE), seal(b"same", nonce=NONCE)
    assert one[67:100] != two[67:100] and one[100:-64] != two[100:-64]


def test_round_trip_empty_and_large_payload() -> None:
    for payload in (b"", os.urandom(10_000)):
        assert open_envelope(seal(payload), BOB, BOB_PUB, NOW).payload == payload


def test_wrong_recipient() -> None:
    with pytest.raises(EnvelopeWrongRecipient):
        open_envelope(seal(), EVE, EVE_PUB, NOW)


def test_recipient_id_collision_still_fails_the_signature() -> None:
    # Eve pretending to be Bob (same key id on the wire) cannot pass the signature,
    # which covers Bob's full key.
    env = seal(to=BOB_PUB)
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(env[:35] + key_id(EVE_PUB) + env[43:], EVE, EVE_PUB, NOW)


@pytest.mark.parametrize("skew", [-121.0, 121.0, -10_000.0, 10_000.0])
def test_stale_both_ways(skew: float) -> None:
    with pytest.raises(EnvelopeStale):
        open_envelope(seal(now=NOW + skew), BOB, BOB_PUB, NOW, 120)


@pytest.mark.parametrize("skew", [-119.0, 0.0, 119.0])
def test_skew_inside_the_window_is_tolerated(skew: float) -> None:
    assert open_envelope(seal(b"ok", now=NOW + skew), BOB, BOB_PUB, NOW, 120).payload == b"ok"


def test_window_is_configurable() -> None:
    env = seal(now=NOW - 5)
    with pytest.raises(EnvelopeStale):
        open_envelope(env, BOB, BOB_PUB, NOW, 2)
    open_envelope(env, BOB, BOB_PUB, NOW, 10)


def test_oversized() -> None:
    env = seal(b"x" * 3000)
    with pytest.raises(EnvelopeTooLarge):
        open_envelope(env, BOB, BOB_PUB, NOW, max_size=2048)


@pytest.mark.parametrize("offset", [1, 2, 40, 45, 60, 80, 110, -1, -40])
def test_any_flipped_byte_is_rejected(offset: int) -> None:
    env = bytearray(seal(b"payload bytes"))
    env[offset] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_envelope(bytes(env), BOB, BOB_PUB, NOW)


def test_forged_signature() -> None:
    env = seal()
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(env[:-64] + os.urandom(64), BOB, BOB_PUB, NOW)


def test_resigned_by_someone_else_does_not_decrypt() -> None:
    """Eve swaps in her key and re-signs Alice's ciphertext: the key derivation binds the
    sender, so it does not decrypt (and is never attributed to Eve)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    env = seal(b"secret")
    body = env[:2] + EVE_PUB + env[35:-64]
    der = EVE.sign(b"warpgate signal envelope v1\x00" + BOB_PUB + body, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    with pytest.raises(EnvelopeDecryptError):
        open_envelope(body + r.to_bytes(32, "big") + s.to_bytes(32, "big"), BOB, BOB_PUB, NOW)


def test_malformed() -> None:
    for data in (b"", b"\x01", b"\x03" + bytes(300), bytes(ENVELOPE_OVERHEAD), "text"):
        with pytest.raises(EnvelopeMalformed):
            open_envelope(data, BOB, BOB_PUB, NOW)  # type: ignore[arg-type]


def test_replay_cache_rejects_replays() -> None:
    cache = ReplayCache(window=120)
    env = seal()
    open_envelope(env, BOB, BOB_PUB, NOW, replay_cache=cache)
    with pytest.raises(EnvelopeReplayed):
        open_envelope(env, BOB, BOB_PUB, NOW + 1, replay_cache=cache)
    # The same nonce from another sender is a different message.
    open_envelope(seal(nonce=env[51:67], sender=EVE), BOB, BOB_PUB, NOW, replay_cache=cache)


def test_replay_cache_forgets_only_what_the_window_would_reject() -> None:
    cache = ReplayCache(window=10)
    cache.check_and_add(ALICE_PUB, NONCE, NOW, NOW)
    with pytest.raises(EnvelopeReplayed):
        cache.check_and_add(ALICE_PUB, NONCE, NOW, NOW + 10)
    cache.check_and_add(ALICE_PUB, b"other", NOW + 11, NOW + 11)  # expires the first
    assert len(cache) == 1


def test_replay_cache_is_bounded_and_fails_closed() -> None:
    cache = ReplayCache(window=100, max_entries=3, per_sender=3)
    for i in range(3):
        cache.check_and_add(ALICE_PUB, bytes([i]), NOW + i, NOW)
    cache.check_and_add(ALICE_PUB, b"\x09", NOW + 5, NOW)  # evicts the oldest (NOW + 0)
    assert len(cache) == 3
    with pytest.raises(EnvelopeReplayed):  # could be a replay of the forgotten one
        cache.check_and_add(ALICE_PUB, bytes([0]), NOW, NOW)


def test_one_key_flooding_the_replay_cache_only_hurts_itself() -> None:
    """Mallory (a key is free) fills the cache with envelopes stamped far ahead: room is
    made from her own entries, her floor rises, and Alice is still heard."""
    mallory, alice = b"M" * 33, ALICE_PUB
    cache = ReplayCache(window=120, max_entries=64, per_sender=16)
    for i in range(1000):
        cache.check_and_add(mallory, i.to_bytes(4, "big"), NOW + 100 + i / 100, NOW)
    assert len(cache) == 16
    cache.check_and_add(alice, b"hello", NOW, NOW)  # not refused
    with pytest.raises(EnvelopeReplayed, match="older than"):
        cache.check_and_add(mallory, b"late", NOW + 105, NOW)
    with pytest.raises(EnvelopeReplayed, match="already"):
        cache.check_and_add(alice, b"hello", NOW, NOW)


def test_many_keys_filling_the_replay_cache_raise_only_their_own_floors() -> None:
    cache = ReplayCache(window=120, max_entries=64, per_sender=16)
    cache.check_and_add(ALICE_PUB, b"first", NOW - 10, NOW)
    for key in range(40):
        for i in range(16):
            cache.check_and_add(bytes([key]) * 33, bytes([i]), NOW + 119, NOW + 1)
    assert len(cache) == 64
    # Alice's old entry made room: her floor rose to its timestamp, no further.
    assert cache.floor_for(ALICE_PUB) == NOW - 10
    cache.check_and_add(ALICE_PUB, b"second", NOW + 1, NOW + 1)
    with pytest.raises(EnvelopeReplayed):
        cache.check_and_add(ALICE_PUB, b"first", NOW - 10, NOW + 1)


def test_replay_cache_floors_are_bounded_too() -> None:
    """More evicted senders than max_entries: the lowest floors fold into one for all."""
    cache = ReplayCache(window=120, max_entries=4, per_sender=1)
    for key in range(50):
        cache.check_and_add(bytes([key]) * 33, b"a", NOW + key, NOW)
        cache.check_and_add(bytes([key]) * 33, b"b", NOW + key + 0.5, NOW)
    assert len(cache._floors) <= 4 and len(cache) <= 4
    assert cache.floor_for(b"\x00" * 33) >= NOW  # folded into the floor for everyone


def test_forged_envelopes_do_not_fill_the_replay_cache() -> None:
    cache = ReplayCache()
    env = seal()
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(env[:-64] + bytes(63) + b"\x01", BOB, BOB_PUB, NOW, replay_cache=cache)
    assert len(cache) == 0


def test_errors_are_warpgate_errors() -> None:
    assert issubclass(EnvelopeError, WarpgateError) and issubclass(EnvelopeError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(data, BOB, BOB_PUB, NOW)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_envelopes(data: st.DataObject) -> None:
    env = bytearray(seal(b"fuzz me"))
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(env) - 1), st.integers(1, 255)),
            min_size=1,
            max_size=4,
            unique_by=lambda edit: edit[0],
        )
    )
    for pos, xor in edits:
        env[pos] ^= xor
    cut = data.draw(st.integers(0, len(env)))
    with pytest.raises(EnvelopeError):
        open_envelope(bytes(env[:cut] if cut < len(env) else env), BOB, BOB_PUB, NOW)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_valid_header_random_tail(tail: bytes) -> None:
    env = seal()
    with pytest.raises(EnvelopeError):
        open_envelope(env[:100] + tail, BOB, BOB_PUB, NOW)


def test_receipts_prove_receipt_and_cannot_be_forged() -> None:
    from warpgate.sansio.envelope import (
        make_receipt,
        parse_receipt,
        seal_envelope_with_reply_key,
        verify_receipt,
    )

    env, reply_key = seal_envelope_with_reply_key(
        b"ack me", sender_private_key=ALICE, recipient_public_key=BOB_PUB, now=NOW, nonce=NONCE
    )
    opened = open_envelope(env, BOB, BOB_PUB, NOW)
    assert opened.reply_key == reply_key and len(reply_key) == 32
    receipt = make_receipt(opened)
    assert len(receipt) == 33 and receipt[0] == 0x81
    nonce, tag = parse_receipt(receipt)
    assert nonce == NONCE and verify_receipt(tag, nonce, reply_key)
    assert not verify_receipt(bytes(16), nonce, reply_key)
    # Another envelope with the same nonce has another reply key.
    _, other_key = seal_envelope_with_reply_key(
        b"ack me", sender_private_key=ALICE, recipient_public_key=BOB_PUB, now=NOW, nonce=NONCE
    )
    assert not verify_receipt(tag, nonce, other_key)
    for bad in (b"", receipt[:-1], b"\x01" + receipt[1:]):
        with pytest.raises(EnvelopeMalformed):
            parse_receipt(bad)


def test_replay_cache_heaps_stay_the_size_of_what_they_hold() -> None:
    """Lazy deletion must not let the heaps grow with traffic (a review finding): an
    honest sender for a day, a flood from one key."""
    cache = ReplayCache(window=120, max_entries=1000)
    for i in range(20000):
        cache.check_and_add(ALICE_PUB, i.to_bytes(4, "big"), NOW + i, NOW + i)
    assert len(cache._sender_heaps[ALICE_PUB]) <= 2 * len(cache) + 64
    mallory = b"M" * 33
    for i in range(20000):
        cache.check_and_add(mallory, i.to_bytes(4, "big"), NOW + 20100 + i / 1000, NOW + 20000)
    assert len(cache._heap) <= 2 * len(cache) + 64
    assert len(cache._sender_heaps[mallory]) <= 2 * cache.per_sender + 64


def test_a_refused_envelope_evicts_nothing() -> None:
    cache = ReplayCache(window=120, max_entries=8, per_sender=2)
    cache.check_and_add(ALICE_PUB, b"a", NOW + 5, NOW)
    cache.check_and_add(ALICE_PUB, b"b", NOW + 6, NOW)
    with pytest.raises(EnvelopeReplayed):  # older than all Alice's: making room would refuse it
        cache.check_and_add(ALICE_PUB, b"c", NOW + 1, NOW)
    assert len(cache) == 2 and cache.floor_for(ALICE_PUB) < NOW


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 20), st.floats(-120, 120)),
        max_size=200,
    )
)
def test_replay_cache_never_accepts_a_nonce_twice(ops: list[tuple[int, int, float]]) -> None:
    """Whatever arrives in whatever order (inside the freshness window, which the caller
    checks first): an envelope accepted once (its sender, nonce and authenticated
    timestamp) is never accepted again, and the cache and its floors stay bounded."""
    cache = ReplayCache(window=120, max_entries=8, per_sender=3)
    accepted: set[tuple[int, int, float]] = set()
    for sender, nonce, offset in ops:
        try:
            cache.check_and_add(bytes([sender]) * 33, bytes([nonce]), NOW + offset, NOW)
        except EnvelopeReplayed:
            continue
        assert (sender, nonce, offset) not in accepted
        accepted.add((sender, nonce, offset))
        assert len(cache) <= 8 and len(cache._floors) <= 8
