"""Resuming links (sans-IO): a later link between two nodes that have already met skips
the signatures and static-key DHs of the full handshake.

After a full handshake (Noise XX plus identity proofs, :mod:`~warpgate.sansio.link_handshake`)
both sides keep a *ticket*: 32 secret bytes that handshake derived (see
:attr:`~warpgate.sansio.noise.NoiseHandshake.extra_secret`), the peer's identity key and
an expiry.  The next TCP link between the same two nodes, in either direction, runs
``Noise_NNpsk0_25519_AESGCM_SHA256`` with a pre-shared key derived from the ticket:

- the dialler knows it reached the node it meant to: only that node holds the ticket
  (message 2 does not decrypt otherwise);
- the listener knows who dialled: only that node holds the ticket, and it proves it holds
  the session keys too (message 1 alone could be a replay) with the first transport
  message (step 3 below);
- fresh ephemeral keys on both sides (``ee``) keep every link forward-secret, as TLS 1.3
  does with ``psk_dhe_ke``.

It costs two X25519 key generations and two DHs for both sides together, against eight
operations and an identity check for the full handshake.  Tickets are never renewed by a
resumed link: they expire ``lifetime`` seconds after the full handshake that made them.

Wire over TCP: the magic ``WGR\\x02`` (instead of ``WGL\\x02``), then 2-byte-length frames::

    1 ->  ticket id (16) | NNpsk0 message 1 (e, payload)      payload: version u8 | records
    2 <-  NNpsk0 message 2 (e, ee, payload)
          or an empty frame: "no such ticket"; the dialler then sends the full
          handshake's message 1 as the next frame, on the same connection
    3 ->  the first transport message: an empty plaintext, under the dialler's send key

The ticket id and the pre-shared key depend on which side dials (HMAC over the dialler's
identity key), so a link in one direction never accepts a message from the other.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from dataclasses import dataclass, field

from warpgate.sansio.link_handshake import (
    MAX_INTENT,
    PAYLOAD_VERSION,
    PROLOGUE,
    LinkHandshake,
    LinkIdentity,
    LinkProtocolError,
    encode_records,
    parse_records,
)
from warpgate.sansio.noise import CipherState, NoiseError, NoiseHandshake

RESUME_PROLOGUE = PROLOGUE + b"/resume"
TICKET_ID_SIZE = 16
MAX_TICKETS = 4096
"""Tickets one node keeps at most (the oldest peers' go first)."""
TICKETS_PER_PEER = 4
"""Tickets kept per peer: concurrent full handshakes (a race of several addresses) may
leave the two sides with different newest tickets, and the listener must still know the
dialler's."""
_ID_LABEL = b"warpgate-resume-id/1\x00"
_PSK_LABEL = b"warpgate-resume-psk/1\x00"


def _derive(secret: bytes, label: bytes, dialler: bytes) -> bytes:
    return hmac.digest(secret, label + dialler, "sha256")


@dataclass(frozen=True)
class DialTicket:
    """What the dialler sends with: the ticket id, and the pre-shared key (secret)."""

    ticket_id: bytes
    psk: bytes = field(repr=False)


@dataclass
class _Ticket:
    """A ticket, with what each direction derives from it (computed once)."""

    peer: bytes
    expires: float
    dial: DialTicket  # for us dialling the peer
    answer_id: bytes  # the id the peer presents when it dials us
    answer_psk: bytes = field(repr=False)

    @classmethod
    def derive(cls, own: bytes, peer: bytes, secret: bytes, expires: float) -> _Ticket:
        return cls(
            peer,
            expires,
            DialTicket(
                _derive(secret, _ID_LABEL, own)[:TICKET_ID_SIZE],
                _derive(secret, _PSK_LABEL, own),
            ),
            _derive(secret, _ID_LABEL, peer)[:TICKET_ID_SIZE],
            _derive(secret, _PSK_LABEL, peer),
        )


class ResumptionTickets:
    """One node's tickets: made after every full handshake, looked up by peer identity
    when dialling and by ticket id when answering.  Bounded: at most ``max_tickets`` in
    all and :data:`TICKETS_PER_PEER` per peer; expired ones are never used and go first
    when room is needed, then the peers used longest ago.  ``lifetime`` 0 turns
    resumption off (nothing is remembered)."""

    def __init__(
        self, own_identity: bytes, *, lifetime: float, max_tickets: int = MAX_TICKETS
    ) -> None:
        self.own_identity = bytes(own_identity)
        self.lifetime = float(lifetime)
        self.max_tickets = max_tickets
        # Every ticket is in both maps or in neither (see _drop).  Peers in order of last
        # use, the most recent last.
        self._by_peer: OrderedDict[bytes, list[_Ticket]] = OrderedDict()
        self._by_id: dict[bytes, _Ticket] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def enabled(self) -> bool:
        return self.lifetime > 0

    def remember(self, peer: bytes, secret: bytes, now: float) -> None:
        """Keep a ticket from a full handshake with ``peer`` that produced ``secret``."""
        if not self.enabled or not secret or peer == self.own_identity:
            return
        ticket = _Ticket.derive(self.own_identity, bytes(peer), bytes(secret), now + self.lifetime)
        tickets = self._by_peer.setdefault(ticket.peer, [])
        self._by_peer.move_to_end(ticket.peer)
        tickets.append(ticket)
        self._by_id[ticket.answer_id] = ticket
        if len(tickets) > TICKETS_PER_PEER:
            self._drop(tickets[0])
        if len(self._by_id) > self.max_tickets:
            for old in [t for t in self._by_id.values() if t.expires <= now]:
                self._drop(old)
        while len(self._by_id) > self.max_tickets:
            for old in list(next(iter(self._by_peer.values()))):
                self._drop(old)

    def for_dialling(self, peer: bytes, now: float) -> DialTicket | None:
        """The newest live ticket for dialling ``peer``, if any."""
        tickets = self._by_peer.get(bytes(peer))
        if not tickets:
            return None
        ticket = tickets[-1]
        if ticket.expires <= now:
            self.forget(peer)  # the older ones expire first
            return None
        self._by_peer.move_to_end(ticket.peer)
        return ticket.dial

    def for_answering(self, ticket_id: bytes, now: float) -> tuple[bytes, bytes] | None:
        """``(peer identity, psk)`` for a ticket id a dialler sent, if it is ours and live."""
        ticket = self._by_id.get(bytes(ticket_id))
        if ticket is None:
            return None
        if ticket.expires <= now:
            self._drop(ticket)
            return None
        self._by_peer.move_to_end(ticket.peer)
        return ticket.peer, ticket.answer_psk

    def forget(self, peer: bytes) -> None:
        """Drop every ticket for ``peer`` (its process no longer knows them)."""
        for ticket in list(self._by_peer.get(bytes(peer), ())):
            self._drop(ticket)

    def _drop(self, ticket: _Ticket) -> None:
        self._by_id.pop(ticket.answer_id, None)
        tickets = self._by_peer.get(ticket.peer)
        if tickets is not None:
            tickets[:] = [t for t in tickets if t is not ticket]
            if not tickets:
                del self._by_peer[ticket.peer]


def _payload(intent: bytes = b"", plaintext: bool = False) -> bytes:
    return bytes([PAYLOAD_VERSION]) + encode_records(intent, plaintext)


def _read_payload(payload: bytes) -> tuple[bytes, bool]:
    if not payload:
        raise LinkProtocolError("resumed handshake payload is empty")
    if payload[0] != PAYLOAD_VERSION:
        raise LinkProtocolError(f"handshake payload version {payload[0]} (this build reads 1)")
    return parse_records(payload, 1)


class ResumedHandshake:
    """One side of a resumed link handshake, with the same interface as
    :class:`~warpgate.sansio.link_handshake.LinkHandshake` (``start``, ``receive``,
    ``complete``, ``remote_identity``, ``intent``, ``transport_ciphers``).

    When the listener does not know the ticket, both sides carry on with a full
    handshake on the same connection, which this object then drives (:attr:`resumed`
    turns False).  ``tickets`` may be None on the listening side: every ticket is then
    unknown.
    """

    def __init__(
        self,
        identity: LinkIdentity,
        *,
        initiator: bool,
        tickets: ResumptionTickets | None,
        now: float,
        ticket: DialTicket | None = None,
        expected_identity: bytes | None = None,
        intent: bytes = b"",
        plaintext: bool = False,
    ) -> None:
        self.identity = identity
        self.initiator = initiator
        self.expected_identity = expected_identity
        self.intent = intent if initiator else b""
        self.plaintext = plaintext
        self.plaintext_agreed = False
        self.remote_identity: bytes | None = None
        self.resumed = True
        self.resumption_secret = b""  # resumed links make no ticket
        self._tickets = tickets
        self._now = now
        self._full: LinkHandshake | None = None
        self._ciphers: tuple[CipherState, CipherState] | None = None
        self._peer: bytes | None = None  # listener: who the ticket says dials
        self._ticket = ticket
        self._noise: NoiseHandshake | None = None
        self._confirmed = False
        self._failed = False
        if len(intent) > MAX_INTENT:
            raise ValueError(f"intent is limited to {MAX_INTENT} bytes")
        if initiator and (ticket is None or tickets is None or expected_identity is None):
            raise LinkProtocolError("resuming needs a ticket, its store and the peer's key")

    @classmethod
    def dialling(
        cls,
        identity: LinkIdentity,
        tickets: ResumptionTickets,
        peer: bytes,
        *,
        now: float,
        intent: bytes = b"",
        plaintext: bool = False,
    ) -> ResumedHandshake | None:
        """The dialler's side, resuming the newest live ticket for ``peer``; None when
        there is none (run the full handshake)."""
        ticket = tickets.for_dialling(peer, now)
        if ticket is None:
            return None
        return cls(
            identity,
            initiator=True,
            tickets=tickets,
            now=now,
            ticket=ticket,
            expected_identity=peer,
            intent=intent,
            plaintext=plaintext,
        )

    # -- the LinkHandshake interface --------------------------------------------------

    @property
    def complete(self) -> bool:
        if self._full is not None:
            return self._full.complete
        return self._confirmed

    def start(self, padding: int = 0) -> bytes:
        """Message 1: the ticket id and NNpsk0's first message (``padding`` is ignored:
        resumption runs over TCP only)."""
        if not self.initiator:
            raise LinkProtocolError("only the initiator starts the handshake")
        if self._noise is not None or self._ticket is None:
            raise LinkProtocolError("the handshake has already started")
        self._noise = NoiseHandshake(
            initiator=True, pattern="NNpsk0", psk=self._ticket.psk, prologue=RESUME_PROLOGUE
        )
        message = self._noise.write_message(_payload(self.intent, self.plaintext))
        ticket_id, self._ticket = self._ticket.ticket_id, None  # no copy of the psk kept
        return ticket_id + message

    def receive(self, message: bytes) -> bytes | None:
        """Process the peer's next handshake message; return our reply, if any (an empty
        reply is the "no such ticket" frame)."""
        if self._full is not None:
            reply = self._full.receive(message)
            self._adopt_full()
            return reply
        if self._confirmed:
            raise LinkProtocolError("the handshake is already complete")
        if self._failed:
            raise LinkProtocolError("the handshake has failed and cannot be used again")
        if self.initiator and self._noise is None:
            raise LinkProtocolError("the initiator must start() the handshake first")
        try:
            if self.initiator:
                return self._initiator_receive(bytes(message))
            return self._responder_receive(bytes(message))
        except NoiseError as exc:
            self._failed = True
            raise LinkProtocolError(f"resumed link handshake failed: {exc}") from exc
        except LinkProtocolError:
            self._failed = True
            raise

    def _initiator_receive(self, message: bytes) -> bytes:
        assert self._noise is not None and self.expected_identity is not None
        if self._noise.complete:
            raise LinkProtocolError("the handshake is already complete")
        if not message:  # the listener has no such ticket (restarted, or expired there)
            assert self._tickets is not None
            self._tickets.forget(self.expected_identity)
            self.resumed = False
            self._full = LinkHandshake(
                self.identity,
                initiator=True,
                expected_identity=self.expected_identity,
                intent=self.intent,
                plaintext=self.plaintext,
            )
            return self._full.start()
        _intent, peer_plaintext = _read_payload(self._noise.read_message(message))
        self.plaintext_agreed = self.plaintext and peer_plaintext
        send, receive = self._noise.split()
        self._ciphers = (send, receive)
        self.remote_identity = self.expected_identity
        self._confirmed = True
        return send.encrypt(b"")  # step 3: proves we hold the session keys

    def _responder_receive(self, message: bytes) -> bytes | None:
        if self._noise is None:  # message 1
            if len(message) < TICKET_ID_SIZE:
                raise LinkProtocolError(
                    f"resumed handshake message 1 of {len(message)} bytes is too short"
                )
            found = (
                self._tickets.for_answering(message[:TICKET_ID_SIZE], self._now)
                if self._tickets is not None
                else None
            )
            if found is None:
                self.resumed = False
                self._full = LinkHandshake(self.identity, initiator=False, plaintext=self.plaintext)
                return b""
            self._peer, psk = found
            self._noise = NoiseHandshake(
                initiator=False, pattern="NNpsk0", psk=psk, prologue=RESUME_PROLOGUE
            )
            self.intent, peer_plaintext = _read_payload(
                self._noise.read_message(message[TICKET_ID_SIZE:])
            )
            self.plaintext_agreed = self.plaintext and peer_plaintext
            reply = self._noise.write_message(_payload(plaintext=self.plaintext))
            self._ciphers = self._noise.split()
            return reply
        # Step 3: the dialler's first transport message, empty.
        assert self._ciphers is not None
        if self._ciphers[1].decrypt(message) != b"":
            raise LinkProtocolError("resumed handshake: the confirmation must be empty")
        self.remote_identity = self._peer
        self._confirmed = True
        return None

    def _adopt_full(self) -> None:
        full = self._full
        assert full is not None
        self.remote_identity = full.remote_identity
        self.plaintext_agreed = full.plaintext_agreed
        if not self.initiator:
            self.intent = full.intent

    @property
    def handshake_hash(self) -> bytes:
        if self._full is not None:
            return self._full.handshake_hash
        return self._noise.handshake_hash if self._noise is not None else b""

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) transport ciphers for this side."""
        if self._full is not None:
            ciphers = self._full.split()
            self.resumption_secret, self._full.resumption_secret = self._full.resumption_secret, b""
            return ciphers
        if not self.complete or self._ciphers is None:
            raise LinkProtocolError("handshake not complete")
        ciphers, self._ciphers = self._ciphers, None
        return ciphers

    def transport_ciphers(self) -> tuple[CipherState | None, CipherState | None]:
        """(send, receive) for the records; ``(None, None)`` when both sides agreed on
        plaintext (benchmarks)."""
        send, receive = self.split()
        return (None, None) if self.plaintext_agreed else (send, receive)


__all__ = [
    "MAX_TICKETS",
    "TICKETS_PER_PEER",
    "TICKET_ID_SIZE",
    "DialTicket",
    "ResumedHandshake",
    "ResumptionTickets",
]
