"""The paired (version 2) signal envelope: golden vector, every rejection reason, the
pair-key cache, receipts, and both versions side by side."""

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
    CURVE,
    EVE,
    EVE_PUB,
    NONCE,
    NOW,
)
from warpgate.identity.keystore import public_key_bytes
from warpgate.sansio.envelope import (
    PAIRED_OVERHEAD,
    EnvelopeBadSignature,
    EnvelopeError,
    EnvelopeMalformed,
    EnvelopeReplayed,
    EnvelopeStale,
    EnvelopeTooLarge,
    EnvelopeWrongRecipient,
    OpenedEnvelope,
    PairKeys,
    ReplayCache,
    key_id,
    make_receipt,
    open_envelope,
    parse_receipt,
    seal_envelope,
    seal_paired_envelope,
    verify_receipt,
)

# seal_paired_envelope(b"hello warpgate", alice -> bob, now=NOW, nonce=NONCE): any change
# to the wire format or the key schedule changes it.
GOLDEN = bytes.fromhex(
    "0200027268876e19db7d7a651d55d5f3cd08b0f14f0f2d99ac383d56e705cc58b2de09c50b6a6cc980f2a7"
    "000001a3185c5000000102030405060708090a0b0c0d0e0f4bb3f8e556befc0cf857c591255e8f516fb1e1"
    "09dac12905d6ca84545c68"
)
GOLDEN_REPLY_KEY = bytes.fromhex("cbe9185ea3d2a43f39ce08eca1968923f8d4a4c848d24e788116755499903a10")


def keys(private: ec.EllipticCurvePrivateKey) -> PairKeys:
    return PairKeys(private, public_key_bytes(private.public_key()))


def seal(
    payload: bytes = b"hi",
    *,
    sender: ec.EllipticCurvePrivateKey = ALICE,
    to: bytes = BOB_PUB,
    now: float = NOW,
    nonce: bytes | None = None,
) -> bytes:
    return seal_paired_envelope(
        payload,
        keys=keys(sender),
        recipient_public_key=to,
        now=now,
        nonce=os.urandom(16) if nonce is None else nonce,
    )[0]


def open_as_bob(data: bytes, **kwargs: object) -> OpenedEnvelope:
    return open_envelope(data, BOB, BOB_PUB, kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]


def test_golden_vector_encodes_and_opens() -> None:
    envelope, reply_key = seal_paired_envelope(
        b"hello warpgate", keys=keys(ALICE), recipient_public_key=BOB_PUB, now=NOW, nonce=NONCE
    )
    assert envelope == GOLDEN
    assert reply_key == GOLDEN_REPLY_KEY
    opened = open_as_bob(GOLDEN)
    assert (opened.sender, opened.payload, opened.nonce) == (ALICE_PUB, b"hello warpgate", NONCE)
    assert opened.timestamp == NOW
    assert opened.reply_key == GOLDEN_REPLY_KEY
    assert len(GOLDEN) == len(b"hello warpgate") + PAIRED_OVERHEAD


def test_round_trip_empty_and_large_payload() -> None:
    for payload in (b"", os.urandom(12_000)):
        assert open_as_bob(seal(payload)).payload == payload


def test_every_message_has_its_own_key() -> None:
    a, b = seal(b"same", nonce=NONCE), seal(b"same", nonce=bytes(16))
    assert a[67:] != b[67:]


def test_wrong_recipient() -> None:
    with pytest.raises(EnvelopeWrongRecipient):
        open_envelope(seal(), EVE, EVE_PUB, NOW)


@pytest.mark.parametrize("skew", [-121.0, 121.0])
def test_stale_both_ways(skew: float) -> None:
    with pytest.raises(EnvelopeStale):
        open_as_bob(seal(now=NOW + skew))


@pytest.mark.parametrize("offset", [0, 1, 2, 20, 34, 35, 43, 50, 51, 66, 67, 70, -1])
def test_any_flipped_byte_is_rejected(offset: int) -> None:
    damaged = bytearray(seal(b"payload"))
    damaged[offset] ^= 0x01
    with pytest.raises(EnvelopeError):
        open_as_bob(bytes(damaged))


def test_a_third_party_cannot_claim_another_sender() -> None:
    """Eve seals with her own pair key with Bob but writes Alice's key as the sender."""
    forged = bytearray(seal(b"trust me", sender=EVE))
    forged[2:35] = ALICE_PUB
    with pytest.raises(EnvelopeBadSignature):
        open_as_bob(bytes(forged))


def test_a_message_cannot_be_reflected_to_its_sender() -> None:
    """Alice -> Bob sent back to Alice: it names Alice as sender, and the direction keys
    differ, so it fails however it is relabelled."""
    envelope = bytearray(seal(b"to bob"))
    with pytest.raises(EnvelopeWrongRecipient):
        open_envelope(bytes(envelope), ALICE, ALICE_PUB, NOW)
    envelope[35:43] = key_id(ALICE_PUB)
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(bytes(envelope), ALICE, ALICE_PUB, NOW)
    relabelled = bytearray(envelope)
    relabelled[2:35] = BOB_PUB  # "from Bob": but sealed under Alice->Bob's key
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(bytes(relabelled), ALICE, ALICE_PUB, NOW)


def test_replays_are_rejected() -> None:
    cache = ReplayCache(window=120)
    envelope = seal()
    open_as_bob(envelope, replay_cache=cache)
    with pytest.raises(EnvelopeReplayed):
        open_as_bob(envelope, now=NOW + 1, replay_cache=cache)


def test_oversized_and_malformed() -> None:
    with pytest.raises(EnvelopeTooLarge):
        open_as_bob(seal(bytes(2000)), max_size=1000)
    for data in (b"\x02", b"\x02" + bytes(PAIRED_OVERHEAD - 2), b"\x02\x01" + bytes(200)):
        with pytest.raises(EnvelopeMalformed):
            open_as_bob(data)


def test_the_pair_key_cache_is_bounded_and_keeps_only_authenticated_peers() -> None:
    bob = PairKeys(BOB, BOB_PUB, max_peers=2)
    open_envelope(seal(), BOB, BOB_PUB, NOW, pair_keys=bob)
    assert len(bob) == 1
    forged = bytearray(seal(sender=EVE))
    forged[-1] ^= 1
    with pytest.raises(EnvelopeBadSignature):
        open_envelope(bytes(forged), BOB, BOB_PUB, NOW, pair_keys=bob)
    assert len(bob) == 1  # a forgery is not cached
    for n in range(3):
        other = ec.derive_private_key(0x1000 + n, CURVE)
        open_envelope(seal(sender=other), BOB, BOB_PUB, NOW, pair_keys=bob)
    assert len(bob) == 2
    assert "key" not in repr(bob).lower().replace("pairkeys", "")


def test_cached_and_fresh_keys_agree() -> None:
    alice, bob = keys(ALICE), keys(BOB)
    for _ in range(3):  # the second and third messages use cached keys on both sides
        envelope, reply_key = seal_paired_envelope(
            b"x", keys=alice, recipient_public_key=BOB_PUB, now=NOW, nonce=os.urandom(16)
        )
        assert open_envelope(envelope, BOB, BOB_PUB, NOW, pair_keys=bob).reply_key == reply_key


def test_receipts_work_and_cannot_be_forged() -> None:
    envelope, reply_key = seal_paired_envelope(
        b"ack me", keys=keys(ALICE), recipient_public_key=BOB_PUB, now=NOW, nonce=NONCE
    )
    nonce, tag = parse_receipt(make_receipt(open_as_bob(envelope)))
    assert nonce == NONCE and verify_receipt(tag, nonce, reply_key)
    assert not verify_receipt(bytes(16), nonce, reply_key)


def test_both_versions_open_side_by_side() -> None:
    signed = seal_envelope(
        b"v1", sender_private_key=ALICE, recipient_public_key=BOB_PUB, now=NOW, nonce=os.urandom(16)
    )
    assert open_as_bob(signed).payload == b"v1"
    assert open_as_bob(seal(b"v2")).payload == b"v2"
    assert signed[0] == 1 and seal()[0] == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_after_the_version(tail: bytes) -> None:
    try:
        open_as_bob(b"\x02" + tail)
    except EnvelopeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_envelopes(data: st.DataObject) -> None:
    envelope = bytearray(seal(data.draw(st.binary(max_size=64))))
    positions = data.draw(st.sets(st.integers(0, len(envelope) - 1), min_size=1, max_size=4))
    for position in positions:
        envelope[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(EnvelopeError):
        open_as_bob(bytes(envelope))
