"""The signal envelope: a signed, encrypted, replay-protected wrapper for signal
messages (sans-IO).

Signal messages cross brokers we do not control, so the envelope must keep the broker
(and anyone else subscribed to a node's topic) from reading, forging, redirecting or
replaying them.  Layout of version 1 (all integers big-endian)::

    offset size  field
    0      1     version (1)
    1      1     flags (0; reserved, must be zero)
    2      33    sender public key (SEC1 compressed P-256 point)
    35     8     recipient key id: SHA-256(recipient public key)[:8]
    43     8     timestamp, milliseconds since the Unix epoch (sender's clock)
    51     16    nonce (random)
    67     33    ephemeral public key (SEC1 compressed P-256 point)
    100    n+16  ciphertext of the n-byte payload, AES-256-GCM (tag included)
    end-64 64    ECDSA-P256-SHA256 signature by the sender, raw r || s

Version 2, the *paired* envelope, is authenticated encryption under a key only the
two nodes can compute: static-static ECDH between the sender's and the recipient's
identity keys (the construction of NaCl's ``crypto_box``), so after the first message
to a peer no public-key operation is needed at all::

    offset size  field
    0      1     version (2)
    1      1     flags (0)
    2      33    sender public key
    35     8     recipient key id
    43     8     timestamp, milliseconds since the Unix epoch
    51     16    nonce (random)
    67     n+16  ciphertext, AES-256-GCM, the header (bytes 0..66) as associated data

The pair secret is expanded by HKDF into one key per direction (the sender's and
recipient's keys are the ``info``, in that order, so a message cannot be reflected back
to its sender), and every message gets its own AES key and reply key,
HMAC-SHA256(direction key, label | nonce), so no GCM nonce is ever reused.  What it
trades against version 1: it is repudiable (either node could have made it), the
sender's identity key as well as the recipient's opens past messages, and a stolen
recipient key lets the thief impersonate other nodes *to that recipient*.  It is
83 bytes of overhead instead of 180.  Both versions are always accepted.

Receipts.  Both ends also derive a 32-byte *reply key* from the shared secret; the
recipient proves it received (and could decrypt) an envelope with a 33-byte receipt::

    0x81 | envelope nonce (16) | HMAC-SHA256(reply key, "warpgate receipt v1" | nonce)[:16]

which costs no public-key operation, so acknowledgements are cheap, yet nobody without
the recipient's private key (or the sender's ephemeral key) can forge one.

Encryption is ephemeral-static ECDH: every envelope has a fresh ephemeral key, so
every message has a fresh AES key even between the same two nodes.  The AES key and
GCM nonce come from HKDF-SHA256 over the shared secret, salted with the envelope
nonce, with the ephemeral, recipient and sender keys in ``info`` -- changing the sender
field of an envelope therefore breaks decryption as well as the signature.  The
header (bytes 0..99) is the GCM associated data.

The signature covers a domain tag, the recipient's *full* public key (the key id on
the wire is only a routing hint) and every byte before the signature, so recipient,
timestamp, nonce and ciphertext are all bound to the sender.

:func:`open_envelope` rejects anything wrong with a specific subclass of
:class:`EnvelopeError`; a :class:`ReplayCache` passed to it rejects replays.  Nothing
here does I/O; time is passed in.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from warpgate.errors import WarpgateError

__all__ = [
    "DEFAULT_MAX_ENVELOPE",
    "DEFAULT_WINDOW",
    "ENVELOPE_OVERHEAD",
    "ENVELOPE_VERSION",
    "PAIRED_OVERHEAD",
    "EnvelopeBadSignature",
    "EnvelopeDecryptError",
    "EnvelopeError",
    "EnvelopeMalformed",
    "EnvelopeReplayed",
    "EnvelopeStale",
    "EnvelopeTooLarge",
    "EnvelopeWrongRecipient",
    "OpenedEnvelope",
    "PairKeys",
    "ReplayCache",
    "key_id",
    "make_receipt",
    "open_envelope",
    "parse_receipt",
    "seal_envelope",
    "seal_envelope_with_reply_key",
    "seal_paired_envelope",
    "verify_receipt",
]

ENVELOPE_VERSION: Final = 1
PAIRED_VERSION: Final = 2
KEY_SIZE: Final = 33
KEY_ID_SIZE: Final = 8
NONCE_SIZE: Final = 16
SIG_SIZE: Final = 64
TAG_SIZE: Final = 16
_HEADER = struct.Struct(f">BB{KEY_SIZE}s{KEY_ID_SIZE}sQ{NONCE_SIZE}s{KEY_SIZE}s")
HEADER_SIZE: Final = _HEADER.size  # 100
ENVELOPE_OVERHEAD: Final = HEADER_SIZE + TAG_SIZE + SIG_SIZE
"""Bytes a signed (version 1) envelope adds to its payload (180)."""
_PAIRED_HEADER = struct.Struct(f">BB{KEY_SIZE}s{KEY_ID_SIZE}sQ{NONCE_SIZE}s")
PAIRED_HEADER_SIZE: Final = _PAIRED_HEADER.size  # 67
PAIRED_OVERHEAD: Final = PAIRED_HEADER_SIZE + TAG_SIZE
"""Bytes a paired (version 2) envelope adds to its payload (83)."""

DEFAULT_MAX_ENVELOPE: Final = 16 * 1024
"""Largest envelope :func:`open_envelope` looks at by default, in bytes."""
DEFAULT_WINDOW: Final = 120.0
"""Default freshness window, seconds, in both directions (sender clock ahead or behind)."""

RECEIPT_TYPE: Final = 0x81
RECEIPT_SIZE: Final = 1 + NONCE_SIZE + 16

_SIGN_DOMAIN: Final = b"warpgate signal envelope v1\x00"
_RECEIPT_DOMAIN: Final = b"warpgate receipt v1\x00"
_KDF_INFO: Final = b"warpgate signal envelope v1 aes-256-gcm"
_PAIR_INFO: Final = b"warpgate signal envelope v2 direction"
_PAIR_MESSAGE: Final = b"warpgate signal envelope v2 message\x00"
_PAIR_REPLY: Final = b"warpgate signal envelope v2 reply\x00"
_ZERO_IV: Final = bytes(12)  # every paired message has its own key
_CURVE = ec.SECP256R1()
_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_U64_MAX: Final = 2**64 - 1


class EnvelopeError(WarpgateError, ValueError):
    """A signal envelope was rejected.  Subclasses say why."""


class EnvelopeMalformed(EnvelopeError):
    """The bytes are not a well-formed envelope of a version this build reads."""


class EnvelopeTooLarge(EnvelopeError):
    """The envelope is larger than the receiver accepts."""


class EnvelopeWrongRecipient(EnvelopeError):
    """The envelope is addressed to another key."""


class EnvelopeStale(EnvelopeError):
    """The timestamp is outside the freshness window (too old, or too far ahead)."""


class EnvelopeBadSignature(EnvelopeError):
    """The envelope does not authenticate as coming from the sender key it carries: a
    signature that does not verify (version 1), or a pair-key tag that does not
    (version 2)."""


class EnvelopeDecryptError(EnvelopeError):
    """Signed correctly but the ciphertext does not decrypt (sender bug or attack)."""


class EnvelopeReplayed(EnvelopeError):
    """An envelope with this sender and nonce was already accepted."""


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified, decrypted envelope."""

    sender: bytes
    """The sender's compressed public key (verified by the signature)."""
    timestamp: float
    """Sender's clock when sealed, seconds since the epoch."""
    nonce: bytes
    payload: bytes
    reply_key: bytes = field(default=b"", repr=False, compare=False)
    """Secret shared with the sender for this envelope only (see :func:`make_receipt`)."""


def key_id(public_key: bytes) -> bytes:
    """The 8-byte id an envelope uses to name its recipient."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_SIZE]


def _compressed(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


@lru_cache(maxsize=1024)
def _decompress(data: bytes) -> ec.EllipticCurvePublicKey | None:
    # Decompressing a point costs a modular square root; peers repeat, so cache them.
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, data)
    except ValueError:
        return None


def _seal_millis(nonce: bytes, now: float) -> int:
    """Check a seal's nonce size and time; the time as the header's milliseconds."""
    if len(nonce) != NONCE_SIZE:
        raise EnvelopeError(f"nonce must be {NONCE_SIZE} bytes")
    millis = round(now * 1000)
    if not 0 <= millis <= _U64_MAX:
        raise EnvelopeError("timestamp out of range")
    return millis


def _load_point(data: bytes, what: str, *, cache: bool = True) -> ec.EllipticCurvePublicKey:
    if len(data) != KEY_SIZE or data[0] not in (2, 3):
        raise EnvelopeMalformed(f"{what} is not a compressed P-256 point")
    if cache:
        key = _decompress(data)
    else:  # ephemeral keys never repeat: caching them would only evict useful entries
        key = _decompress.__wrapped__(data)
    if key is None:
        raise EnvelopeMalformed(f"{what} is not a point on P-256")
    return key


def _derive(
    shared: bytes, nonce: bytes, ephemeral: bytes, recipient: bytes, sender: bytes
) -> tuple[bytes, bytes, bytes]:
    """AES key, GCM nonce and reply key.  (HKDF output blocks do not depend on the
    total length, so the reply key was appended without changing the first two.)"""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=32 + 12 + 32,
        salt=nonce,
        info=_KDF_INFO + ephemeral + recipient + sender,
    ).derive(shared)
    return okm[:32], okm[32:44], okm[44:]


def _signed_bytes(recipient: bytes, body: bytes) -> bytes:
    return _SIGN_DOMAIN + recipient + body


def seal_envelope(
    payload: bytes,
    *,
    sender_private_key: ec.EllipticCurvePrivateKey,
    recipient_public_key: bytes,
    now: float,
    nonce: bytes,
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """Encrypt ``payload`` to ``recipient_public_key`` and sign it.

    :param now: the sender's clock, seconds since the epoch.
    :param nonce: 16 random bytes (``os.urandom(16)``); passed in to keep this module
        free of hidden randomness for golden vectors.
    :param ephemeral_private_key: only for golden vectors; a fresh key otherwise.
    :raises EnvelopeError: bad arguments (wrong key size, nonce size, negative time).
    """
    return seal_envelope_with_reply_key(
        payload,
        sender_private_key=sender_private_key,
        recipient_public_key=recipient_public_key,
        now=now,
        nonce=nonce,
        ephemeral_private_key=ephemeral_private_key,
    )[0]


def seal_envelope_with_reply_key(
    payload: bytes,
    *,
    sender_private_key: ec.EllipticCurvePrivateKey,
    recipient_public_key: bytes,
    now: float,
    nonce: bytes,
    ephemeral_private_key: ec.EllipticCurvePrivateKey | None = None,
    sender_public_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """:func:`seal_envelope`, also returning the envelope's reply key, with which the
    sender checks the recipient's receipt (:func:`verify_receipt`).

    :param sender_public_key: the sender's compressed key, if the caller has it (saves
        re-encoding it for every message).
    """
    millis = _seal_millis(nonce, now)
    recipient = bytes(recipient_public_key)
    recipient_key = _load_point(recipient, "recipient public key")
    sender = sender_public_key or _compressed(sender_private_key.public_key())
    eph = ephemeral_private_key or ec.generate_private_key(_CURVE)
    eph_pub = _compressed(eph.public_key())
    key, iv, reply_key = _derive(
        eph.exchange(ec.ECDH(), recipient_key), nonce, eph_pub, recipient, sender
    )
    header = _HEADER.pack(
        ENVELOPE_VERSION, 0, sender, key_id(recipient), millis, bytes(nonce), eph_pub
    )
    body = header + AESGCM(key).encrypt(iv, bytes(payload), header)
    der = sender_private_key.sign(
        _signed_bytes(recipient, body), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    )
    r, s = decode_dss_signature(der)
    return body + r.to_bytes(32, "big") + s.to_bytes(32, "big"), reply_key


def _receipt_tag(reply_key: bytes, nonce: bytes) -> bytes:
    return hmac.digest(reply_key, _RECEIPT_DOMAIN + nonce, "sha256")[:16]


def make_receipt(opened: OpenedEnvelope) -> bytes:
    """The receipt proving that ``opened`` was received and decrypted."""
    return bytes([RECEIPT_TYPE]) + opened.nonce + _receipt_tag(opened.reply_key, opened.nonce)


def parse_receipt(data: bytes) -> tuple[bytes, bytes]:
    """``(nonce, tag)`` of a receipt; raise :class:`EnvelopeMalformed` if it is not one."""
    if len(data) != RECEIPT_SIZE or data[0] != RECEIPT_TYPE:
        raise EnvelopeMalformed("not a receipt")
    return bytes(data[1 : 1 + NONCE_SIZE]), bytes(data[1 + NONCE_SIZE :])


def verify_receipt(tag: bytes, nonce: bytes, reply_key: bytes) -> bool:
    """Is ``tag`` the receipt tag for the envelope with this nonce and reply key?"""
    return hmac.compare_digest(tag, _receipt_tag(reply_key, nonce))


def open_envelope(
    data: bytes,
    my_private_key: ec.EllipticCurvePrivateKey,
    my_public_key: bytes,
    now: float,
    window: float = DEFAULT_WINDOW,
    *,
    max_size: int = DEFAULT_MAX_ENVELOPE,
    replay_cache: ReplayCache | None = None,
    pair_keys: PairKeys | None = None,
) -> OpenedEnvelope:
    """Verify and decrypt an envelope (either version) addressed to ``my_public_key``.

    :param pair_keys: the receiver's :class:`PairKeys`, so a paired envelope from a
        known peer costs no public-key operation.

    Checks, cheapest first: size, shape and version, recipient, freshness
    (``|now - timestamp| <= window``), signature, decryption, then -- only for an
    authentic envelope, so forgeries cannot fill it -- the replay cache.

    :raises EnvelopeError: a subclass naming the reason; never anything else for any
        input bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EnvelopeMalformed(f"envelope must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise EnvelopeTooLarge(f"envelope of {len(data)} bytes exceeds {max_size}")
    data = bytes(data)
    if data[:1] == bytes([PAIRED_VERSION]):
        return _open_paired(
            data,
            pair_keys if pair_keys is not None else PairKeys(my_private_key, my_public_key),
            now,
            window,
            replay_cache,
        )
    if len(data) < ENVELOPE_OVERHEAD:
        raise EnvelopeMalformed(f"envelope of {len(data)} bytes is too short")
    if data[0] != ENVELOPE_VERSION:
        raise EnvelopeMalformed(f"envelope version {data[0]} (this build reads 1 and 2)")
    _version, flags, sender, rid, millis, nonce, eph_pub = _HEADER.unpack_from(data)
    if flags != 0:
        raise EnvelopeMalformed(f"unknown envelope flags 0x{flags:02x}")
    if rid != key_id(my_public_key):
        raise EnvelopeWrongRecipient("envelope is addressed to another key")
    timestamp = millis / 1000
    if abs(now - timestamp) > window:
        raise EnvelopeStale(
            f"envelope timestamp is {now - timestamp:+.1f} s from now (window {window:g} s)"
        )
    sender_key = _load_point(sender, "sender public key")
    body, sig = data[:-SIG_SIZE], data[-SIG_SIZE:]
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < _ORDER and 0 < s < _ORDER):
        raise EnvelopeBadSignature("signature values out of range")
    try:
        sender_key.verify(
            encode_dss_signature(r, s),
            _signed_bytes(my_public_key, body),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise EnvelopeBadSignature("envelope signature does not verify") from None
    eph_key = _load_point(eph_pub, "ephemeral public key", cache=False)
    try:
        shared = my_private_key.exchange(ec.ECDH(), eph_key)
        key, iv, reply_key = _derive(shared, nonce, eph_pub, my_public_key, sender)
        payload = AESGCM(key).decrypt(iv, body[HEADER_SIZE:], body[:HEADER_SIZE])
    except (InvalidTag, ValueError):
        raise EnvelopeDecryptError("envelope does not decrypt") from None
    if replay_cache is not None:
        replay_cache.check_and_add(sender, nonce, timestamp, now)
    return OpenedEnvelope(sender, timestamp, nonce, payload, reply_key)


class PairKeys:
    """The direction keys this node shares with each peer (paired envelopes).

    One ECDH per peer, then cached (bounded, least recently used evicted).  A key is
    cached only once a message under it authenticated, so forgeries under random
    sender keys cost their sender an ECDH each but cannot evict real peers.
    """

    def __init__(
        self, private_key: ec.EllipticCurvePrivateKey, public_key: bytes, max_peers: int = 4096
    ) -> None:
        self._private = private_key
        self.public_key = bytes(public_key)
        self.max_peers = max_peers
        self._keys: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()

    def __repr__(self) -> str:  # never show keys
        return f"<PairKeys peers={len(self._keys)}>"

    def __len__(self) -> int:
        return len(self._keys)

    def derive(self, peer: bytes) -> tuple[bytes, bytes]:
        """``(to_peer, from_peer)`` direction keys for the compressed key ``peer``,
        without caching them."""
        hit = self._keys.get(peer)
        if hit is not None:
            self._keys.move_to_end(peer)
            return hit
        shared = self._private.exchange(ec.ECDH(), _load_point(peer, "peer public key"))
        return (
            _direction_key(shared, self.public_key, peer),
            _direction_key(shared, peer, self.public_key),
        )

    def remember(self, peer: bytes, keys: tuple[bytes, bytes]) -> None:
        self._keys[peer] = keys
        self._keys.move_to_end(peer)
        while len(self._keys) > self.max_peers:
            self._keys.popitem(last=False)


def _direction_key(shared: bytes, sender: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_PAIR_INFO + sender + recipient
    ).derive(shared)


def _message_keys(direction_key: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    return (
        hmac.digest(direction_key, _PAIR_MESSAGE + nonce, "sha256"),
        hmac.digest(direction_key, _PAIR_REPLY + nonce, "sha256"),
    )


def seal_paired_envelope(
    payload: bytes,
    *,
    keys: PairKeys,
    recipient_public_key: bytes,
    now: float,
    nonce: bytes,
) -> tuple[bytes, bytes]:
    """Encrypt and authenticate ``payload`` for ``recipient_public_key`` in a paired
    (version 2) envelope; returns the envelope and its reply key (for receipts).

    :raises EnvelopeError: bad arguments (wrong key or nonce size, time out of range).
    """
    millis = _seal_millis(nonce, now)
    recipient = bytes(recipient_public_key)
    pair = keys.derive(recipient)
    keys.remember(recipient, pair)  # our own choice of peer: nothing to authenticate
    key, reply_key = _message_keys(pair[0], bytes(nonce))
    header = _PAIRED_HEADER.pack(
        PAIRED_VERSION, 0, keys.public_key, key_id(recipient), millis, bytes(nonce)
    )
    return header + AESGCM(key).encrypt(_ZERO_IV, bytes(payload), header), reply_key


def _open_paired(
    data: bytes,
    keys: PairKeys,
    now: float,
    window: float,
    replay_cache: ReplayCache | None,
) -> OpenedEnvelope:
    if len(data) < PAIRED_OVERHEAD:
        raise EnvelopeMalformed(f"paired envelope of {len(data)} bytes is too short")
    _version, flags, sender, rid, millis, nonce = _PAIRED_HEADER.unpack_from(data)
    if flags != 0:
        raise EnvelopeMalformed(f"unknown envelope flags 0x{flags:02x}")
    if rid != key_id(keys.public_key):
        raise EnvelopeWrongRecipient("envelope is addressed to another key")
    timestamp = millis / 1000
    if abs(now - timestamp) > window:
        raise EnvelopeStale(
            f"envelope timestamp is {now - timestamp:+.1f} s from now (window {window:g} s)"
        )
    if sender == keys.public_key:
        raise EnvelopeBadSignature("envelope claims to come from its own recipient")
    pair = keys.derive(sender)
    key, reply_key = _message_keys(pair[1], nonce)
    try:
        payload = AESGCM(key).decrypt(
            _ZERO_IV, data[PAIRED_HEADER_SIZE:], data[:PAIRED_HEADER_SIZE]
        )
    except InvalidTag:
        raise EnvelopeBadSignature(
            "envelope does not authenticate (not from the key it names, or altered)"
        ) from None
    keys.remember(sender, pair)
    if replay_cache is not None:
        replay_cache.check_and_add(sender, nonce, timestamp, now)
    return OpenedEnvelope(sender, timestamp, nonce, payload, reply_key)


class ReplayCache:
    """Remembers (sender, nonce) of accepted envelopes for as long as they could still
    pass the freshness check, so each is accepted once.

    Bounded, and failing closed rather than open: an entry that must go to make room
    raises a *floor* for its sender to its timestamp, and that sender's envelopes stamped
    at or before its floor are then refused as possible replays (a nonce that could
    still be replayed is never simply forgotten).  Room is made, in order:

    - from the sender's own entries, when it holds ``per_sender`` of them: one key
      flooding the cache (keys are free, and a paired envelope costs its sender no
      signature) only pushes out its own entries and raises only its own floor;
    - from the oldest entry of anyone, when all ``max_entries`` are taken (many keys);
    - floors are kept for at most ``max_entries`` senders; past that the lowest is
      folded into one floor for everyone, the last resort.

    A floor older than the freshness window is dropped: the window refuses those
    envelopes anyway.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        max_entries: int = 65536,
        per_sender: int | None = None,
    ) -> None:
        if window <= 0 or max_entries <= 0:
            raise ValueError("window and max_entries must be positive")
        self.window = window
        self.max_entries = max_entries
        self.per_sender = per_sender if per_sender is not None else max(1, max_entries // 4)
        if self.per_sender <= 0:
            raise ValueError("per_sender must be positive")
        self._seen: dict[tuple[bytes, bytes], float] = {}
        # Oldest first, with lazy deletion: an item whose entry is gone (or was re-added
        # with another timestamp) is skipped when popped; a heap grown to twice its live
        # items (and 64 more) is rebuilt, so none outgrows what it holds.
        self._heap: list[tuple[float, tuple[bytes, bytes]]] = []
        self._sender_heaps: dict[bytes, list[tuple[float, bytes]]] = {}
        self._counts: dict[bytes, int] = {}
        self._floors: dict[bytes, float] = {}
        self._floor_heap: list[tuple[float, bytes]] = []  # lowest floor first, lazy
        self._floor = float("-inf")  # for everyone: only when too many senders have floors

    def __len__(self) -> int:
        return len(self._seen)

    def floor_for(self, sender: bytes) -> float:
        """The timestamp at or before which ``sender``'s envelopes are refused."""
        return max(self._floor, self._floors.get(bytes(sender), float("-inf")))

    def _forget(self, entry: tuple[bytes, bytes]) -> None:
        del self._seen[entry]
        sender = entry[0]
        left = self._counts[sender] - 1
        if left:
            self._counts[sender] = left
        else:
            del self._counts[sender]
            del self._sender_heaps[sender]

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._heap and self._heap[0][0] < horizon:
            ts, entry = heapq.heappop(self._heap)
            if self._seen.get(entry) == ts:
                self._forget(entry)

    def _evict(self, entry: tuple[bytes, bytes]) -> None:
        """Make room by forgetting ``entry``; its sender's floor rises to its timestamp."""
        ts = self._seen[entry]
        self._forget(entry)
        sender = entry[0]
        if ts > self._floors.get(sender, float("-inf")):
            self._floors[sender] = ts
            heapq.heappush(self._floor_heap, (ts, sender))
        while len(self._floors) > self.max_entries:
            # The lowest floor goes; one not below the horizon is folded into the floor
            # for everyone (the last resort: it fails closed for all).
            floor, lowest = heapq.heappop(self._floor_heap)
            if self._floors.get(lowest) != floor:
                continue  # stale item: that floor was raised or dropped since
            del self._floors[lowest]
            self._floor = max(self._floor, floor)
        if len(self._floor_heap) > 2 * len(self._floors) + 64:
            self._floor_heap = [(f, k) for k, f in self._floors.items()]
            heapq.heapify(self._floor_heap)

    def _oldest_of(self, sender: bytes) -> tuple[bytes, bytes]:
        heap = self._sender_heaps[sender]
        while True:
            ts, nonce = heap[0]
            if self._seen.get((sender, nonce)) == ts:
                return (sender, nonce)
            heapq.heappop(heap)

    def _oldest(self) -> tuple[bytes, bytes]:
        while True:
            ts, entry = self._heap[0]
            if self._seen.get(entry) == ts:
                return entry
            heapq.heappop(self._heap)

    def _make_room_for(self, sender: bytes, timestamp: float) -> None:
        """Evict what must go for one more entry of ``sender``; refuse (before evicting
        anything of its own) when that would raise its floor to ``timestamp`` or past."""
        if self._counts.get(sender, 0) >= self.per_sender:
            own = self._oldest_of(sender)
            if self._seen[own] >= timestamp:
                raise EnvelopeReplayed("envelope is older than the replay cache remembers")
            self._evict(own)
        while len(self._seen) >= self.max_entries:
            oldest = self._oldest()
            if oldest[0] == sender and self._seen[oldest] >= timestamp:
                raise EnvelopeReplayed("envelope is older than the replay cache remembers")
            self._evict(oldest)

    def check_and_add(self, sender: bytes, nonce: bytes, timestamp: float, now: float) -> None:
        """Record the envelope; raise :class:`EnvelopeReplayed` if already seen."""
        self._expire(now)
        sender = bytes(sender)
        entry = (sender, bytes(nonce))
        if entry in self._seen:
            raise EnvelopeReplayed("envelope was already received (replay or duplicate)")
        if timestamp <= self.floor_for(sender):
            raise EnvelopeReplayed("envelope is older than the replay cache remembers")
        self._make_room_for(sender, timestamp)
        self._seen[entry] = timestamp
        self._counts[sender] = self._counts.get(sender, 0) + 1
        heapq.heappush(self._heap, (timestamp, entry))
        heap = self._sender_heaps.setdefault(sender, [])
        heapq.heappush(heap, (timestamp, entry[1]))
        if len(heap) > 2 * self._counts[sender] + 64:
            self._sender_heaps[sender] = self._live_heap(sender)
        if len(self._heap) > 2 * len(self._seen) + 64:
            self._heap = [(ts, e) for e, ts in self._seen.items()]
            heapq.heapify(self._heap)

    def _live_heap(self, sender: bytes) -> list[tuple[float, bytes]]:
        seen = self._seen
        heap = [(ts, n) for ts, n in self._sender_heaps[sender] if seen.get((sender, n)) == ts]
        heapq.heapify(heap)
        return heap
