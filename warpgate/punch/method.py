"""What the two punch traversal methods share: candidates from the NAT information in
both addresses (none when the pair cannot be punched, so ``auto_connect`` moves on to a
relay at once), the offer/answer exchange, and the responder's bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from warpgate.errors import WarpgateError
from warpgate.interfaces import Candidate, Transport
from warpgate.punch.session import Coordinator, PunchAborted, Session, unreachable_target
from warpgate.sansio.address import HintKind, NodeAddress
from warpgate.sansio.punch_messages import AbortReason, Offer, PunchTransport, Schedule
from warpgate.sansio.punch_plan import Plan, Strategy, endpoints_of, plan

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

COST_PUNCH = 6.0  # after direct (1-4) and reverse (5), before a relay

CONF_DEFAULTS: dict[str, Any] = {
    "punch_timeout": 10.0,
    "punch_signal_timeout": 5.0,
    "punch_refresh_timeout": 1.0,
    "punch_head_start": 2.0,
    "punch_keepalive": 15.0,
    "punch_tcp_schedule": "rtt",
    "punch_tcp_sockets": 4,
    "punch_tcp_prime_ttl": 2,
    "punch_birthday_sockets": 256,
    "punch_birthday_probes": 4096,
}


class PunchMethod:
    """Base of ``udp_punch`` and ``tcp_punch``."""

    name = "punch"
    transport: PunchTransport = PunchTransport.UDP
    #: Start :meth:`respond` as soon as the answer leaves, not once it is acknowledged.
    respond_while_answering = False

    def __init__(self, node: Node) -> None:
        self.node = node
        self.coordinator = Coordinator(node, self.transport, self._offer_received)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _link_transport(self) -> Transport:
        return "udp" if self.transport == PunchTransport.UDP else "tcp"

    async def start(self) -> None:
        self.coordinator.start()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def plan_for(self, peer: NodeAddress) -> Plan:
        return plan(self.coordinator.own_endpoints(), endpoints_of(peer), self.transport)

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        if transport != self._link_transport or not self.node.signal_transports:
            return []
        planned = self.plan_for(peer)
        if planned.strategy is Strategy.IMPOSSIBLE:
            log.debug("%s: not trying: %s", self.name, planned.why)
            return []
        # While the punch runs, auto_connect starts nothing later (a relay) for up to
        # punch_head_start seconds: a relay that connects first would win over the
        # direct path the punch is about to open (birthday probing needs ~1 s).
        head_start = float(self.node.conf["punch_head_start"])
        return [
            Candidate(
                self.name,
                transport,
                None,
                None,
                COST_PUNCH,
                planned.strategy.value,
                extra={"head_start": head_start},
            )
        ]

    # -- requester ----------------------------------------------------------------------

    async def exchange(
        self,
        peer: NodeAddress,
        schedule: Schedule,
        *,
        on_open: Callable[[Session], None] | None = None,
    ) -> tuple[Session, Offer, Plan, float]:
        """Send the offer, wait for the answer; returns the session (open: the caller
        closes it), the answer, this side's plan and the signal round trip.
        ``on_open`` is called with the session before the offer leaves (the peer may
        act on it before its answer arrives here)."""
        own = await self.coordinator.fresh_endpoints()
        if not own:
            raise ConnectionError("this node knows no external endpoint (no NAT classification)")
        hints = tuple(h.value for h in peer.hints if h.kind == HintKind.SIGNAL)
        session = self.coordinator.open(peer.public_key, hints=hints)
        try:
            if on_open is not None:
                on_open(session)
            sent = time.monotonic()
            offer = Offer(
                session.id, self.transport, tuple(own), schedule, hints=self.coordinator.own_hints()
            )
            await self.coordinator.send(peer, offer.encode())
            async with asyncio.timeout(float(self.node.conf["punch_signal_timeout"])):
                answer = await session.answer
            rtt = time.monotonic() - sent
        except TimeoutError:
            self.coordinator.close(session)
            raise TimeoutError("the peer did not answer the punch offer") from None
        except BaseException:
            self.coordinator.close(session)
            raise
        planned = plan(own, answer.endpoints, self.transport)
        if planned.strategy is Strategy.IMPOSSIBLE:
            self._spawn(self.coordinator.abort(session, AbortReason.IMPOSSIBLE), "abort")
            self.coordinator.close(session)
            raise PunchAborted(f"cannot punch: {planned.why}")
        return session, answer, planned, rtt

    # -- responder ----------------------------------------------------------------------

    def _offer_received(self, sender: bytes, offer: Offer) -> None:
        self._spawn(self._respond_safely(sender, offer), f"{self.name} responder")

    async def _respond_safely(self, sender: bytes, offer: Offer) -> None:
        # Anyone can make a key and send an offer: what it asks us to send probes or
        # SYNs to must be a place a peer could be, not our loopback or someone's LAN.
        try:
            own = await self.coordinator.fresh_endpoints()
        except (WarpgateError, OSError) as exc:
            log.info("%s: cannot answer an offer: %s", self.name, exc)
            return
        refusal = unreachable_target(own, offer.endpoints)
        if refusal:
            log.warning("%s: refused an offer from %s: %s", self.name, sender.hex()[:16], refusal)
            return
        planned = plan(own, offer.endpoints, self.transport)
        birthday = planned.strategy in (Strategy.BIRTHDAY_HARD, Strategy.BIRTHDAY_EASY)
        try:
            session = self.coordinator.open(sender, offer.session, offer.hints, birthday=birthday)
        except PunchAborted:
            await self.coordinator.abort(_bare(sender, offer), AbortReason.BUSY)
            return
        try:
            if planned.strategy is Strategy.IMPOSSIBLE:
                log.info("%s: refusing an offer: %s", self.name, planned.why)
                await self.coordinator.abort(session, AbortReason.IMPOSSIBLE)
                return
            answer = Offer(session.id, self.transport, tuple(own), offer.schedule, answer=True)
            sending = self.coordinator.send(sender, answer.encode(), hints=session.hints)
            if not self.respond_while_answering:
                await sending
            async with asyncio.timeout(float(self.node.conf["punch_timeout"])):
                if self.respond_while_answering:
                    await self._answer_and_respond(sending, session, offer, planned)
                else:
                    await self.respond(session, offer, planned)
        except (TimeoutError, ConnectionError, OSError, WarpgateError) as exc:
            log.info("%s: responding to %s failed: %s", self.name, sender.hex()[:16], exc)
        finally:
            self.coordinator.close(session)

    async def _answer_and_respond(
        self, sending: Any, session: Session, offer: Offer, planned: Plan
    ) -> None:
        """Start this side's part while the answer is on its way: a reliable signal
        transport returns only once the requester's receipt is back (a whole signal round
        trip after the requester could start); a failed send ends it."""
        work = asyncio.create_task(self.respond(session, offer, planned))
        try:
            await sending
            await work
        finally:
            if not work.done():
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)

    async def respond(self, session: Session, offer: Offer, planned: Plan) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _bare(sender: bytes, offer: Offer) -> Session:
    """A session object for answering an offer that was not taken (not registered)."""
    loop = asyncio.get_running_loop()
    return Session(
        offer.session,
        sender,
        offer.transport,
        loop.create_future(),
        loop.create_future(),
        hints=offer.hints,
    )
