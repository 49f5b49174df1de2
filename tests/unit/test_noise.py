"""Noise_XX_25519_{AESGCM,ChaChaPoly}_SHA256: official vectors, round trips, tampering, turn
order, limits, low-order keys, cipher states, and fuzzing."""

from __future__ import annotations

import array
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from warpgate.errors import WarpgateError
from warpgate.sansio.noise import (
    CIPHERS,
    DEFAULT_CIPHER,
    MAX_MESSAGE,
    MAX_NONCE,
    PROTOCOL_NAME,
    TAG_SIZE,
    CipherState,
    NoiseError,
    NoiseHandshake,
    generate_static_key,
    protocol_name,
    public_key,
)

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "noise_xx_vectors.json"
FUZZ = settings(max_examples=200, deadline=None)
HANDSHAKE_MESSAGES = 3
both_ciphers = pytest.mark.parametrize("cipher", CIPHERS)

# Fixed keys so the same handshake can be replayed many times (tamper tests).
I_STATIC = bytes(range(1, 33))
R_STATIC = bytes(range(33, 65))
I_EPHEMERAL = bytes(range(65, 97))
R_EPHEMERAL = bytes(range(97, 129))

# X25519 public keys whose shared secret with any private key is all zeros (low order),
# including non-canonical encodings of 0 and 1 (p and p + 1).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 19).to_bytes(32, "little"),
    (2**255 - 18).to_bytes(32, "little"),
]


def load_vectors(cipher: str | None = None) -> list[dict[str, Any]]:
    """The vectors for ``cipher`` (default: for every supported cipher), each checked to be
    present."""
    data = json.loads(VECTORS_PATH.read_text())
    vectors = []
    for name in CIPHERS if cipher is None else (cipher,):
        found = [v for v in data["vectors"] if v["protocol_name"] == protocol_name(name).decode()]
        assert found, f"no {protocol_name(name).decode()} vectors in the data file"
        vectors += found
    return vectors


def vector_cipher(vector: dict[str, Any]) -> str:
    """ "Noise_XX_25519_AESGCM_SHA256" -> "AESGCM"."""
    return vector["protocol_name"].split("_")[3]


def vector_id(vector: dict[str, Any]) -> str:
    return f"{vector_cipher(vector)}-{vector['source'].split(':')[0]}"


def pair(
    *,
    i_prologue: bytes = b"",
    r_prologue: bytes = b"",
    fixed: bool = True,
    cipher: str = DEFAULT_CIPHER,
) -> tuple[NoiseHandshake, NoiseHandshake]:
    if fixed:
        initiator = NoiseHandshake(
            initiator=True,
            static_key=I_STATIC,
            prologue=i_prologue,
            ephemeral_key=I_EPHEMERAL,
            cipher=cipher,
        )
        responder = NoiseHandshake(
            initiator=False,
            static_key=R_STATIC,
            prologue=r_prologue,
            ephemeral_key=R_EPHEMERAL,
            cipher=cipher,
        )
    else:
        initiator = NoiseHandshake(
            initiator=True, static_key=generate_static_key(), prologue=i_prologue, cipher=cipher
        )
        responder = NoiseHandshake(
            initiator=False, static_key=generate_static_key(), prologue=r_prologue, cipher=cipher
        )
    return initiator, responder


def handshake(
    initiator: NoiseHandshake,
    responder: NoiseHandshake,
    payloads: tuple[bytes, bytes, bytes] = (b"", b"", b""),
) -> list[bytes]:
    m1 = initiator.write_message(payloads[0])
    assert responder.read_message(m1) == payloads[0]
    m2 = responder.write_message(payloads[1])
    assert initiator.read_message(m2) == payloads[1]
    m3 = initiator.write_message(payloads[2])
    assert responder.read_message(m3) == payloads[2]
    return [m1, m2, m3]


def flip(message: bytes, byte: int, bit: int = 0) -> bytes:
    out = bytearray(message)
    out[byte] ^= 1 << bit
    return bytes(out)


def stage(step: int, cipher: str = DEFAULT_CIPHER) -> tuple[NoiseHandshake, NoiseHandshake, bytes]:
    """A fresh fixed-key pair advanced to just before ``step`` is read; returns the genuine
    message for that step and the (sender, receiver) pair."""
    initiator, responder = pair(cipher=cipher)
    m1 = initiator.write_message(b"one")
    if step == 0:
        return initiator, responder, m1
    responder.read_message(m1)
    m2 = responder.write_message(b"two")
    if step == 1:
        return responder, initiator, m2
    initiator.read_message(m2)
    m3 = initiator.write_message(b"three")
    return initiator, responder, m3


# --- official test vectors ----------------------------------------------------------------


def vector_pair(vector: dict[str, Any]) -> tuple[NoiseHandshake, NoiseHandshake]:
    h = bytes.fromhex
    cipher = vector_cipher(vector)
    initiator = NoiseHandshake(
        initiator=True,
        static_key=h(vector["init_static"]),
        ephemeral_key=h(vector["init_ephemeral"]),
        prologue=h(vector["init_prologue"]),
        cipher=cipher,
    )
    responder = NoiseHandshake(
        initiator=False,
        static_key=h(vector["resp_static"]),
        ephemeral_key=h(vector["resp_ephemeral"]),
        prologue=h(vector["resp_prologue"]),
        cipher=cipher,
    )
    return initiator, responder


@pytest.mark.parametrize("vector", load_vectors(), ids=vector_id)
def test_official_vector(vector: dict[str, Any]) -> None:
    h = bytes.fromhex
    assert not vector.get("init_psks") and not vector.get("resp_psks"), "plain XX has no psk"
    initiator, responder = vector_pair(vector)
    assert initiator.protocol_name.decode() == vector["protocol_name"]
    assert initiator.cipher == responder.cipher == vector_cipher(vector)
    messages = vector["messages"]
    assert len(messages) > HANDSHAKE_MESSAGES, "the vector should include transport messages"

    for index, message in enumerate(messages[:HANDSHAKE_MESSAGES]):
        sender, receiver = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        written = sender.write_message(h(message["payload"]))
        assert written.hex() == message["ciphertext"], f"handshake message {index}"
        assert receiver.read_message(written).hex() == message["payload"]
        assert sender.message_index == receiver.message_index == index + 1

    assert initiator.complete and responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert initiator.remote_static == public_key(h(vector["resp_static"]))
    assert responder.remote_static == public_key(h(vector["init_static"]))

    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert {c.cipher for c in (i_send, i_recv, r_send, r_recv)} == {vector_cipher(vector)}
    for index, message in enumerate(messages[HANDSHAKE_MESSAGES:], start=HANDSHAKE_MESSAGES):
        send, recv = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        written = send.encrypt(h(message["payload"]))
        assert written.hex() == message["ciphertext"], f"transport message {index}"
        assert recv.decrypt(written).hex() == message["payload"]


def test_vector_file_cites_its_source() -> None:
    data = json.loads(VECTORS_PATH.read_text())
    assert "cacophony" in data["source"] and "snow" in data["source"]
    assert all(v["source"] for v in data["vectors"])
    names = {protocol_name(cipher).decode() for cipher in CIPHERS}
    assert all(v["protocol_name"] in names for v in data["vectors"])
    for cipher in CIPHERS:  # a cacophony and a snow vector for each cipher
        sources = {v["source"].split(":")[0] for v in load_vectors(cipher)}
        assert sources == {"cacophony", "snow"}, cipher


@pytest.mark.parametrize("vector", [load_vectors(cipher)[0] for cipher in CIPHERS], ids=vector_id)
def test_vector_transport_with_explicit_nonces(vector: dict[str, Any]) -> None:
    """The implicit-counter vectors also hold for encrypt_with_nonce with the same nonces
    (message 5 uses nonce 1, where AESGCM's big-endian and ChaChaPoly's little-endian
    counters differ)."""
    h = bytes.fromhex
    initiator, responder = vector_pair(vector)
    msgs = vector["messages"]
    handshake(initiator, responder, tuple(h(m["payload"]) for m in msgs[:3]))  # type: ignore[arg-type]
    i_send, i_recv = initiator.split()
    r_send, _ = responder.split()
    # Transport messages keep alternating: index 3 is the responder's first (nonce 0),
    # index 4 the initiator's first (nonce 0), index 5 the responder's second (nonce 1).
    assert r_send.encrypt_with_nonce(0, h(msgs[3]["payload"])).hex() == msgs[3]["ciphertext"]
    assert i_send.encrypt_with_nonce(0, h(msgs[4]["payload"])).hex() == msgs[4]["ciphertext"]
    assert r_send.encrypt_with_nonce(1, h(msgs[5]["payload"])).hex() == msgs[5]["ciphertext"]
    assert i_recv.decrypt_with_nonce(1, h(msgs[5]["ciphertext"])).hex() == msgs[5]["payload"]
    assert r_send.nonce == 0 and i_recv.nonce == 0


# --- round trips --------------------------------------------------------------------------


@both_ciphers
def test_round_trip_random_keys(cipher: str) -> None:
    i_key, r_key = generate_static_key(), generate_static_key()
    initiator = NoiseHandshake(
        initiator=True, static_key=i_key, prologue=b"warpgate v1", cipher=cipher
    )
    responder = NoiseHandshake(
        initiator=False, static_key=r_key, prologue=b"warpgate v1", cipher=cipher
    )
    assert initiator.message_index == responder.message_index == 0
    assert initiator.remote_static is None and responder.remote_static is None
    assert not initiator.complete

    m1 = initiator.write_message(b"hello")
    assert b"hello" in m1  # message 1's payload travels in clear
    assert len(m1) == 32 + 5
    assert responder.read_message(m1) == b"hello"
    assert responder.remote_static is None

    m2 = responder.write_message(b"responder identity")
    assert len(m2) == 32 + 48 + len(b"responder identity") + TAG_SIZE
    assert initiator.read_message(m2) == b"responder identity"
    assert initiator.remote_static == public_key(r_key)
    assert not initiator.complete and not responder.complete

    m3 = initiator.write_message(b"initiator identity")
    assert len(m3) == 48 + len(b"initiator identity") + TAG_SIZE
    assert initiator.complete
    assert responder.read_message(m3) == b"initiator identity"
    assert responder.remote_static == public_key(i_key)
    assert responder.complete
    assert initiator.message_index == responder.message_index == 3

    assert len(initiator.handshake_hash) == 32
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.local_static_public == public_key(i_key)

    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert i_send.cipher == r_recv.cipher == cipher
    for n in range(5):
        ping, pong = f"ping {n}".encode(), f"pong {n}".encode()
        assert r_recv.decrypt(i_send.encrypt(ping)) == ping
        assert i_recv.decrypt(r_send.encrypt(pong)) == pong
    assert i_send.nonce == r_recv.nonce == 5
    assert r_recv.decrypt(i_send.encrypt(b"")) == b""
    # The two directions use different keys.
    assert r_recv.decrypt(i_send.encrypt(b"x")) == b"x"
    with pytest.raises(NoiseError):
        i_recv.decrypt(i_send.encrypt(b"reflected"))


@both_ciphers
def test_bytes_like_round_trip(cipher: str) -> None:
    """bytearray and memoryview inputs (also as associated data) round-trip and give the
    same ciphertext as bytes."""
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder)
    send, _ = initiator.split()
    _, recv = responder.split()
    body = bytes(range(256)) * 4
    buffer = bytearray(b"xx" + body + b"yy")
    expected = send.encrypt_with_nonce(7, body, b"ad")
    for plaintext in (bytearray(body), memoryview(buffer)[2:-2], memoryview(body)):
        assert send.encrypt_with_nonce(7, plaintext, memoryview(b"ad")) == expected
    assert recv.decrypt_with_nonce(7, bytearray(expected), bytearray(b"ad")) == body
    assert recv.decrypt_with_nonce(7, memoryview(b"--" + expected)[2:], b"ad") == body
    # Buffers the AEAD cannot read directly (wide items, gaps) are converted, not misread.
    wide = array.array("I", range(256))
    assert send.encrypt_with_nonce(8, wide) == send.encrypt_with_nonce(8, wide.tobytes())
    assert send.encrypt_with_nonce(9, memoryview(b"a-b-c")[::2]) == send.encrypt_with_nonce(
        9, b"abc"
    )
    for _ in range(3):  # implicit counter too
        assert recv.decrypt(memoryview(send.encrypt(memoryview(buffer)))) == buffer
    with pytest.raises(TypeError):
        send.encrypt_with_nonce(10, "text")  # type: ignore[arg-type]
    # Size limits count bytes, not items.
    with pytest.raises(NoiseError):
        send.encrypt_with_nonce(11, array.array("I", bytes(4 * (MAX_MESSAGE // 4 + 1))))


def test_each_run_uses_fresh_ephemerals() -> None:
    a = handshake(*pair(fixed=False))
    b = handshake(*pair(fixed=False))
    assert a[0][:32] != b[0][:32]


def test_fixed_keys_are_deterministic() -> None:
    assert handshake(*pair()) == handshake(*pair())


def test_split_rules() -> None:
    initiator, responder = pair()
    with pytest.raises(NoiseError, match="not complete"):
        initiator.split()
    handshake(initiator, responder)
    initiator.split()
    with pytest.raises(NoiseError, match="already"):
        initiator.split()
    # handshake_hash survives split (channel binding).
    assert initiator.handshake_hash == responder.handshake_hash


@both_ciphers
def test_associated_data_in_transport(cipher: str) -> None:
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder)
    send, _ = initiator.split()
    _, recv = responder.split()
    ct = send.encrypt(b"body", ad=b"header")
    with pytest.raises(NoiseError):
        recv.decrypt(ct, ad=b"other")
    assert recv.decrypt(ct, ad=b"header") == b"body"


# --- tampering ----------------------------------------------------------------------------


@both_ciphers
@pytest.mark.parametrize("step", [1, 2])
def test_every_bit_flip_of_messages_2_and_3_is_detected(step: int, cipher: str) -> None:
    _, _, genuine = stage(step, cipher)
    for byte in range(len(genuine)):
        for bit in range(8):
            _, receiver, _ = stage(step, cipher)
            with pytest.raises(NoiseError):
                receiver.read_message(flip(genuine, byte, bit))
            assert receiver.failed
    _, receiver, _ = stage(step, cipher)
    receiver.read_message(genuine)  # the untampered message is fine


def test_every_bit_flip_of_message_1_is_detected_by_the_initiator() -> None:
    """Message 1 is unauthenticated when read; tampering surfaces at message 2, whose
    encryption is bound to the transcript hash."""
    _, _, genuine = stage(0)
    for byte in range(len(genuine)):
        for bit in range(8):
            initiator, responder, _ = stage(0)
            responder.read_message(flip(genuine, byte, bit))
            m2 = responder.write_message(b"two")
            with pytest.raises(NoiseError):
                initiator.read_message(m2)
            assert initiator.failed


@pytest.mark.parametrize("step", [0, 1, 2])
def test_truncated_and_extended_messages_fail(step: int) -> None:
    _, _, genuine = stage(step)
    cuts = [0, 1, 31, 32, len(genuine) - 1]
    for cut in cuts:
        if step == 0 and cut >= 32:
            continue  # message 1 has no tag: any length >= 32 parses
        _, receiver, _ = stage(step)
        with pytest.raises(NoiseError):
            receiver.read_message(genuine[:cut])
    if step > 0:
        _, receiver, _ = stage(step)
        with pytest.raises(NoiseError):
            receiver.read_message(genuine + b"\x00")


@both_ciphers
def test_wrong_prologue_fails(cipher: str) -> None:
    initiator, responder = pair(i_prologue=b"warpgate v1", r_prologue=b"warpgate v2", cipher=cipher)
    responder.read_message(initiator.write_message())
    with pytest.raises(NoiseError, match="decryption failed"):
        initiator.read_message(responder.write_message())
    assert initiator.failed


@pytest.mark.parametrize(
    ("i_cipher", "r_cipher"), [("AESGCM", "ChaChaPoly"), ("ChaChaPoly", "AESGCM")]
)
def test_mismatched_ciphers_fail_the_handshake(i_cipher: str, r_cipher: str) -> None:
    """The cipher name is hashed into h, and the AEADs differ: message 2 cannot verify."""
    initiator = NoiseHandshake(
        initiator=True, static_key=I_STATIC, ephemeral_key=I_EPHEMERAL, cipher=i_cipher
    )
    responder = NoiseHandshake(
        initiator=False, static_key=R_STATIC, ephemeral_key=R_EPHEMERAL, cipher=r_cipher
    )
    assert responder.read_message(initiator.write_message(b"one")) == b"one"  # in clear
    m2 = responder.write_message(b"two")
    with pytest.raises(NoiseError, match="decryption failed"):
        initiator.read_message(m2)
    assert initiator.failed and not initiator.complete
    assert initiator.remote_static is None
    with pytest.raises(NoiseError, match="failed"):
        initiator.write_message()


def test_mismatched_ciphers_fail_even_with_a_forged_message_2() -> None:
    """Only the cipher differs (same keys, same transcript so far): the responder still
    cannot accept message 3 from a ChaChaPoly initiator when it runs AESGCM."""
    _, aes_responder, _ = stage(2, "AESGCM")
    _, _, chacha_m3 = stage(2, "ChaChaPoly")
    with pytest.raises(NoiseError):
        aes_responder.read_message(chacha_m3)
    assert aes_responder.failed


@both_ciphers
def test_transport_tamper_does_not_advance_counter(cipher: str) -> None:
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder)
    send, _ = initiator.split()
    _, recv = responder.split()
    first, second = send.encrypt(b"first"), send.encrypt(b"second")
    for byte in range(len(first)):
        with pytest.raises(NoiseError):
            recv.decrypt(flip(first, byte, byte % 8))
    with pytest.raises(NoiseError):
        recv.decrypt(first[: TAG_SIZE - 1])
    with pytest.raises(NoiseError):
        recv.decrypt(second)  # out of order: wrong implicit nonce
    assert recv.nonce == 0
    assert recv.decrypt(first) == b"first"
    assert recv.decrypt(second) == b"second"
    with pytest.raises(NoiseError):
        recv.decrypt(first)  # replay
    assert recv.nonce == 2


# --- turn order and single use ------------------------------------------------------------


def test_out_of_turn_calls_raise_and_name_the_step() -> None:
    initiator, responder = pair()
    with pytest.raises(NoiseError, match=r"responder must read message 1"):
        responder.write_message()
    with pytest.raises(NoiseError, match=r"initiator must write message 1"):
        initiator.read_message(b"\x00" * 32)
    m1 = initiator.write_message()
    with pytest.raises(NoiseError, match=r"initiator must read message 2"):
        initiator.write_message()
    responder.read_message(m1)
    with pytest.raises(NoiseError, match=r"responder must write message 2"):
        responder.read_message(m1)
    # Out-of-turn calls change nothing: the handshake still completes.
    m2 = responder.write_message()
    initiator.read_message(m2)
    with pytest.raises(NoiseError, match=r"responder must read message 3"):
        responder.write_message()
    responder.read_message(initiator.write_message())
    assert initiator.complete and responder.complete
    for side in (initiator, responder):
        with pytest.raises(NoiseError, match="complete"):
            side.write_message()
        with pytest.raises(NoiseError, match="complete"):
            side.read_message(b"\x00" * 64)


def test_failed_handshake_is_unusable() -> None:
    _, receiver, genuine = stage(1)
    with pytest.raises(NoiseError):
        receiver.read_message(flip(genuine, 40))
    assert receiver.failed and not receiver.complete
    assert receiver.remote_static is None
    with pytest.raises(NoiseError, match="failed"):
        receiver.read_message(genuine)
    with pytest.raises(NoiseError, match="failed"):
        receiver.write_message()
    with pytest.raises(NoiseError, match="failed"):
        receiver.split()


def test_failed_responder_after_message_3() -> None:
    _, receiver, genuine = stage(2)
    with pytest.raises(NoiseError):
        receiver.read_message(flip(genuine, 5))
    assert receiver.remote_static is None  # the unauthenticated key is not exposed
    with pytest.raises(NoiseError, match="failed"):
        receiver.read_message(genuine)


# --- sizes --------------------------------------------------------------------------------


def test_max_payload_per_message() -> None:
    initiator, responder = pair()
    assert initiator.max_payload() == MAX_MESSAGE - 32
    big = b"a" * initiator.max_payload()
    with pytest.raises(NoiseError, match="exceeds"):
        initiator.write_message(big + b"a")
    assert initiator.message_index == 0 and not initiator.failed  # nothing changed
    m1 = initiator.write_message(big)
    assert len(m1) == MAX_MESSAGE
    assert responder.read_message(m1) == big

    big2 = b"b" * responder.max_payload()
    assert responder.max_payload() == MAX_MESSAGE - 96
    with pytest.raises(NoiseError, match="exceeds"):
        responder.write_message(big2 + b"b")
    m2 = responder.write_message(big2)
    assert len(m2) == MAX_MESSAGE
    assert initiator.read_message(m2) == big2

    big3 = b"c" * initiator.max_payload()
    assert initiator.max_payload() == MAX_MESSAGE - 64
    m3 = initiator.write_message(big3)
    assert len(m3) == MAX_MESSAGE
    assert responder.read_message(m3) == big3


def test_oversized_handshake_message_rejected() -> None:
    _, receiver, _ = stage(0)
    with pytest.raises(NoiseError, match="exceeds"):
        receiver.read_message(b"\x00" * (MAX_MESSAGE + 1))
    assert receiver.failed


@both_ciphers
def test_transport_size_limits(cipher: str) -> None:
    c = CipherState(bytes(32), cipher)
    d = CipherState(bytes(32), cipher=cipher)
    biggest = b"z" * (MAX_MESSAGE - TAG_SIZE)
    ct = c.encrypt(biggest)
    assert len(ct) == MAX_MESSAGE
    assert d.decrypt(ct) == biggest
    with pytest.raises(NoiseError):
        c.encrypt(biggest + b"z")
    with pytest.raises(NoiseError):
        d.decrypt(ct + b"z")
    assert c.nonce == d.nonce == 1


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_from_initiator_rejected(point: bytes) -> None:
    _, responder = pair()
    responder.read_message(point)  # message 1 carries no DH yet
    with pytest.raises(NoiseError, match="low-order"):
        responder.write_message()
    assert responder.failed


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_low_order_ephemeral_from_responder_rejected(point: bytes) -> None:
    _, initiator, genuine = stage(1)
    with pytest.raises(NoiseError, match="low-order"):
        initiator.read_message(point + genuine[32:])
    assert initiator.failed


def test_key_helpers() -> None:
    key = generate_static_key()
    assert len(key) == 32 and key != generate_static_key()
    pub = public_key(key)
    assert len(pub) == 32 and pub == public_key(key)
    # RFC 7748 section 6.1 (Alice's key pair).
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert public_key(alice).hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    for bad in (b"", b"\x00" * 31, b"\x00" * 33):
        with pytest.raises(NoiseError):
            public_key(bad)
        with pytest.raises(NoiseError):
            NoiseHandshake(initiator=True, static_key=bad)
        with pytest.raises(NoiseError):
            NoiseHandshake(initiator=True, static_key=key, ephemeral_key=bad)


def test_error_type() -> None:
    assert issubclass(NoiseError, WarpgateError)
    assert issubclass(NoiseError, ValueError)


# --- CipherState --------------------------------------------------------------------------


def test_cipher_nonce_layout_matches_chacha20poly1305() -> None:
    key = bytes(range(32))
    nonce = 0x0102030405060708
    expected = ChaCha20Poly1305(key).encrypt(
        b"\x00\x00\x00\x00" + nonce.to_bytes(8, "little"), b"data", b"ad"
    )
    assert CipherState(key, "ChaChaPoly").encrypt_with_nonce(nonce, b"data", b"ad") == expected


def test_cipher_nonce_layout_matches_aes256gcm() -> None:
    """AESGCM: AES-256-GCM, nonce = 4 zero bytes + the counter big-endian (spec section 12.4)."""
    key = bytes(range(32))
    nonce = 0x0102030405060708
    expected = AESGCM(key).encrypt(
        b"\x00\x00\x00\x00" + bytes.fromhex("0102030405060708"), b"data", b"ad"
    )
    assert CipherState(key, "AESGCM").encrypt_with_nonce(nonce, b"data", b"ad") == expected
    assert CipherState(key).encrypt_with_nonce(nonce, b"data", b"ad") == expected  # default
    assert CipherState(key).encrypt_with_nonce(1, b"x") != CipherState(
        key, "ChaChaPoly"
    ).encrypt_with_nonce(1, b"x")


def test_cipher_names_and_defaults() -> None:
    assert CIPHERS == ("AESGCM", "ChaChaPoly")
    assert DEFAULT_CIPHER == "AESGCM"
    assert protocol_name() == protocol_name("AESGCM") == b"Noise_XX_25519_AESGCM_SHA256"
    assert protocol_name("ChaChaPoly") == PROTOCOL_NAME == b"Noise_XX_25519_ChaChaPoly_SHA256"
    hs = NoiseHandshake(initiator=True, static_key=I_STATIC)
    assert hs.cipher == "AESGCM" and hs.protocol_name == b"Noise_XX_25519_AESGCM_SHA256"
    assert CipherState(bytes(32)).cipher == "AESGCM"
    assert CipherState(bytes(32), "ChaChaPoly").cipher == "ChaChaPoly"
    # The default handshake is the AESGCM one, message for message.
    default = handshake(*pair())
    assert default == handshake(*pair(cipher="AESGCM"))
    assert default[1:] != handshake(*pair(cipher="ChaChaPoly"))[1:]


@pytest.mark.parametrize("bad", ["aesgcm", "AESGCM256", "ChaCha20Poly1305", "", None, b"AESGCM"])
def test_unknown_cipher_rejected(bad: Any) -> None:
    pattern = r"unknown Noise cipher .*'AESGCM', 'ChaChaPoly'"
    with pytest.raises(NoiseError, match=pattern):
        NoiseHandshake(initiator=True, static_key=I_STATIC, cipher=bad)
    with pytest.raises(NoiseError, match=pattern):
        CipherState(bytes(32), bad)
    with pytest.raises(NoiseError, match=pattern):
        protocol_name(bad)


@both_ciphers
def test_split_gives_the_handshake_cipher(cipher: str) -> None:
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder)
    i_send, i_recv = initiator.split()
    r_send, r_recv = responder.split()
    assert {c.cipher for c in (i_send, i_recv, r_send, r_recv)} == {cipher}
    assert cipher in repr(i_send)
    ct = i_send.encrypt(b"hello")
    assert r_recv.decrypt(ct) == b"hello"
    # Same keys under the other cipher do not decrypt it.
    other = next(c for c in CIPHERS if c != cipher)
    with pytest.raises(NoiseError):
        CipherState(r_recv._key, other).decrypt(ct)


@both_ciphers
def test_rekey_follows_the_spec(cipher: str) -> None:
    """REKEY(k) = first 32 bytes of ENCRYPT(k, 2**64-1, zerolen, zeros) (section 4.2)."""
    key = bytes(range(100, 132))
    aead = AESGCM if cipher == "AESGCM" else ChaCha20Poly1305
    max_nonce = b"\x00\x00\x00\x00" + b"\xff" * 8  # same bytes in either byte order
    new_key = aead(key).encrypt(max_nonce, bytes(32), b"")[:32]
    c = CipherState(key, cipher)
    c.rekey()
    assert c.cipher == cipher
    assert c.encrypt_with_nonce(3, b"after") == CipherState(new_key, cipher).encrypt_with_nonce(
        3, b"after"
    )


@both_ciphers
def test_explicit_nonces_out_of_order(cipher: str) -> None:
    key = generate_static_key()
    send, recv = CipherState(key, cipher), CipherState(key, cipher)
    packets = {n: send.encrypt_with_nonce(n, f"p{n}".encode()) for n in (0, 1, 2, 1000)}
    assert send.nonce == 0
    for n in (1000, 2, 0, 1):
        assert recv.decrypt_with_nonce(n, packets[n]) == f"p{n}".encode()
    assert recv.nonce == 0
    with pytest.raises(NoiseError):
        recv.decrypt_with_nonce(3, packets[2])


@both_ciphers
def test_reserved_and_invalid_nonces(cipher: str) -> None:
    c = CipherState(bytes(32), cipher)
    ct = c.encrypt_with_nonce(MAX_NONCE - 1, b"last")
    assert CipherState(bytes(32), cipher).decrypt_with_nonce(MAX_NONCE - 1, ct) == b"last"
    for bad in (MAX_NONCE, MAX_NONCE + 1, -1):
        with pytest.raises(NoiseError):
            c.encrypt_with_nonce(bad, b"x")
        with pytest.raises(NoiseError):
            c.decrypt_with_nonce(bad, ct)
    with pytest.raises(NoiseError):
        c.encrypt_with_nonce(True, b"x")  # type: ignore[arg-type]


@both_ciphers
def test_implicit_nonce_exhaustion(cipher: str) -> None:
    c = CipherState(bytes(32), cipher)
    d = CipherState(bytes(32), cipher)
    c._nonce = d._nonce = MAX_NONCE - 1  # white-box: skip 2**64 messages
    assert d.decrypt(c.encrypt(b"final")) == b"final"
    assert c.nonce == MAX_NONCE
    with pytest.raises(NoiseError):
        c.encrypt(b"one too many")
    with pytest.raises(NoiseError):
        d.decrypt(b"\x00" * 32)
    assert c.nonce == d.nonce == MAX_NONCE


@both_ciphers
def test_cipher_rejects_bad_key_and_hides_it(cipher: str) -> None:
    with pytest.raises(NoiseError):
        CipherState(b"short", cipher)
    assert "00" * 8 not in repr(CipherState(bytes(32), cipher))


@both_ciphers
def test_rekey_keeps_both_sides_in_step(cipher: str) -> None:
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder)
    send, _ = initiator.split()
    _, recv = responder.split()
    before = send.encrypt(b"a")
    assert recv.decrypt(before) == b"a"
    send.rekey()
    ct = send.encrypt(b"b")
    with pytest.raises(NoiseError):
        recv.decrypt(ct)  # old key
    recv.rekey()
    assert recv.decrypt(ct) == b"b"
    assert send.nonce == recv.nonce == 2


# --- hypothesis ---------------------------------------------------------------------------


@FUZZ
@given(step=st.integers(0, 2), data=st.binary(max_size=300), cipher=st.sampled_from(CIPHERS))
def test_fuzz_read_message_only_raises_noise_error(step: int, data: bytes, cipher: str) -> None:
    _, receiver, _ = stage(step, cipher)
    try:
        receiver.read_message(data)
    except NoiseError:
        assert receiver.failed
        with pytest.raises(NoiseError):
            receiver.read_message(data)
    else:
        # Only message 1 (unauthenticated) can be forged: 32 key bytes + clear payload.
        assert step == 0 and len(data) >= 32


@FUZZ
@given(
    step=st.integers(1, 2),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    cipher=st.sampled_from(CIPHERS),
)
def test_fuzz_mutated_genuine_messages_fail(
    step: int, edits: list[tuple[int, int]], cut: int | None, cipher: str
) -> None:
    _, receiver, genuine = stage(step, cipher)
    mutated = bytearray(genuine)
    for position, xor in edits:
        mutated[position % len(mutated)] ^= xor
    message = bytes(mutated if cut is None else mutated[:cut])
    if message == genuine:
        return
    with pytest.raises(NoiseError):
        receiver.read_message(message)
    assert receiver.failed


@FUZZ
@given(
    payloads=st.tuples(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=200)),
    cipher=st.sampled_from(CIPHERS),
)
def test_fuzz_payloads_round_trip(payloads: tuple[bytes, bytes, bytes], cipher: str) -> None:
    initiator, responder = pair(cipher=cipher)
    handshake(initiator, responder, payloads)
    assert initiator.handshake_hash == responder.handshake_hash


@FUZZ
@given(data=st.binary(max_size=100), ad=st.binary(max_size=20), cipher=st.sampled_from(CIPHERS))
def test_fuzz_transport_decrypt_only_raises_noise_error(
    data: bytes, ad: bytes, cipher: str
) -> None:
    recv = CipherState(bytes(range(32)), cipher)
    with pytest.raises(NoiseError):
        recv.decrypt(data, ad)
    assert recv.nonce == 0
