"""The ``tcp_punch`` traversal method: TCP simultaneous open between two NATed peers.

Offer and answer carry both sides' mapped endpoints, as for ``udp_punch``; then the
requester sends *sync* and both open connections to each other's predicted endpoints
from their listening port at the same moment.  ``punch_tcp_schedule`` picks how that
moment is agreed: ``"rtt"`` (DCUtR style: the requester measured the signal round trip
from offer to answer and starts half of it after sending sync; the peer starts when
sync arrives) or ``"ntp"`` (sync carries a start time on the NTP clock).  The first
connection to complete carries the link handshake, requester as initiator; the
others are closed.  See ``docs/punching.md`` for the measured difference.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo
from warpgate.punch.method import CONF_DEFAULTS, PunchMethod
from warpgate.punch.session import Session
from warpgate.punch.sockets import ipv4_listener
from warpgate.punch.tcp import allow_port_sharing, handshake_on, prime, simultaneous_open
from warpgate.sansio.punch_messages import Offer, PunchTransport, Schedule, Sync
from warpgate.sansio.punch_plan import Plan

if TYPE_CHECKING:
    from warpgate.interfaces import Candidate
    from warpgate.link.link import Link
    from warpgate.sansio.address import NodeAddress

log = logging.getLogger(__name__)

MIN_LEAD = 0.02  # NTP schedule: at least this much ahead of now when sync is sent
MAX_WAIT = 5.0  # never wait longer than this for a scheduled start
PRIME_INTERVAL = 0.1
PRIME_ROUNDS = 100


class TcpPunchMethod(PunchMethod):
    name = "tcp_punch"
    transport = PunchTransport.TCP

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        # Wall-clock (node clock) start times of the simultaneous opens, newest last:
        # the schedule benchmark compares both sides'.
        self.starts: list[float] = []

    async def start(self) -> None:
        await super().start()
        for listener in self.node.listeners:
            allow_port_sharing(listener)

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

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        session, answer, planned, rtt = await self.exchange(peer, self._schedule())
        try:
            if answer.schedule == Schedule.NTP:
                start_at = self._clock() + max(rtt, MIN_LEAD)
                await self.coordinator.send(peer, Sync(session.id, start_at).encode())
                await self._until(start_at)
            else:
                await self.coordinator.send(peer, Sync(session.id, 0.0).encode())
                await asyncio.sleep(rtt / 2)  # the time sync takes to arrive
            link = await self._open(
                planned, initiator=True, peer_key=peer.public_key, intent=intent
            )
        finally:
            self.coordinator.close(session)
        link.path = dataclasses.replace(link.path, method=self.name)
        return link

    async def respond(self, session: Session, offer: Offer, planned: Plan) -> None:
        async with asyncio.timeout(float(self.node.conf["punch_signal_timeout"])):
            sync = await session.sync
        if sync.start_at:
            await self._until(sync.start_at)
        own = self.coordinator.own_endpoints()
        listener = ipv4_listener(self.node, own[0].local_port if own else None)
        self.starts.append(self._clock())
        ttl = int(self.node.conf["punch_tcp_prime_ttl"])
        # Re-prime until the requester's connection has arrived (its early SYNs may
        # have met a closed NAT and been reset; it retries).  Bounded by punch_timeout.
        for _ in range(PRIME_ROUNDS):
            if any(link.remote_key == session.peer_key for link in self.node.links):
                return
            await prime(listener.local, planned.targets, ttl)
            await asyncio.sleep(PRIME_INTERVAL)

    async def _until(self, start_at: float) -> None:
        await asyncio.sleep(min(max(start_at - self._clock(), 0.0), MAX_WAIT))

    async def _open(
        self, planned: Plan, *, initiator: bool, peer_key: bytes, intent: bytes
    ) -> Link:
        own = self.coordinator.own_endpoints()
        listener = ipv4_listener(self.node, own[0].local_port if own else None)
        self.starts.append(self._clock())
        sock = await simultaneous_open(
            listener.local, planned.targets, max_sockets=int(self.node.conf["punch_tcp_sockets"])
        )
        return await handshake_on(
            self.node,
            sock,
            initiator=initiator,
            expected_identity=peer_key,
            intent=intent,
            method=self.name if initiator else "inbound",
        )


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return CONF_DEFAULTS


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="tcp_punch",
            factory=TcpPunchMethod,
            cost=30,
            transports=("tcp",),
            kind="punch",
            description="TCP simultaneous open through both NATs, coordinated through signalling",
        )
    ]
