"""Punch sessions over the node's signal transports: offer → answer (→ sync), matched by
a random session id, as :mod:`warpgate_plugins.reverse` matches its requests by intent.

:class:`Coordinator` is the part both punch methods share: it sends messages through
the first signal transport that reaches the peer, routes answers and syncs to the
session that waits for them, and hands offers for its transport to the method's
responder.  Everything it waits for is bounded by the caller's deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warpgate.errors import WarpgateError
from warpgate.net.scope import not_a_target
from warpgate.sansio.address import HintKind, NatType, NodeAddress
from warpgate.sansio.punch_messages import (
    MAX_HINT,
    MAX_HINTS,
    SESSION_SIZE,
    Abort,
    AbortReason,
    Endpoint,
    Offer,
    PunchMessageError,
    PunchTransport,
    Sync,
    decode_punch_message,
    is_punch_message,
)
from warpgate.sansio.punch_plan import endpoints_of

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

MAX_SESSIONS = 64  # concurrent sessions per method; more offers are refused (busy)
MAX_PER_PEER = 4  # concurrent sessions with one peer key
MAX_BIRTHDAYS = 2  # concurrent birthday-probing sessions (256 sockets or 4,096 probes each)


def unreachable_target(own: Sequence[Endpoint], theirs: Sequence[Endpoint]) -> str:
    """Why an offer's endpoints are no place to send probes to ("" when they are fine):
    :func:`~warpgate.net.scope.not_a_target` for each, we being public when one of our
    own external addresses is."""
    ours_public = any(ep.ext_ip is not None and ep.ext_ip.is_global for ep in own)
    for ep in theirs:
        if ep.ext_ip is not None and (why := not_a_target(ep.ext_ip, we_are_public=ours_public)):
            return why
    return ""


class PunchAborted(WarpgateError, ConnectionError):
    """The peer (or this side) gave up on the session."""


@dataclass
class Session:
    id: bytes
    peer_key: bytes
    transport: PunchTransport
    answer: asyncio.Future[Offer]
    sync: asyncio.Future[Sync]
    started: float = field(default_factory=time.monotonic)
    hints: tuple[str, ...] = ()
    """The peer's signal hints: every message of the session to the peer carries them."""
    birthday: bool = False
    """A birthday-probing session (capped node-wide: see :data:`MAX_BIRTHDAYS`)."""


OfferHandler = Callable[[bytes, Offer], None]


class Coordinator:
    """Signalling for one punch method (one transport) of one node."""

    def __init__(self, node: Node, transport: PunchTransport, on_offer: OfferHandler) -> None:
        self.node = node
        self.transport = transport
        self.on_offer = on_offer
        self.sessions: dict[bytes, Session] = {}
        self.ignored = 0  # malformed or unmatched messages (for tests and logs)

    def start(self) -> None:
        for transport in self.node.signal_transports.values():
            transport.add_handler(self._on_signal)

    def own_endpoints(self) -> list[Endpoint]:
        return endpoints_of(NodeAddress.decode(self.node.address()))

    def own_hints(self) -> tuple[str, ...]:
        """This node's signal hints, for the offer: the peer answers through them."""
        address = NodeAddress.decode(self.node.address())
        found = [h.value for h in address.hints if h.kind == HintKind.SIGNAL]
        return tuple(h for h in found if isinstance(h, str) and 0 < len(h.encode()) <= MAX_HINT)[
            :MAX_HINTS
        ]

    async def fresh_endpoints(self) -> list[Endpoint]:
        """The endpoints, with each UDP mapping measured again from the listening socket.

        A mapping can change after classification: it expires when idle, and an
        endpoint-independent NAT that had to pick another port for one flow (a clash)
        keeps using that port for every later flow of the socket.  One Binding request
        (bounded by ``punch_refresh_timeout``) costs a round trip to the STUN server and
        gives the port a peer will really see; without an answer the classified
        endpoint stands."""
        endpoints = self.own_endpoints()
        if self.transport != PunchTransport.UDP:
            return endpoints
        fresh = []
        for ep in endpoints:
            fresh.append(await self._refresh(ep))
        return fresh

    async def _refresh(self, ep: Endpoint) -> Endpoint:
        from warpgate.punch.sockets import ipv4_listener
        from warpgate.stun.client import StunUnavailable
        from warpgate.stun.node_binding import binding_from_listener

        if ep.nat_type in (NatType.SYMMETRIC, NatType.UDP_BLOCKED):
            return ep  # a symmetric NAT's port towards the peer cannot be measured
        try:
            listener = ipv4_listener(self.node, ep.local_port)
        except ConnectionError:
            return ep
        report = self.node.nat_reports.get(str(listener.ip))
        server = getattr(report, "server", None)
        if server is None:
            return ep
        try:
            result = await binding_from_listener(
                self.node,
                listener,
                server,
                timeout=float(self.node.conf["punch_refresh_timeout"]),
            )
        except (StunUnavailable, OSError) as exc:
            log.debug("could not refresh the mapping of %s: %s", listener.local, exc)
            return ep
        mapped = result.mapped
        if mapped is None or (str(ep.ext_ip), ep.ext_port) == (mapped[0], mapped[1]):
            return ep
        log.info(
            "mapping of %s moved from %s:%d to %s:%d",
            listener.local,
            ep.ext_ip,
            ep.ext_port,
            mapped[0],
            mapped[1],
        )
        return dataclasses.replace(ep, ext_ip=ipaddress.ip_address(mapped[0]), ext_port=mapped[1])

    def open(
        self,
        peer_key: bytes,
        session_id: bytes | None = None,
        hints: tuple[str, ...] = (),
        *,
        birthday: bool = False,
    ) -> Session:
        """A new session; ``session_id`` is the requester's (for a responder).  Refused
        (:class:`PunchAborted`) beyond the caps: sessions in all, per peer, and birthday
        sessions (hundreds of sockets or thousands of probes each) in all."""
        if len(self.sessions) >= MAX_SESSIONS:
            raise PunchAborted("too many punch sessions at once")
        if session_id is not None and session_id in self.sessions:
            raise PunchAborted("a session with that id is already running")
        if sum(1 for s in self.sessions.values() if s.peer_key == peer_key) >= MAX_PER_PEER:
            raise PunchAborted("too many punch sessions with that peer at once")
        if birthday and sum(1 for s in self.sessions.values() if s.birthday) >= MAX_BIRTHDAYS:
            raise PunchAborted("too many birthday-probing sessions at once")
        loop = asyncio.get_running_loop()
        session = Session(
            session_id or secrets.token_bytes(SESSION_SIZE),
            peer_key,
            self.transport,
            loop.create_future(),
            loop.create_future(),
            hints=tuple(hints),
            birthday=birthday,
        )
        self.sessions[session.id] = session
        return session

    def close(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        for fut in (session.answer, session.sync):
            if not fut.done():
                fut.cancel()

    async def send(
        self, peer: NodeAddress | bytes, payload: bytes, *, hints: tuple[str, ...] = ()
    ) -> None:
        """Through the first signal transport that takes it, with the peer's signal
        hints (from its address, else ``hints``: what its offer carried)."""
        if isinstance(peer, NodeAddress):
            key = peer.public_key
            hints = tuple(h.value for h in peer.hints if h.kind == HintKind.SIGNAL) or hints
        else:
            key = peer
        errors = []
        for transport in self.node.signal_transports.values():
            try:
                await transport.send(key, payload, hints=list(hints))
                return
            except (ConnectionError, WarpgateError, OSError) as exc:
                errors.append(f"{transport.name}: {exc}")
        raise ConnectionError(
            "no signal transport reached the peer: " + ("; ".join(errors) or "none running")
        )

    def _on_signal(self, sender: bytes, payload: bytes) -> None:
        if not is_punch_message(payload):
            return  # another method's message
        try:
            msg = decode_punch_message(payload)
        except PunchMessageError as exc:
            self.ignored += 1
            log.info("ignored a malformed punch message: %s", exc)
            return
        if isinstance(msg, Offer) and not msg.answer:
            if msg.transport == self.transport:
                self.on_offer(sender, msg)
            return
        session = self.sessions.get(msg.session)
        if session is None or session.peer_key != sender:
            # Late (the session ended) or another method's; never an error.
            if session is not None:
                self.ignored += 1
                log.info("ignored a punch message for a session with another peer")
            return
        if isinstance(msg, Abort):
            error = PunchAborted(f"the peer gave up ({msg.reason.name.lower()})")
            for fut in (session.answer, session.sync):
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # nobody may be waiting on both: no "never retrieved"
        elif isinstance(msg, Offer) and msg.answer:
            if not session.answer.done():
                session.answer.set_result(msg)
        elif isinstance(msg, Sync) and not session.sync.done():
            session.sync.set_result(msg)

    async def abort(self, session: Session, reason: AbortReason) -> None:
        """Tell the peer, best effort (it has its own deadline anyway)."""
        try:
            async with asyncio.timeout(1.0):
                await self.send(
                    session.peer_key, Abort(session.id, reason).encode(), hints=session.hints
                )
        except (TimeoutError, ConnectionError) as exc:
            log.debug("could not send abort: %s", exc)
