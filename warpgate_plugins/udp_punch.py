"""The ``udp_punch`` traversal method: UDP hole punching between two NATed peers.

The requester sends an *offer* with its mapped endpoints (from the NAT classification in
its address) through a signal transport; the peer *answers* with its own and both start
probing each other's predicted endpoints from the listening socket STUN measured.  The
first probe (or acknowledgement) that arrives confirms a path; the requester runs the
UDP link handshake on it (the peer gets an inbound link) and both sides send keepalives
so the NATs keep the mapping.  Symmetric ↔ port-restricted pairs use birthday probing;
pairs that cannot be punched give no candidate at all.  See ``docs/punching.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo
from warpgate.punch.method import CONF_DEFAULTS, PunchMethod
from warpgate.punch.session import Session
from warpgate.punch.sockets import PunchSocket, ipv4_listener
from warpgate.punch.udp import ProbeState, UdpPuncher
from warpgate.sansio.link_handshake import LinkAuthError
from warpgate.sansio.punch_messages import Offer, PunchTransport, Schedule
from warpgate.sansio.punch_plan import Plan, Strategy

if TYPE_CHECKING:
    from warpgate.interfaces import Candidate
    from warpgate.link.link import Link
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node
    from warpgate.sansio.address import NodeAddress

log = logging.getLogger(__name__)

Addr = tuple[str, int]
LINK_WAIT_POLL = 0.05


class UdpPunchMethod(PunchMethod):
    name = "udp_punch"
    transport = PunchTransport.UDP
    # Probes repeat, so probing before the requester has the answer costs nothing, and
    # the birthday sockets or random probes are under way a signal round trip earlier.
    respond_while_answering = True

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.puncher = UdpPuncher(node)

    async def start(self) -> None:
        await super().start()
        self.node.datagram_taps.append(self.puncher.tap)

    async def aclose(self) -> None:
        await super().aclose()
        if self.puncher.tap in self.node.datagram_taps:
            self.node.datagram_taps.remove(self.puncher.tap)
        await self.puncher.aclose()

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        # The probe state exists before the offer leaves: the peer starts probing as its
        # answer leaves, and a probe that arrives before the answer is answered and
        # confirms the path at once instead of being dropped.
        states: list[ProbeState] = []

        def on_open(session: Session) -> None:
            states.append(self.puncher.open(session.id))
            self._prime(peer, session)

        try:
            session, answer, planned, _rtt = await self.exchange(
                peer, Schedule.ASAP, on_open=on_open
            )
        except BaseException:
            for early in states:
                self.puncher.close(early)
            raise
        state = states[0]
        owned: PunchSocket | None = None
        try:
            listener, remote, owned, _ = await self._punch(state, answer, planned)
            link = await self.node.udp.dial(
                listener,
                remote,
                expected_identity=peer.public_key,
                intent=intent,
                method=self.name,
            )
        except BaseException:
            if owned is not None:
                await owned.close()
            raise
        finally:
            self.puncher.close(state)
            self.coordinator.close(session)
        if link.remote_key != peer.public_key:  # the handshake checks it; belt and braces
            await link.close("unexpected identity")
            raise LinkAuthError("the punched path reached another node")
        link.path = dataclasses.replace(link.path, method=self.name)
        self.puncher.keep_alive(link, listener, remote, session.id, self._keepalive_interval, owned)
        return link

    def _prime(self, peer: NodeAddress, session: Session) -> None:
        """One probe to the peer's endpoint from its address as the offer leaves: it
        opens our own NAT's filter towards the peer, so the peer's first probes (sent as
        its answer leaves) get in and confirm the path a round trip earlier.  The peer's
        NAT drops it; a symmetric NAT's port towards the peer is unknown yet."""
        planned = self.plan_for(peer)
        if planned.strategy not in (Strategy.PROBE, Strategy.BIRTHDAY_EASY):
            return
        own = self.coordinator.own_endpoints()
        try:
            base = ipv4_listener(self.node, own[0].local_port if own else None)
        except ConnectionError:
            return
        self.puncher.send_probes(base, session.id, planned.targets)

    async def respond(self, session: Session, offer: Offer, planned: Plan) -> None:
        state = self.puncher.open(session.id)
        owned: PunchSocket | None = None
        spare: list[PunchSocket] = []
        try:
            listener, remote, owned, spare = await self._punch(
                state, offer, planned, keep_open=True
            )
            # The requester dials on the path *it* confirmed; wait for that inbound link,
            # to keep its mapping alive (and its birthday socket open) while it lives.
            # Birthday probing may confirm different mappings of the symmetric side on
            # the two sides: the link may come on any kept socket (hard side) or from
            # any port of the peer's address (easy side).
            sockets = [s for s in (owned, *spare) if s is not None]
            locals_ = {listener.local, *(s.listener.local for s in sockets)}
            any_port = planned.strategy is Strategy.BIRTHDAY_EASY
            link = await self._inbound_link(session.peer_key, locals_, remote, any_port=any_port)
            chosen = next((s for s in sockets if s.listener.local == link.path.local), None)
            await self.puncher.release([s for s in sockets if s is not chosen])
            owned, spare = chosen, []
            listener = chosen.listener if chosen is not None else listener
            remote = link.path.remote
        except BaseException:
            await self.puncher.release([s for s in (owned, *spare) if s is not None])
            raise
        finally:
            self.puncher.close(state)
        self.puncher.keep_alive(link, listener, remote, session.id, self._keepalive_interval, owned)

    async def _punch(
        self, state: ProbeState, peer_offer: Offer, planned: Plan, *, keep_open: bool = False
    ) -> tuple[Listener, Addr, PunchSocket | None, list[PunchSocket]]:
        own = self.coordinator.own_endpoints()
        base = ipv4_listener(self.node, own[0].local_port if own else None)
        conf = self.node.conf
        if planned.strategy is Strategy.BIRTHDAY_HARD:
            return await self.puncher.birthday_hard(
                state,
                base,
                planned.targets,
                int(conf["punch_birthday_sockets"]),
                keep_open=keep_open,
            )
        if planned.strategy is Strategy.BIRTHDAY_EASY:
            listener, remote = await self.puncher.birthday_easy(
                state, base, planned.peer_ip, planned.targets, int(conf["punch_birthday_probes"])
            )
            return listener, remote, None, []
        listener, remote = await self.puncher.probe(state, base, planned.targets)
        return listener, remote, None, []

    async def _inbound_link(
        self, peer_key: bytes, locals_: set[Addr], remote: Addr, *, any_port: bool
    ) -> Link:
        while True:  # bounded by the responder's punch_timeout
            for link in list(self.node.udp.links.values()):
                if (
                    link.remote_key == peer_key
                    and link.path.local in locals_
                    and (
                        link.path.remote == remote
                        if not any_port
                        else link.path.remote is not None and link.path.remote[0] == remote[0]
                    )
                    and not link.closed
                ):
                    return link
            await asyncio.sleep(LINK_WAIT_POLL)

    @property
    def _keepalive_interval(self) -> float:
        return float(self.node.conf["punch_keepalive"])


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return CONF_DEFAULTS


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="udp_punch",
            factory=UdpPunchMethod,
            cost=30,
            transports=("udp",),
            kind="punch",
            description="UDP hole punching through both NATs (birthday probing for "
            "symmetric ones), coordinated through signalling",
        )
    ]
