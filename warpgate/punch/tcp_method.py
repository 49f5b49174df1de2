"""The ``tcp_punch`` traversal method: TCP simultaneous open between two NATed peers.

Offer and answer carry both sides' mapped endpoints, as for ``udp_punch``, but with the
port of a TCP socket each side binds for this session alone (see
:mod:`warpgate.punch.tcp` for why not the listening port); then the requester sends
*sync* and both connect to each other's predicted endpoints at the same moment.
``punch_tcp_schedule`` picks how that moment is agreed: ``"rtt"`` (DCUtR style: the
requester measured the signal round trip from offer to answer and starts half of it
after sending sync; the peer starts when sync arrives) or ``"ntp"`` (sync carries a
start time on the node's NTP clock).  The connection carries the link handshake,
requester as initiator; the peer adopts it as an inbound link.  See
``docs/punching.md`` for the measured difference between the schedules.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from warpgate.punch.method import PunchMethod
from warpgate.punch.session import Coordinator
from warpgate.punch.sockets import ipv4_listener
from warpgate.punch.tcp import (
    SimultaneousOpen,
    close_quietly,
    first_link,
    handshake_on,
    listening_socket,
)
from warpgate.sansio.address import PortAllocation
from warpgate.sansio.link_handshake import LinkAuthError, LinkProtocolError
from warpgate.sansio.punch_messages import Endpoint, Offer, PunchTransport, Schedule, Sync

if TYPE_CHECKING:
    from warpgate.interfaces import Candidate
    from warpgate.link.link import Link
    from warpgate.punch.session import Session
    from warpgate.sansio.address import NodeAddress
    from warpgate.sansio.punch_plan import Plan

log = logging.getLogger(__name__)

MIN_LEAD = 0.02  # NTP schedule: at least this much ahead of now when sync is sent
MAX_WAIT = 5.0  # never wait longer than this for a scheduled start


class _Reservation:
    """The socket bound for one session, from the offer or answer that announced its
    port until the simultaneous open takes it (closed if nobody does)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    def take(self) -> socket.socket | None:
        sock, self.sock = self.sock, None
        return sock

    def close(self) -> None:
        close_quietly(self.take())


# The shared offer/answer code asks the coordinator for this side's endpoints from
# inside the session's own task; the reservation set for that task receives the socket.
_reservation: contextvars.ContextVar[_Reservation | None] = contextvars.ContextVar(
    "tcp_punch_reservation", default=None
)


class _TcpCoordinator(Coordinator):
    async def fresh_endpoints(self) -> list[Endpoint]:
        endpoints = self.own_endpoints()
        holder = _reservation.get()
        if holder is None or not endpoints:
            return endpoints
        ep = endpoints[0]
        listener = ipv4_listener(self.node, ep.local_port)
        holder.close()
        holder.sock = listening_socket(str(listener.ip))
        return [session_endpoint(ep, holder.sock.getsockname()[1])]


def session_endpoint(ep: Endpoint, port: int) -> Endpoint:
    """``ep`` as announced for a session whose socket has local ``port``."""
    if ep.allocation == PortAllocation.SEQUENTIAL:
        # The peer predicts from the last mapping STUN saw plus the NAT's step
        # (punch_plan.predicted_ports): keep it.
        return dataclasses.replace(ep, local_port=port)
    # A port-preserving NAT maps the fresh port to the same external port.
    return dataclasses.replace(ep, ext_port=port, local_port=port)


class TcpPunchMethod(PunchMethod):
    name = "tcp_punch"
    transport = PunchTransport.TCP

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.coordinator = _TcpCoordinator(node, self.transport, self._offer_received)
        # Node-clock start times of the simultaneous opens, newest last (the schedule
        # benchmark compares both sides').
        self.starts: list[float] = []

    def _schedule(self) -> Schedule:
        wanted = str(self.node.conf["punch_tcp_schedule"]).lower()
        if wanted == "ntp":
            return Schedule.NTP
        if wanted != "rtt":
            log.warning("punch_tcp_schedule %r unknown; using 'rtt'", wanted)
        return Schedule.RTT

    def _clock(self) -> float:
        clock = self.node.clock
        return clock.time() if clock is not None else time.time()

    # -- requester ----------------------------------------------------------------------

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        holder = _Reservation()
        token = _reservation.set(holder)
        try:
            session, answer, planned, rtt = await self.exchange(peer, self._schedule())
            try:
                if holder.sock is None:
                    raise ConnectionError("no TCP socket was bound for the punch")
                ntp = answer.schedule == Schedule.NTP
                start_at = self._clock() + max(rtt, MIN_LEAD) if ntp else 0.0
                # The timer runs from the moment sync leaves, not from when the send
                # returns: a transport may return only once the peer acknowledged it
                # (MQTT signalling does: a whole round trip), and waiting for that
                # started us late by it (measured: SYNs that never crossed in the lab's
                # reset-answering NATs, docs/punching.md).
                sending = asyncio.create_task(
                    self.coordinator.send(peer, Sync(session.id, start_at).encode())
                )
                try:
                    if ntp:
                        await self._until(start_at)
                    else:
                        await asyncio.sleep(min(rtt / 2, MAX_WAIT))  # sync's way there
                    if sending.done():
                        sending.result()  # it failed already: the peer will not start
                    sock = holder.take()
                    assert sock is not None
                    link = await self._open(sock, planned, peer_key=peer.public_key, intent=intent)
                finally:
                    sending.cancel()  # delivered if we connected; pointless if not
                    await asyncio.gather(sending, return_exceptions=True)
            finally:
                self.coordinator.close(session)
        finally:
            holder.close()
            _reservation.reset(token)
        link.path = dataclasses.replace(link.path, method=self.name)
        return link

    # -- responder ----------------------------------------------------------------------

    async def _respond_safely(self, sender: bytes, offer: Offer) -> None:
        holder = _Reservation()
        token = _reservation.set(holder)
        try:
            await super()._respond_safely(sender, offer)
        finally:
            holder.close()  # refused, timed out, or failed before the open took it
            _reservation.reset(token)

    async def respond(self, session: Session, offer: Offer, planned: Plan) -> None:
        holder = _reservation.get()
        sock = holder.take() if holder is not None else None
        if sock is None:
            raise ConnectionError("no TCP socket was bound for the punch")
        try:
            async with asyncio.timeout(float(self.node.conf["punch_signal_timeout"])):
                sync = await session.sync
            if sync.start_at:
                await self._until(sync.start_at)
        except BaseException:
            sock.close()
            raise
        opening = self._opening(sock, planned)
        try:
            link = await first_link(
                opening,
                lambda won: handshake_on(
                    self.node,
                    won,
                    initiator=False,
                    expected_identity=session.peer_key,
                    intent=b"",
                    method="inbound",
                ),
            )
        except (LinkProtocolError, LinkAuthError) as exc:
            raise ConnectionError(f"link handshake failed: {exc}") from exc
        finally:
            await opening.aclose()
        self.node.adopt_link(link, inbound=True)

    # -- both ---------------------------------------------------------------------------

    async def _until(self, start_at: float) -> None:
        await asyncio.sleep(min(max(start_at - self._clock(), 0.0), MAX_WAIT))

    def _opening(self, sock: socket.socket, planned: Plan) -> SimultaneousOpen:
        self.starts.append(self._clock())
        opening = SimultaneousOpen(
            sock, planned.targets, max_sockets=int(self.node.conf["punch_tcp_sockets"])
        )
        try:
            opening.start()
        except BaseException:
            sock.close()
            raise
        return opening

    async def _open(
        self, sock: socket.socket, planned: Plan, *, peer_key: bytes, intent: bytes
    ) -> Link:
        """The requester's side: the first connection carries its handshake."""
        opening = self._opening(sock, planned)
        try:
            won = await opening.next()
        finally:
            await opening.aclose()
        log.debug("tcp_punch: %s -> %s connected", won.getsockname(), won.getpeername())
        return await handshake_on(
            self.node,
            won,
            initiator=True,
            expected_identity=peer_key,
            intent=intent,
            method=self.name,
        )
