"""Noise handshakes, ``Noise_{XX,NNpsk0}_25519_{AESGCM,ChaChaPoly}_SHA256`` (sans-IO).

An implementation of the Noise Protocol Framework, revision 34
(https://noiseprotocol.org/noise.html), restricted to the two handshake patterns warpgate
uses::

    XX:                         NNpsk0:
      -> e                        -> psk, e
      <- e, ee, s, es             <- e, ee
      -> s, se

with either of the spec's two cipher functions (sections 12.3 and 12.4): ``AESGCM``
(AES-256-GCM, the default: several times faster where the CPU has AES instructions) or
``ChaChaPoly`` (ChaCha20-Poly1305).  Both sides must use the same cipher: it is part of
the protocol name hashed into the handshake, so a mismatch fails the handshake.

Primitives come from ``cryptography`` (X25519, AES-256-GCM, ChaCha20-Poly1305) and the
standard library (SHA-256, HMAC); HKDF is the spec's own two/three-output construction from
section 4.3, not RFC 5869's API.  Nothing here does I/O: :class:`NoiseHandshake` takes and
returns handshake messages as bytes and the caller moves them (framing each message is
the caller's job), then :meth:`NoiseHandshake.split` hands out two :class:`CipherState`
objects for transport encryption.

Every failure (a message of the wrong length, an authentication tag that does not
verify, a call out of turn, an exhausted nonce, a low-order public key) raises
:class:`NoiseError`.  A handshake is single-use: once :meth:`NoiseHandshake.read_message`
has failed, every further call raises :class:`NoiseError` too.

Limits the caller must respect: a Noise message is at most :data:`MAX_MESSAGE` (65535)
bytes, so a transport plaintext is at most ``MAX_MESSAGE - TAG_SIZE`` (65519) bytes and a
handshake payload correspondingly less (see :meth:`NoiseHandshake.max_payload`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from warpgate.errors import WarpgateError

__all__ = [
    "CIPHERS",
    "DEFAULT_CIPHER",
    "DH_SIZE",
    "HASH_SIZE",
    "MAX_MESSAGE",
    "MAX_NONCE",
    "MAX_RECORD",
    "PATTERNS",
    "PROTOCOL_NAME",
    "TAG_SIZE",
    "CipherState",
    "NoiseError",
    "NoiseHandshake",
    "generate_static_key",
    "protocol_name",
    "public_key",
]

CIPHERS: Final = ("AESGCM", "ChaChaPoly")
"""The Noise cipher names accepted by :class:`NoiseHandshake` and :class:`CipherState`."""
DEFAULT_CIPHER: Final = "AESGCM"
PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
"""The ChaChaPoly protocol name (kept for compatibility; see :func:`protocol_name`)."""
MAX_MESSAGE: Final = 65535
MAX_RECORD: Final = 1 << 24
"""Largest transport ciphertext a :class:`CipherState` may be allowed (16 MiB)."""
"""Noise's limit on the size of any message, handshake or transport."""
TAG_SIZE: Final = 16
"""Size of the authentication tag (both ciphers) added to every encrypted field."""
DH_SIZE: Final = 32
"""Size of an X25519 public key, private key and shared secret."""
HASH_SIZE: Final = 32
KEY_SIZE: Final = 32
MAX_NONCE: Final = 2**64 - 1
"""Reserved by Noise: never used to encrypt a message (only by rekey)."""

_ZERO_DH: Final = bytes(DH_SIZE)


class NoiseError(WarpgateError, ValueError):
    """A Noise handshake or transport operation failed.

    Raised for bad lengths, authentication failures, out-of-turn calls, nonce
    exhaustion and invalid keys alike; the message says which.
    """


# --------------------------------------------------------------------------- helpers


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# Inputs the AEAD reads as they are on the hot path (a memoryview slice of received bytes
# is flat and byte-sized by construction).
_FAST_TYPES = (bytes, memoryview)


# Declared for both branches: the fallback's stub takes a narrower key type than ours.
_hmac_digest: Callable[[bytes, bytes, str], bytes]
try:  # the C function behind hmac.digest, without its Python-level dispatch
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - a Python built without OpenSSL's hashlib
    _hmac_digest = hmac.digest


def _hmac(key: bytes, data: bytes) -> bytes:
    # The one-shot C path (hmac.digest's): several times faster than hmac.new().digest(),
    # and a handshake makes a dozen of these per side.
    return _hmac_digest(key, data, "sha256")


def _hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """HKDF(chaining_key, input_key_material, 2) as defined in section 4.3 of the spec."""
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    return output1, output2


def _hkdf3(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF(chaining_key, input_key_material, 3): its first two outputs are _hkdf2's."""
    temp_key = _hmac(chaining_key, input_key_material)
    output1 = _hmac(temp_key, b"\x01")
    output2 = _hmac(temp_key, output1 + b"\x02")
    output3 = _hmac(temp_key, output2 + b"\x03")
    return output1, output2, output3


_NONCE_PREFIX: Final = bytes(4)


def _nonce_bytes(nonce: int) -> bytes:
    """ChaChaPoly's 96-bit nonce: 32 bits of zeros, then the 64-bit counter little-endian."""
    return _NONCE_PREFIX + nonce.to_bytes(8, "little")


def _nonce_bytes_aesgcm(nonce: int) -> bytes:
    """AESGCM's 96-bit nonce: 32 bits of zeros, then the 64-bit counter big-endian."""
    return _NONCE_PREFIX + nonce.to_bytes(8, "big")


_AEAD: TypeAlias = AESGCM | ChaCha20Poly1305
# Cipher name -> (AEAD constructor taking a 32-byte key, nonce encoder).
_CIPHER_FUNCTIONS: Final[dict[str, tuple[Callable[[bytes], _AEAD], Callable[[int], bytes]]]] = {
    "AESGCM": (AESGCM, _nonce_bytes_aesgcm),
    "ChaChaPoly": (ChaCha20Poly1305, _nonce_bytes),
}


def _cipher_functions(cipher: str) -> tuple[Callable[[bytes], _AEAD], Callable[[int], bytes]]:
    functions = _CIPHER_FUNCTIONS.get(cipher) if isinstance(cipher, str) else None
    if functions is None:
        choices = ", ".join(repr(name) for name in CIPHERS)
        raise NoiseError(f"unknown Noise cipher {cipher!r}: choose one of {choices}")
    return functions


def protocol_name(cipher: str = DEFAULT_CIPHER, pattern: str = "XX") -> bytes:
    """The full Noise protocol name for ``cipher`` and ``pattern``, e.g.
    ``b"Noise_XX_25519_AESGCM_SHA256"``."""
    _cipher_functions(cipher)
    _pattern(pattern)
    return f"Noise_{pattern}_25519_{cipher}_SHA256".encode()


def _buffer(data: bytes) -> bytes | bytearray | memoryview:
    """``data`` as something the AEAD reads without a copy (bytes, bytearray, or a flat
    byte memoryview); anything else bytes-like (non-contiguous or wider items) is copied."""
    if isinstance(data, bytes | bytearray):
        return data
    view = memoryview(data)  # TypeError for non-buffers (str, int, ...)
    if view.c_contiguous and view.ndim == 1 and view.format in ("B", "c"):
        return view
    return view.tobytes()


def _private_key(raw: bytes, what: str) -> X25519PrivateKey:
    if not isinstance(raw, bytes | bytearray) or len(raw) != DH_SIZE:
        raise NoiseError(f"{what} must be {DH_SIZE} raw bytes")
    return X25519PrivateKey.from_private_bytes(bytes(raw))


@functools.lru_cache(maxsize=16)
def _cached_static(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _static_private_key(raw: bytes) -> X25519PrivateKey:
    """Static keys are reused for every handshake of a process: parse each once."""
    if not isinstance(raw, bytes | bytearray) or len(raw) != DH_SIZE:
        raise NoiseError(f"static_key must be {DH_SIZE} raw bytes")
    return _cached_static(bytes(raw))


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@functools.lru_cache(maxsize=16)
def _static_public(key: X25519PrivateKey) -> bytes:
    """A static key's public half, computed once (the key objects come from the
    _cached_static cache, so the same object recurs)."""
    return _public_bytes(key)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519, refusing an all-zero result (a low-order or otherwise invalid public key)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # OpenSSL refuses an all-zero result itself
        raise NoiseError("invalid X25519 public key (low-order point)") from exc
    if hmac.compare_digest(shared, _ZERO_DH):
        raise NoiseError("invalid X25519 public key (low-order point)")
    return shared


def generate_static_key() -> bytes:
    """Return a fresh random X25519 private key as 32 raw bytes."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    """Return the 32-byte X25519 public key of the raw private key ``private``."""
    return _public_bytes(_private_key(private, "private key"))


# --------------------------------------------------------------------------- CipherState


class CipherState:
    """One direction of transport encryption with the Noise cipher ``cipher``: AES-256-GCM
    (``"AESGCM"``, the default; 96-bit nonce = 4 zero bytes + 64-bit big-endian counter) or
    ChaCha20-Poly1305 (``"ChaChaPoly"``; 4 zero bytes + 64-bit little-endian counter), as
    Noise specifies.

    :meth:`encrypt`/:meth:`decrypt` use an implicit counter (for reliable, ordered
    transports); :meth:`encrypt_with_nonce`/:meth:`decrypt_with_nonce` take the nonce from
    the caller (for datagrams, where the nonce travels with the packet and a
    :class:`~warpgate.sansio.replay.ReplayWindow` rejects replays).  Never mix the two
    styles on one CipherState, and never encrypt twice with one nonce.

    Plaintexts, ciphertexts and associated data may be any bytes-like object (bytes,
    bytearray, memoryview); they are handed to the AEAD without copying where possible.
    Nonce ``2**64 - 1`` is reserved and refused.  Ciphertexts are limited to
    ``max_message`` bytes (Noise's :data:`MAX_MESSAGE`, 65535, unless the caller's
    framing allows more: see :attr:`max_message`), plaintexts to ``max_message - TAG_SIZE``.
    """

    __slots__ = (
        "_aead",
        "_cipher",
        "_key",
        "_make_aead",
        "_max_message",
        "_nonce",
        "_nonce_bytes",
    )

    def __init__(self, key: bytes, cipher: str = DEFAULT_CIPHER) -> None:
        self._make_aead, self._nonce_bytes = _cipher_functions(cipher)
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            raise NoiseError(f"a cipher key must be {KEY_SIZE} bytes")
        self._cipher = cipher
        self._key = bytes(key)
        self._aead = self._make_aead(self._key)
        self._nonce = 0
        self._max_message = MAX_MESSAGE

    def __repr__(self) -> str:  # never show the key
        return f"<CipherState {self._cipher} nonce={self._nonce}>"

    @property
    def cipher(self) -> str:
        """The Noise cipher name, ``"AESGCM"`` or ``"ChaChaPoly"``."""
        return self._cipher

    @property
    def max_message(self) -> int:
        """Largest ciphertext, tag included.  Noise caps messages at 65535 bytes for its
        16-bit length fields; a record layer with wider length fields may raise it (to at
        most :data:`MAX_RECORD`), since AES-GCM and ChaCha20-Poly1305 are safe for far
        longer messages.  Handshake messages are always held to :data:`MAX_MESSAGE`."""
        return self._max_message

    @max_message.setter
    def max_message(self, size: int) -> None:
        if not TAG_SIZE < size <= MAX_RECORD:
            raise NoiseError(f"max_message must be in ({TAG_SIZE}, {MAX_RECORD}]")
        self._max_message = size

    @property
    def nonce(self) -> int:
        """The next implicit nonce :meth:`encrypt` / :meth:`decrypt` will use."""
        return self._nonce

    @staticmethod
    def _check_nonce(nonce: int) -> None:
        if not isinstance(nonce, int) or isinstance(nonce, bool):
            raise NoiseError("the nonce must be an int")
        if nonce < 0 or nonce >= MAX_NONCE:
            raise NoiseError(f"nonce {nonce} is out of range (0 .. 2**64-2)")

    def encrypt_with_nonce(self, nonce: int, plaintext: bytes, ad: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` under the explicit ``nonce``; the counter is untouched."""
        self._check_nonce(nonce)
        data = _buffer(plaintext)
        if len(data) > self._max_message - TAG_SIZE:
            raise NoiseError(
                f"plaintext of {len(data)} bytes exceeds {self._max_message - TAG_SIZE} bytes"
            )
        return self._aead.encrypt(self._nonce_bytes(nonce), data, _buffer(ad))

    def decrypt_with_nonce(self, nonce: int, ciphertext: bytes, ad: bytes = b"") -> bytes:
        """Decrypt and authenticate ``ciphertext`` made with ``nonce``; the counter is untouched."""
        self._check_nonce(nonce)
        data = _buffer(ciphertext)
        if len(data) < TAG_SIZE:
            raise NoiseError(f"ciphertext of {len(data)} bytes is shorter than the tag")
        if len(data) > self._max_message:
            raise NoiseError(f"ciphertext of {len(data)} bytes exceeds {self._max_message}")
        try:
            return self._aead.decrypt(self._nonce_bytes(nonce), data, _buffer(ad))
        except InvalidTag:
            raise NoiseError("decryption failed: authentication tag mismatch") from None

    def encrypt(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        """Encrypt with the implicit counter, then advance it."""
        # The per-record hot path of every link: plain bytes skip the checks that
        # encrypt_with_nonce makes for arbitrary input (the counter is ours, in range).
        if type(plaintext) is not bytes or type(ad) is not bytes or self._nonce >= MAX_NONCE:
            ciphertext = self.encrypt_with_nonce(self._nonce, plaintext, ad)
        elif len(plaintext) > self._max_message - TAG_SIZE:
            raise NoiseError(
                f"plaintext of {len(plaintext)} bytes exceeds {self._max_message - TAG_SIZE} bytes"
            )
        else:
            ciphertext = self._aead.encrypt(self._nonce_bytes(self._nonce), plaintext, ad)
        self._nonce += 1
        return ciphertext

    def encrypt_into(self, plaintext: bytes | memoryview, ad: bytes, out: memoryview) -> None:
        """Like :meth:`encrypt`, writing the ciphertext (``len(plaintext) + TAG_SIZE``
        bytes) into ``out``: a sender can build a whole wire message in one buffer."""
        if len(plaintext) > self._max_message - TAG_SIZE:
            raise NoiseError(
                f"plaintext of {len(plaintext)} bytes exceeds {self._max_message - TAG_SIZE} bytes"
            )
        if self._nonce >= MAX_NONCE:
            raise NoiseError("nonce space exhausted: rekey or start a new session")
        self._aead.encrypt_into(self._nonce_bytes(self._nonce), plaintext, ad, out)
        self._nonce += 1

    def decrypt(self, ciphertext: bytes, ad: bytes = b"") -> bytes:
        """Decrypt with the implicit counter and advance it, only if authentication succeeds."""
        if (
            type(ciphertext) not in _FAST_TYPES
            or type(ad) is not bytes
            or self._nonce >= MAX_NONCE
            or not TAG_SIZE <= len(ciphertext) <= self._max_message
        ):
            plaintext = self.decrypt_with_nonce(self._nonce, ciphertext, ad)
        else:
            try:
                plaintext = self._aead.decrypt(self._nonce_bytes(self._nonce), ciphertext, ad)
            except InvalidTag:
                raise NoiseError("decryption failed: authentication tag mismatch") from None
        self._nonce += 1
        return plaintext

    def rekey(self) -> None:
        """Noise's ``Rekey()`` (section 4.2): derive a new key from the current one.

        The new key is the first 32 bytes of ``ENCRYPT(k, 2**64 - 1, zerolen, zeros)``
        (section 4.2's default REKEY, for both ciphers).  Both sides must rekey at the same
        point in the message stream.  The nonce is kept.
        """
        new_key = self._aead.encrypt(self._nonce_bytes(MAX_NONCE), bytes(KEY_SIZE), b"")
        self._key = new_key[:KEY_SIZE]
        self._aead = self._make_aead(self._key)


# --------------------------------------------------------------------------- SymmetricState


@functools.lru_cache(maxsize=16)
def _initial_hash(cipher: str, pattern: str) -> bytes:
    """InitializeSymmetric's ``h``: the protocol name, padded or hashed."""
    name = protocol_name(cipher, pattern)
    return name.ljust(HASH_SIZE, b"\x00") if len(name) <= HASH_SIZE else _hash(name)


class _SymmetricState:
    """The spec's SymmetricState with its embedded handshake CipherState (k may be empty)."""

    __slots__ = ("aead", "cipher", "ck", "h", "k", "make_aead", "n", "nonce_bytes")

    def __init__(self, cipher: str, pattern: str = "XX") -> None:
        self.make_aead, self.nonce_bytes = _cipher_functions(cipher)
        self.cipher = cipher
        self.h = self.ck = _initial_hash(cipher, pattern)
        # The key k, and its AEAD object built on first use: most keys a handshake mixes
        # in are replaced by the next MixKey before anything is encrypted with them.
        self.k: bytes | None = None
        self.aead: _AEAD | None = None
        self.n = 0

    def copy(self) -> _SymmetricState:
        other = _SymmetricState.__new__(_SymmetricState)
        other.make_aead, other.nonce_bytes, other.cipher = (
            self.make_aead,
            self.nonce_bytes,
            self.cipher,
        )
        other.h, other.ck, other.k, other.aead, other.n = self.h, self.ck, self.k, self.aead, self.n
        return other

    @property
    def has_key(self) -> bool:
        return self.k is not None

    def _cipher(self) -> _AEAD:
        if self.aead is None:
            assert self.k is not None
            self.aead = self.make_aead(self.k)
        return self.aead

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, input_key_material)
        self.k, self.aead = temp_k[:KEY_SIZE], None
        self.n = 0

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """Section 5.2's MixKeyAndHash, the ``psk`` token."""
        self.ck, temp_h, temp_k = _hkdf3(self.ck, input_key_material)
        self.mix_hash(temp_h)
        self.k, self.aead = temp_k[:KEY_SIZE], None
        self.n = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            ciphertext = plaintext
        else:
            # A handshake encrypts at most twice per key: the nonce cannot approach 2**64-1.
            ciphertext = self._cipher().encrypt(self.nonce_bytes(self.n), plaintext, self.h)
            self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = self._cipher().decrypt(self.nonce_bytes(self.n), ciphertext, self.h)
            except InvalidTag:
                raise NoiseError("decryption failed: authentication tag mismatch") from None
            self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState, bytes]:
        """Noise's Split(), plus HKDF's third output: a secret both sides share that is
        independent of the two transport keys (HKDF's first two outputs do not depend on
        whether a third is asked for, so the transport keys are exactly Noise's)."""
        temp_k1, temp_k2, extra = _hkdf3(self.ck, b"")
        return (
            CipherState(temp_k1[:KEY_SIZE], self.cipher),
            CipherState(temp_k2[:KEY_SIZE], self.cipher),
            extra,
        )


# --------------------------------------------------------------------------- patterns

# The handshake patterns this module runs: each message's tokens, initiator first.
_PATTERNS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "XX": (("e",), ("e", "ee", "s", "es"), ("s", "se")),
    # Section 9: a pre-shared key mixed in before the first message.  With a psk, every
    # "e" token is also mixed into the key (section 9.2), so the first message's payload
    # is already encrypted.
    "NNpsk0": (("psk", "e"), ("e", "ee")),
}
PATTERNS: Final = tuple(_PATTERNS)
"""The handshake patterns :class:`NoiseHandshake` runs."""


def _pattern(pattern: str) -> tuple[tuple[str, ...], ...]:
    tokens = _PATTERNS.get(pattern) if isinstance(pattern, str) else None
    if tokens is None:
        choices = ", ".join(repr(name) for name in PATTERNS)
        raise NoiseError(f"unknown Noise pattern {pattern!r}: choose one of {choices}")
    return tokens


def _step_name(tokens: tuple[tuple[str, ...], ...], index: int) -> str:
    arrow = "->" if index % 2 == 0 else "<-"
    return f"message {index + 1} ({arrow} {', '.join(tokens[index])})"


def _overheads(pattern: str) -> tuple[int, ...]:
    tokens = _PATTERNS[pattern]
    psk_mode = any("psk" in message for message in tokens)
    keyed, sizes = False, []
    for message in tokens:
        size = 0
        for token in message:
            if token == "e":
                size += DH_SIZE
                keyed = keyed or psk_mode  # MixKey(e) in psk handshakes
            elif token == "s":
                size += DH_SIZE + (TAG_SIZE if keyed else 0)
            else:  # a DH or the psk: MixKey
                keyed = True
        sizes.append(size + (TAG_SIZE if keyed else 0))
    return tuple(sizes)


_OVERHEADS: Final = {name: _overheads(name) for name in _PATTERNS}
# Pattern -> (uses static keys, uses a psk).
_NEEDS: Final = {
    name: (any("s" in m for m in tokens), any("psk" in m for m in tokens))
    for name, tokens in _PATTERNS.items()
}


# --------------------------------------------------------------------------- handshake


class NoiseHandshake:
    """One side of a ``Noise_<pattern>_25519_<cipher>_SHA256`` handshake: ``pattern`` is
    ``"XX"`` (the default) or ``"NNpsk0"``, ``cipher`` ``"AESGCM"`` (the default) or
    ``"ChaChaPoly"``; both sides must choose the same ones.

    XX: the initiator calls ``write_message``, ``read_message``, ``write_message``; the
    responder ``read_message``, ``write_message``, ``read_message``.  Each message may carry
    a payload.  Message 1's payload travels in clear (no key exists yet).  Message 2's is
    encrypted and authenticated as the responder's, but sent before the responder knows who
    the initiator is, so an active attacker posing as an initiator can read it: put
    nothing secret in either.  Message 3's payload, and everything after :meth:`split`,
    is encrypted and mutually authenticated.  After completion, :attr:`remote_static` is
    the peer's X25519 public key: the caller must check it is the key it expected (e.g.
    the one in the dialled address) before trusting the session.

    NNpsk0 (``psk`` required, no static keys): two messages, ``write``/``read`` for the
    initiator.  Both payloads are encrypted under the psk; message 1 can be replayed, so
    the responder knows the initiator holds the psk *and* the session keys only once it
    has decrypted a transport message from it.

    :attr:`handshake_hash` is a channel binding.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static_key: bytes | None = None,
        prologue: bytes = b"",
        ephemeral_key: bytes | None = None,
        cipher: str = DEFAULT_CIPHER,
        pattern: str = "XX",
        psk: bytes | None = None,
    ) -> None:
        _cipher_functions(cipher)  # an unknown cipher fails before anything else
        self._tokens = _pattern(pattern)
        self._pattern_name = pattern
        needs_static, needs_psk = _NEEDS[pattern]
        if needs_psk and (not isinstance(psk, bytes | bytearray) or len(psk) != KEY_SIZE):
            raise NoiseError(f"the {pattern} pattern needs a {KEY_SIZE}-byte psk")
        if not needs_psk and psk is not None:
            raise NoiseError(f"the {pattern} pattern takes no psk")
        self._psk = bytes(psk) if psk is not None else b""
        self._psk_mode = needs_psk
        self._initiator = bool(initiator)
        if needs_static or static_key is not None:
            self._s: X25519PrivateKey | None = _static_private_key(static_key)  # type: ignore[arg-type]
            self._s_pub = _static_public(self._s)
        else:
            self._s, self._s_pub = None, b""
        self._e: X25519PrivateKey | None = (
            None if ephemeral_key is None else _private_key(ephemeral_key, "ephemeral_key")
        )
        self._re: bytes | None = None
        self._rs: bytes | None = None
        self._index = 0
        self._failed = False
        self._split_done = False
        self._extra_secret = b""
        self._ss = _SymmetricState(cipher, pattern)
        self._ss.mix_hash(bytes(prologue))
        # Neither pattern has pre-messages.

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return (
            f"<NoiseHandshake {self._pattern_name} {role} message_index={self._index} "
            f"failed={self._failed}>"
        )

    # ----------------------------------------------------------------- properties

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def cipher(self) -> str:
        """The Noise cipher name, ``"AESGCM"`` or ``"ChaChaPoly"``."""
        return self._ss.cipher

    @property
    def pattern(self) -> str:
        """The handshake pattern, ``"XX"`` or ``"NNpsk0"``."""
        return self._pattern_name

    @property
    def protocol_name(self) -> bytes:
        """The full Noise protocol name, e.g. ``b"Noise_XX_25519_AESGCM_SHA256"``."""
        return protocol_name(self._ss.cipher, self._pattern_name)

    @property
    def complete(self) -> bool:
        """True once every handshake message has been written or read."""
        return self._index == len(self._tokens)

    @property
    def failed(self) -> bool:
        """True once a read_message has failed; the object is then unusable."""
        return self._failed

    @property
    def remote_static(self) -> bytes | None:
        """The peer's 32-byte X25519 static public key, once learnt (None before, and
        always None in a pattern without one)."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash ``h``: final (a channel binding) only once :attr:`complete`."""
        return self._ss.h

    @property
    def message_index(self) -> int:
        """How many handshake messages have been processed so far."""
        return self._index

    @property
    def local_static_public(self) -> bytes:
        """This side's static X25519 public key (empty in a pattern without one)."""
        return self._s_pub

    def take_extra_secret(self) -> bytes:
        """:attr:`extra_secret`, which this object then forgets (one holder, not two)."""
        secret, self._extra_secret = self._extra_secret, b""
        return secret

    @property
    def extra_secret(self) -> bytes:
        """After :meth:`split`: 32 secret bytes both sides share, independent of the
        transport keys (the third output of the HKDF that Split makes two of).  Not part
        of Noise; warpgate derives its resumption tickets from it."""
        return self._extra_secret

    def writes_next(self) -> bool:
        """True when the next step is :meth:`write_message` (False once complete)."""
        if self.complete:
            return False
        return (self._index % 2 == 0) == self._initiator

    def max_payload(self) -> int:
        """The largest payload the next message (to write or read) can carry."""
        overheads = _OVERHEADS[self._pattern_name]
        return MAX_MESSAGE - overheads[min(self._index, len(overheads) - 1)]

    # ----------------------------------------------------------------- steps

    def _check_turn(self, writing: bool) -> None:
        if self._failed:
            raise NoiseError("the handshake has failed and cannot be used again")
        if self.complete:
            raise NoiseError("the handshake is already complete: use split()")
        if writing != self.writes_next():
            step = _step_name(self._tokens, self._index)
            action = "write" if self.writes_next() else "read"
            role = "initiator" if self._initiator else "responder"
            raise NoiseError(f"out of turn: the {role} must {action} {step} next")

    def write_message(self, payload: bytes = b"") -> bytes:
        """Produce the next handshake message, carrying ``payload``.

        Raises :class:`NoiseError` without changing any state when it is not this side's
        turn or the message would exceed :data:`MAX_MESSAGE`; any other failure (a
        low-order key from the peer) fails the handshake for good.
        """
        self._check_turn(writing=True)
        payload = bytes(payload)
        if len(payload) > self.max_payload():
            raise NoiseError(
                f"payload of {len(payload)} bytes exceeds the {self.max_payload()} bytes "
                f"{_step_name(self._tokens, self._index)} can carry"
            )
        try:
            return self._write(payload)
        except NoiseError:
            self._fail()  # e.g. message 1 carried a low-order ephemeral key
            raise
        except Exception as exc:  # defensive: nothing but NoiseError may escape
            self._fail()
            raise NoiseError(
                f"cannot write {_step_name(self._tokens, self._index)}: {exc}"
            ) from exc

    def _dh_token(self, token: str) -> bytes:
        """The DH a token names, from this side's point of view (section 5.3: ``es`` is
        DH(e, rs) for the initiator and DH(s, re) for the responder)."""
        first, second = token[0], token[1]
        if not self._initiator:
            first, second = second, first
        mine = self._e if first == "e" else self._s
        theirs = self._re if second == "e" else self._rs
        if mine is None or theirs is None:  # pragma: no cover - the pattern tables forbid it
            raise NoiseError(f"token {token!r} before its keys are known")
        return _dh(mine, theirs)

    def _write(self, payload: bytes) -> bytes:
        ss = self._ss.copy()
        parts: list[bytes] = []
        for token in self._tokens[self._index]:
            if token == "e":
                e = self._ephemeral()
                e_pub = _public_bytes(e)
                parts.append(e_pub)
                ss.mix_hash(e_pub)
                if self._psk_mode:
                    ss.mix_key(e_pub)
            elif token == "s":
                parts.append(ss.encrypt_and_hash(self._s_pub))
            elif token == "psk":
                ss.mix_key_and_hash(self._psk)
            else:
                ss.mix_key(self._dh_token(token))
        parts.append(ss.encrypt_and_hash(payload))
        message = b"".join(parts)
        self._ss = ss
        self._index += 1
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message and return its decrypted payload.

        Any malformed, truncated or tampered message raises :class:`NoiseError` and fails
        the handshake for good.  (A call out of turn raises without failing it.)
        """
        self._check_turn(writing=False)
        try:
            return self._read(bytes(message))
        except NoiseError:
            self._fail()
            raise
        except Exception as exc:  # defensive: nothing but NoiseError may escape
            self._fail()
            raise NoiseError(f"invalid handshake message: {exc}") from exc

    def _fail(self) -> None:
        self._failed = True
        self._psk = b""
        self._e = None
        self._re = None
        self._rs = None

    def _read(self, message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE:
            step = _step_name(self._tokens, self._index)
            raise NoiseError(f"{step} of {len(message)} bytes exceeds {MAX_MESSAGE} bytes")
        minimum = _OVERHEADS[self._pattern_name][self._index]
        if len(message) < minimum:
            step = _step_name(self._tokens, self._index)
            raise NoiseError(f"{step} truncated: {len(message)} bytes, need at least {minimum}")
        ss = self._ss.copy()
        saved = self._re, self._rs
        rest = message
        try:
            for token in self._tokens[self._index]:
                if token == "e":
                    self._re, rest = rest[:DH_SIZE], rest[DH_SIZE:]
                    ss.mix_hash(self._re)
                    if self._psk_mode:
                        ss.mix_key(self._re)
                elif token == "s":
                    size = DH_SIZE + (TAG_SIZE if ss.has_key else 0)
                    enc_s, rest = rest[:size], rest[size:]
                    self._rs = ss.decrypt_and_hash(enc_s)
                elif token == "psk":
                    ss.mix_key_and_hash(self._psk)
                else:
                    ss.mix_key(self._dh_token(token))
            payload = ss.decrypt_and_hash(rest)
        except BaseException:
            self._re, self._rs = saved
            raise
        # Commit only after the whole message verified.
        self._ss = ss
        self._index += 1
        return payload

    def _ephemeral(self) -> X25519PrivateKey:
        if self._e is None:
            self._e = X25519PrivateKey.generate()
        return self._e

    def split(self) -> tuple[CipherState, CipherState]:
        """Return ``(send, receive)`` transport ciphers for this side; once, after completion.

        The initiator sends with Noise's ``c1`` and receives with ``c2``; the responder the
        reverse.  Calling it again raises :class:`NoiseError` (two copies of one cipher
        would reuse nonces).
        """
        if self._failed:
            raise NoiseError("the handshake has failed and cannot be used again")
        if not self.complete:
            step = _step_name(self._tokens, self._index)
            raise NoiseError(f"the handshake is not complete: {step} is next")
        if self._split_done:
            raise NoiseError("split() has already been called")
        c1, c2, self._extra_secret = self._ss.split()
        self._split_done = True
        # Drop the handshake secrets; h stays available as the channel binding.
        self._e = None
        self._psk = b""
        self._ss.ck = b""
        self._ss.k = self._ss.aead = None
        return (c1, c2) if self._initiator else (c2, c1)
