"""The link handshake (sans-IO): Noise XX, with each side's static Noise key signed by
its node identity key.

This is the construction libp2p's Noise handshake uses: Noise
(``Noise_XX_25519_AESGCM_SHA256``) gives forward-secret encryption and proves each
side holds its X25519 static key; the handshake payloads carry the node's ECDSA P-256
identity key and its signature over that static key, binding the two.  The dialler
knows which identity it wants (from the address or name record) and refuses any other.

Payload (inside Noise messages 2 and 3, so encrypted)::

    version u8 (1) | identity key (33, SEC1 compressed) | sig_len u8 | signature (DER)
    | records: type u8, len u16, value   (unknown types skipped)

Record type 1 is the *intent*: an opaque token the initiator uses to say why it dials
(reverse connect matches its request with it).  Record type 2 (empty) asks for a
plaintext transport after the handshake; it takes effect only when both sides ask, and
exists for benchmarks (conf ``link_encryption=False``).  Messages on the wire are the Noise
messages themselves; framing them is the transport's job.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.errors import WarpgateError
from warpgate.sansio.noise import CipherState, NoiseError, NoiseHandshake, generate_static_key
from warpgate.sansio.noise import public_key as x25519_public

PAYLOAD_VERSION = 1
PROLOGUE = b"warpgate-link/1"
SIG_CONTEXT = b"warpgate-link-static-key/1\x00"
IDENTITY_SIZE = 33
REC_INTENT = 1
REC_PLAINTEXT = 2
MAX_INTENT = 64

_REC = struct.Struct(">BH")


class LinkAuthError(WarpgateError):
    """The peer could not prove it holds the identity key we expected."""


class LinkProtocolError(WarpgateError, ValueError):
    """The peer sent handshake bytes that do not follow the link protocol."""


@dataclass(frozen=True)
class LinkIdentity:
    """Our side's long-term identity plus a Noise static key it has signed."""

    signing_key: ec.EllipticCurvePrivateKey
    public_key: bytes
    noise_static: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @classmethod
    def create(cls, signing_key: ec.EllipticCurvePrivateKey, public_key: bytes) -> LinkIdentity:
        """A fresh Noise static key for this process, signed once by the identity key."""
        static = generate_static_key()
        sig = signing_key.sign(SIG_CONTEXT + x25519_public(static), ec.ECDSA(hashes.SHA256()))
        return cls(signing_key, public_key, static, sig)

    def payload(self, intent: bytes = b"", plaintext: bool = False) -> bytes:
        out = bytearray([PAYLOAD_VERSION])
        out += self.public_key
        out += bytes([len(self.signature)]) + self.signature
        out += encode_records(intent, plaintext)
        return bytes(out)


@dataclass(frozen=True)
class PeerProof:
    identity: bytes
    intent: bytes
    plaintext: bool = False


def verify_payload(payload: bytes, remote_static: bytes) -> PeerProof:
    """Check that ``payload`` names an identity key that signed ``remote_static``."""
    if len(payload) < 1 + IDENTITY_SIZE + 1:
        raise LinkProtocolError("handshake payload too short")
    if payload[0] != PAYLOAD_VERSION:
        raise LinkProtocolError(f"handshake payload version {payload[0]} (this build reads 1)")
    identity = payload[1 : 1 + IDENTITY_SIZE]
    pos = 1 + IDENTITY_SIZE
    sig_len = payload[pos]
    pos += 1
    sig = payload[pos : pos + sig_len]
    if len(sig) != sig_len:
        raise LinkProtocolError("handshake payload: truncated signature")
    pos += sig_len
    intent, plaintext = parse_records(payload, pos)
    if not _signature_valid(bytes(identity), bytes(sig), bytes(remote_static)):
        raise LinkAuthError("the peer's identity signature over its link key is invalid")
    return PeerProof(identity, intent, plaintext)


def encode_records(intent: bytes = b"", plaintext: bool = False) -> bytes:
    """The records part of a handshake payload."""
    out = b""
    if intent:
        out += _REC.pack(REC_INTENT, len(intent)) + intent
    if plaintext:
        out += _REC.pack(REC_PLAINTEXT, 0)
    return out


def parse_records(payload: bytes, pos: int) -> tuple[bytes, bool]:
    """``(intent, plaintext)`` from the records of a handshake payload from ``pos`` on;
    unknown record types are skipped."""
    intent = b""
    plaintext = False
    while pos < len(payload):
        if pos + _REC.size > len(payload):
            raise LinkProtocolError("handshake payload: truncated record")
        rtype, rlen = _REC.unpack_from(payload, pos)
        pos += _REC.size
        value = payload[pos : pos + rlen]
        if len(value) != rlen:
            raise LinkProtocolError("handshake payload: truncated record")
        pos += rlen
        if rtype == REC_INTENT:
            if rlen > MAX_INTENT:
                raise LinkProtocolError("handshake payload: intent too long")
            intent = bytes(value)
        elif rtype == REC_PLAINTEXT:
            plaintext = True
    return intent, plaintext


@functools.lru_cache(maxsize=1024)
def _signature_valid(identity: bytes, sig: bytes, remote_static: bytes) -> bool:
    """ECDSA verification, cached: a peer signs its static key once per process and
    presents the same proof on every link, so repeated links skip the costly check."""
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), identity)
        key.verify(sig, SIG_CONTEXT + remote_static, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        return False
    return True


class LinkHandshake:
    """Drive one side of the handshake: feed it the peer's messages, send what it returns.

    Initiator: ``first = hs.start()``; send it; ``reply = hs.receive(msg2)``; send
    ``reply``; done.  Responder: ``reply = hs.receive(msg1)``; send it;
    ``hs.receive(msg3)`` returns ``None``; done.  Then ``hs.remote_identity``,
    ``hs.intent`` and ``hs.split()``.
    """

    def __init__(
        self,
        identity: LinkIdentity,
        *,
        initiator: bool,
        expected_identity: bytes | None = None,
        intent: bytes = b"",
        plaintext: bool = False,
    ) -> None:
        if len(intent) > MAX_INTENT:
            raise ValueError(f"intent is limited to {MAX_INTENT} bytes")
        self.identity = identity
        self.initiator = initiator
        self.expected_identity = expected_identity
        self.intent = intent if initiator else b""
        self.remote_identity: bytes | None = None
        self.plaintext = plaintext
        self.plaintext_agreed = False
        self.resumption_secret = b""
        self._noise = NoiseHandshake(
            initiator=initiator, static_key=identity.noise_static, prologue=PROLOGUE
        )

    @property
    def complete(self) -> bool:
        return self._noise.complete and self.remote_identity is not None

    def start(self, padding: int = 0) -> bytes:
        """The first handshake message; ``padding`` zero bytes ride in its (plaintext,
        hashed) payload, for transports that must make it as large as the reply."""
        if not self.initiator:
            raise LinkProtocolError("only the initiator starts the handshake")
        return self._noise.write_message(bytes(padding))

    def receive(self, message: bytes) -> bytes | None:
        """Process the peer's next handshake message; return our reply, if any."""
        try:
            payload = self._noise.read_message(message)
        except NoiseError as exc:
            raise LinkProtocolError(f"link handshake failed: {exc}") from exc
        index = self._noise.message_index
        if index == 1:  # responder got msg1 (e): answer with e, ee, s, es + our proof
            try:
                return self._noise.write_message(self.identity.payload(plaintext=self.plaintext))
            except NoiseError as exc:  # e.g. a low-order ephemeral key in message 1
                raise LinkProtocolError(f"link handshake failed: {exc}") from exc
        remote_static = self._noise.remote_static
        assert remote_static is not None
        proof = verify_payload(payload, remote_static)
        if self.expected_identity is not None and proof.identity != self.expected_identity:
            raise LinkAuthError(
                f"the peer holds key {proof.identity.hex()[:16]}..., not the expected "
                f"{self.expected_identity.hex()[:16]}... (wrong host, or a man in the middle)"
            )
        self.remote_identity = proof.identity
        self.plaintext_agreed = self.plaintext and proof.plaintext
        if index == 2:  # initiator got msg2: answer with s, se + our proof (and intent)
            try:
                return self._noise.write_message(self.identity.payload(self.intent, self.plaintext))
            except NoiseError as exc:
                raise LinkProtocolError(f"link handshake failed: {exc}") from exc
        self.intent = proof.intent  # responder got msg3
        return None

    @property
    def handshake_hash(self) -> bytes:
        return self._noise.handshake_hash

    # Full handshakes are never resumed ones: see warpgate.sansio.link_resumption.
    resumed = False

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) transport ciphers for this side.  Afterwards
        :attr:`resumption_secret` holds the secret a resumption ticket is made from."""
        if not self.complete:
            raise LinkProtocolError("handshake not complete")
        ciphers = self._noise.split()
        self.resumption_secret = self._noise.take_extra_secret()
        return ciphers

    def transport_ciphers(self) -> tuple[CipherState | None, CipherState | None]:
        """(send, receive) for the records; ``(None, None)`` when both sides agreed on
        plaintext (benchmarks)."""
        send, receive = self.split()
        return (None, None) if self.plaintext_agreed else (send, receive)
