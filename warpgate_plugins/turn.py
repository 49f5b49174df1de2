"""The ``turn`` traversal method: relay through a TURN server (RFC 8656) when nothing
direct works.

The connecting side allocates a relayed address, permits the peer's addresses on it and
sends the peer a *relay offer* through a signal transport.  The peer runs the ordinary
UDP link handshake, as initiator, from its listening socket to the relayed address:
that opens its NAT toward the relay (any NAT, symmetric included, lets the answers in),
and the connecting side's node answers through the relay and matches the link to its
attempt by the offer's token.  (When the peer's node address does not say which
address the relay will see it at, the offer asks it first: the peer asks the TURN
server and answers through signalling.)  The link is authenticated both ways and end-to-end
encrypted: the relay forwards only ciphertext.  Over TCP (RFC 6062) the peer connects
to the relayed address and the connecting side runs the TCP link handshake over a
ConnectionBind data connection.  Relayed UDP links then look for a direct path (see
:mod:`warpgate.turn.upgrade`).

Relaying costs a server and a detour, so the method ranks after direct, reverse and
punching; it ranks first when both sides are behind symmetric NATs (or block UDP), where
nothing direct can work and waiting for other methods only adds delay.

The allocation lives as long as the link: closing the link releases it, and losing it
(server gone, refresh refused) closes the link with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from warpgate.connect import auto_connect
from warpgate.errors import AddressError, WarpgateError
from warpgate.interfaces import Candidate, Transport
from warpgate.link.tcp import LinkConnection
from warpgate.link.udp import UdpLink
from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo
from warpgate.sansio.address import HintKind, NatType, NodeAddress
from warpgate.sansio.link_handshake import LinkAuthError, LinkHandshake
from warpgate.sansio.signal_messages import SignalMessageError
from warpgate.sansio.turn import TurnError
from warpgate.sansio.turn_signal import (
    RelayAnswer,
    RelayOffer,
    decode_relay_answer,
    decode_relay_offer,
    is_relay_answer,
    is_relay_offer,
)
from warpgate.stun.client import StunUnavailable
from warpgate.stun.node_binding import binding_from_listener, parse_server, resolve_servers
from warpgate.turn.addresses import (
    direct_candidates,
    listener_for,
    offer_refusal,
    permit_ips,
    relay_can_see,
)
from warpgate.turn.client import TurnClient
from warpgate.turn.endpoint import RelayEndpoint
from warpgate.turn.migrate import MigratingLink
from warpgate.turn.tcp_relay import open_data_connection
from warpgate.turn.upgrade import PathUpgrade

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

#: After direct (1-4), reverse (5) and hole punching: a relay is the last resort.
COST_RELAY = 50.0
#: Both sides symmetric (or UDP-blocked): no direct path can work, so relay at once.
COST_RELAY_FIRST = 0.5
_HOPELESS = frozenset({NatType.SYMMETRIC, NatType.UDP_BLOCKED})
#: When the peer of a TCP offer (re)tries to connect to the relayed address, relative to
#: the offer (seconds): dense first, so a refused early try costs little; bounded.
CONNECT_SCHEDULE = (0.0, 0.02, 0.04, 0.07, 0.12, 0.25, 0.5, 1.0, 2.0, 3.5)
MAX_PROBING = 16  # offers answered at once; more are dropped (a flood is not our job)
RELAY_MEMORY = 60.0  # seconds a peer remembers a relayed address it connected to


class TurnMethod:
    name = "turn"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.servers: list[tuple[str, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # How to release every allocation a link of ours still uses (node closing).
        self._releases: set[Callable[[str], Awaitable[None]]] = set()
        # Relayed addresses this node connected to (the peer of a TCP offer): links that
        # arrive from them are relayed links.
        self.probed: dict[tuple[str, int], float] = {}
        self.upgrades: weakref.WeakKeyDictionary[Link, PathUpgrade] = weakref.WeakKeyDictionary()
        self.last_timing: dict[str, float] = {}
        self._warm: TurnClient | None = None
        # Relay answers awaited, by token: (the peer's key, the future for its address).
        self._answers: dict[bytes, tuple[bytes, asyncio.Future[tuple[str, int]]]] = {}
        self._closing = False

    async def start(self) -> None:
        _methods[self.node] = self
        for transport in self.node.signal_transports.values():
            transport.add_handler(self._on_signal)
        parsed = []
        for text in self.node.conf["turn_servers"] or ():
            try:
                parsed.append(parse_server(str(text)))
            except ValueError as exc:
                log.warning("TURN server %r skipped: %s", text, exc)
        if parsed:
            self.servers, failures = await resolve_servers(
                parsed, timeout=min(float(self.node.conf["turn_timeout"]), 2.0)
            )
            for server, why in failures.items():
                log.warning("TURN server %s skipped: %s", server, why)
        if self.servers and self.node.conf["turn_relay_first"]:
            self._start_warming()

    # -- a warm allocation (relay-first) ------------------------------------------------

    def _new_client(self, server: tuple[str, int]) -> TurnClient:
        conf = self.node.conf
        return TurnClient(
            server,
            str(conf["turn_username"]),
            str(conf["turn_password"]),
            timeout=float(conf["turn_timeout"]),
            keepalive=float(conf["turn_keepalive"]),
        )

    def _start_warming(self) -> None:
        """Relay-first keeps one UDP allocation ready on the first server, so a connect
        does not wait for the allocation's two round trips; each use starts the next."""
        task = asyncio.create_task(self._warm_up(), name="turn warm allocation")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warm_up(self) -> None:
        client = self._new_client(self.servers[0])
        try:
            await client.allocate()
        except Exception as exc:  # the connect path allocates itself and reports errors
            log.info("TURN: no warm allocation on %s: %s", self.servers[0], exc)
            return
        if self._warm is not None or self._closing:
            await client.aclose("not needed")
            return
        self._warm = client

    def _take_warm(self, server: tuple[str, int]) -> TurnClient | None:
        warm, self._warm = self._warm, None
        if warm is None:
            return None
        if warm.closed:  # lost while waiting (server gone): warm a new one for next time
            self._start_warming()
            return None
        if warm.server != server:
            self._warm = warm
            return None
        self._start_warming()
        return warm

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._warm is not None:
            await self._warm.aclose("node closing")
            self._warm = None
        for release in list(self._releases):
            with contextlib.suppress(Exception):
                await release("node closing")

    # -- connecting side ----------------------------------------------------------------

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        node = self.node
        if not self.servers or not node.signal_transports:
            return []
        cost = COST_RELAY_FIRST if self._both_hopeless(peer) else COST_RELAY
        if transport == "udp" and node.conf["turn_relay_first"]:
            cost = COST_RELAY_FIRST  # data over the relay at once, upgraded later
        note = "relay" if transport == "udp" else "relay, RFC 6062"
        found = []
        for i, server in enumerate(self.servers):
            visible = relay_can_see(peer, server)
            # Over UDP the peer can tell us its address (one more signal message); over
            # TCP (RFC 6062) the permission must precede its connection, so it must be
            # known beforehand.
            if visible or (transport == "udp" and permit_ips(peer)):
                why = note if visible else f"{note}, peer's address asked"
                found.append(Candidate(self.name, transport, server, None, cost + i * 0.01, why, 4))
        return found

    def _both_hopeless(self, peer: NodeAddress) -> bool:
        ours = {r.nat_type for r in self.node.nat_reports.values()}
        theirs = {i.nat_type for i in peer.interfaces if i.family == 4}
        return bool(ours) and bool(theirs) and ours <= _HOPELESS and theirs <= _HOPELESS

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        assert candidate.remote is not None
        if candidate.transport == "tcp":
            return await self._attempt_tcp(peer, candidate.remote, intent)
        node, conf = self.node, self.node.conf
        token = secrets.token_bytes(16)
        endpoint: RelayEndpoint | None = None

        def on_data(source: tuple[str, int], data: bytes) -> None:
            if endpoint is not None:
                endpoint.feed(source, data)

        client = self._take_warm(candidate.remote) or self._new_client(candidate.remote)
        client.on_data = on_data
        inbound = node.expect_inbound(token)
        try:
            begin = time.perf_counter()
            await client.allocate()  # at once for a warm allocation
            allocated = time.perf_counter() - begin
            endpoint = RelayEndpoint(node, client)
            if relay_can_see(peer, candidate.remote):
                # The permission first, then the offer: the peer's first handshake
                # message then finds the relay open (a lost one costs 250 ms).
                await self._permit(client, peer)
                offer = RelayOffer(token, client.relayed, "udp", node.address())
                await self._offer(peer, offer.encode())
            else:
                await self._offer_and_learn(client, peer, token, candidate.remote)
            # The peer dials our relayed address; the node's UDP endpoint answers through
            # the relay and hands us the link by its intent (our token).
            link = await inbound
        except BaseException:
            if endpoint is not None:
                await endpoint.aclose("attempt failed")
            else:
                await client.aclose("attempt failed")
            raise
        finally:
            inbound.cancel()
        if link.remote_key != peer.public_key:
            await link.close("unexpected identity")
            await endpoint.aclose("attempt failed")
            raise LinkAuthError("the peer that answered the relay offer is not the one we asked")
        link.path = dataclasses.replace(link.path, method=self.name)
        # ChannelData from now on: 4 bytes of overhead per datagram instead of 36.
        node.spawn(_bind_quietly(client, link.path.remote), name="turn channel bind")
        total = time.perf_counter() - begin
        # For benchmarks and diagnostics: where the time of the last relayed connect went.
        self.last_timing = {"allocate": allocated, "total": total}
        log.info(
            "relayed link to %s via %s: allocation %.1f ms, total %.1f ms",
            peer.public_key.hex()[:16],
            client.relayed,
            allocated * 1000,
            total * 1000,
        )
        self._tie(link, endpoint.client, endpoint.aclose)
        if conf["turn_upgrade"]:
            self._start_upgrade(link, direct_candidates(node, peer))
        return link

    def _start_upgrade(self, link: Link, candidates: list[tuple[str, int]]) -> None:
        """Relay-first: look for a direct path in the background (see
        :mod:`warpgate.turn.upgrade`)."""
        if not isinstance(link, UdpLink) or not candidates:
            return
        listener = listener_for(self.node, candidates[0][0])
        if listener is None:
            return
        upgrade = PathUpgrade(self.node, link, listener, candidates)
        self.upgrades[link] = upgrade
        self.node.spawn(upgrade.run(), name="relay-first upgrade")

    async def _attempt_tcp(self, peer: NodeAddress, server: tuple[str, int], intent: bytes) -> Link:
        """RFC 6062: a TCP allocation; the peer connects to the relayed address, the
        server announces it (ConnectionAttempt), we bind a data connection to it and run
        the TCP link handshake over that connection."""
        node, conf = self.node, self.node.conf
        loop = asyncio.get_running_loop()
        attempt: asyncio.Future[tuple[int, tuple[str, int]]] = loop.create_future()

        def on_attempt(connection_id: int, source: tuple[str, int]) -> None:
            # The first permitted peer to connect is taken; the link handshake then
            # proves it is the one we dialled (anyone else fails it).
            if not attempt.done():
                attempt.set_result((connection_id, source))

        client = TurnClient(
            server,
            str(conf["turn_username"]),
            str(conf["turn_password"]),
            timeout=float(conf["turn_timeout"]),
            keepalive=float(conf["turn_keepalive"]),
            protocol="tcp",
            on_connection_attempt=on_attempt,
        )
        transport: asyncio.Transport | None = None
        try:
            begin = time.perf_counter()
            await client.allocate()
            allocated = time.perf_counter() - begin
            token = secrets.token_bytes(16)
            migratable = bool(conf["turn_upgrade"]) and "direct" in node.traversal_methods
            offer = RelayOffer(
                token, client.relayed, "tcp", node.address(), migratable=migratable
            ).encode()
            # Permission first: coturn's relayed TCP socket accepts any connection at the
            # TCP level and closes one from an unpermitted peer afterwards, so the peer
            # could not tell "too early" from "connected" and would not retry.
            await self._permit(client, peer)
            await self._offer(peer, offer)
            connection_id, _source = await attempt
            sock = await open_data_connection(
                client, connection_id, timeout=float(conf["turn_timeout"])
            )
            hs = LinkHandshake(
                node.link_identity,
                initiator=True,
                expected_identity=peer.public_key,
                # A migratable link is matched by the peer to its offer by the token.
                intent=token if migratable else intent,
                plaintext=not conf["link_encryption"],
            )
            transport, conn = await loop.create_connection(
                lambda: LinkConnection(hs, method=self.name, max_message=conf["max_message_size"]),
                sock=sock,
            )
            link = await conn.ready
        except BaseException:
            if transport is not None:
                transport.abort()
            await client.aclose("attempt failed")
            raise
        link.path = dataclasses.replace(link.path, relayed=True)
        self.last_timing = {"allocate": allocated, "total": time.perf_counter() - begin}
        self._tie(link, client, client.aclose)
        if not migratable:
            return link
        # This end dials the direct link, in the background, in every round (the
        # wrapper's loop: at once, and again after each fallback).
        return MigratingLink(node, link, dial=functools.partial(self._dial_direct, peer, token))

    async def _dial_direct(self, peer: NodeAddress, token: bytes, round: int) -> Link:
        """The direct link of ``round`` of a relay-first stream link (raises when there
        is none in time)."""
        direct, _ = await auto_connect(
            self.node,
            peer,
            methods=["direct"],
            transport="tcp",
            intent=direct_intent(token, round),
            timeout=float(self.node.conf["connect_timeout"]),
        )
        return direct

    async def _permit(self, client: TurnClient, peer: NodeAddress) -> None:
        ips = permit_ips(peer)
        try:
            await client.create_permission((ip, 0) for ip in ips)
        except TurnError as exc:
            if exc.code != 403 or len(ips) == 1:
                raise
            # The server refuses one of the addresses (a range it forbids): permit
            # the others one by one.
            for ip in ips:
                with contextlib.suppress(TurnError):
                    await client.create_permission([(ip, 0)])
            if not client._permissions:
                raise

    async def _offer_and_learn(
        self, client: TurnClient, peer: NodeAddress, token: bytes, server: tuple[str, int]
    ) -> None:
        """The peer's node address does not say which address the relay will see it at:
        ask it (it asks the TURN server), then permit what it answers."""
        fut: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._answers[token] = (peer.public_key, fut)
        try:
            offer = RelayOffer(token, client.relayed, "udp", self.node.address(), server, True)
            await self._offer(peer, offer.encode())
            async with asyncio.timeout(float(self.node.conf["turn_timeout"])):
                reflexive = await fut
        except TimeoutError:
            raise TurnError("the peer did not tell its address for the relay permission") from None
        finally:
            self._answers.pop(token, None)
        await client.create_permission([reflexive])

    async def _offer(self, peer: NodeAddress, offer: bytes) -> None:
        await self._signal(peer.public_key, offer, peer)

    async def _signal(self, key: bytes, payload: bytes, peer: NodeAddress | None) -> None:
        hints = [h.value for h in peer.hints if h.kind == HintKind.SIGNAL] if peer else []
        errors = []
        for transport in self.node.signal_transports.values():
            try:
                await transport.send(key, payload, hints=hints)
                return
            except (ConnectionError, WarpgateError, OSError) as exc:
                errors.append(f"{transport.name}: {exc}")
        raise ConnectionError("no signal transport reached the peer: " + "; ".join(errors))

    def _tie(
        self, link: Link, client: TurnClient, release_relay: Callable[[str], Awaitable[None]]
    ) -> None:
        """The allocation lives as long as the link, and the link no longer than it."""

        def relay_lost(reason: str) -> None:
            if link.closed:
                return
            upgrade = self.upgrades.get(link)
            if upgrade is not None and link.path.kind == "direct":
                # The link no longer needs the relay; it closes only if its direct path
                # dies too (the upgrade sees the relay is gone).
                log.info("relay of %s lost (%s); the link stays on its direct path", link, reason)
                upgrade.relay_lost = reason
                return
            self.node.spawn(link.close(f"relay lost: {reason}"), name="close relayed link")

        client.on_closed = relay_lost

        async def release() -> None:
            await link._closed.wait()
            try:
                await release_relay("link closed")
            finally:
                self._releases.discard(release_relay)

        self._releases.add(release_relay)
        self.node.spawn(release(), name="release relay")

    # -- peer side ------------------------------------------------------------------

    def _on_signal(self, sender: bytes, payload: bytes) -> None:
        if is_relay_answer(payload):
            self._on_answer(sender, payload)
            return
        if not is_relay_offer(payload):
            return
        try:
            offer = decode_relay_offer(payload)
        except SignalMessageError as exc:
            log.info("ignored a malformed relay offer: %s", exc)
            return
        if len(self._tasks) >= MAX_PROBING:
            log.warning("ignored a relay offer: %d already being answered", len(self._tasks))
            return
        refusal = offer_refusal(
            offer, own_servers=self.servers, we_are_public=self._we_are_public()
        )
        if refusal:
            log.warning("ignored a relay offer from %s: %s", sender.hex()[:16], refusal)
            return
        if offer.transport == "udp":
            task = asyncio.create_task(self._dial_relay(offer, sender), name="relay answer")
        else:
            task = asyncio.create_task(self._connect_to_relay(offer), name="relay answer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _we_are_public(self) -> bool:
        """Whether this node has an address on the public internet (its own or its
        NAT's): a peer may then not aim us at private addresses."""
        own = NodeAddress.decode(self.node.address())
        return any(
            ip is not None and ip.is_global
            for iface in own.interfaces
            for ip in (iface.nic_ip, iface.ext_ip)
        )

    def _on_answer(self, sender: bytes, payload: bytes) -> None:
        try:
            answer = decode_relay_answer(payload)
        except SignalMessageError as exc:
            log.info("ignored a malformed relay answer: %s", exc)
            return
        waiting = self._answers.get(answer.token)
        if waiting is None or waiting[0] != sender:
            log.info("ignored a relay answer nobody asked for")
            return
        if not waiting[1].done():
            waiting[1].set_result(answer.reflexive)

    async def _answer(self, offer: RelayOffer, sender: bytes, listener: Listener) -> None:
        """Tell the offerer which address the TURN server sees us at (from the listening
        socket the handshake will come from), so it can permit it."""
        assert offer.server is not None
        result = await binding_from_listener(
            self.node, listener, offer.server, timeout=float(self.node.conf["turn_timeout"])
        )
        offerer = None
        with contextlib.suppress(AddressError):
            offerer = NodeAddress.decode(offer.address) if offer.address else None
        reply = RelayAnswer(offer.token, result.mapped).encode()
        await self._signal(
            sender, reply, offerer if offerer and offerer.public_key == sender else None
        )

    async def _dial_relay(self, offer: RelayOffer, sender: bytes) -> None:
        """UDP offer: run the link handshake, as initiator, from our listening socket to
        the relayed address (which also opens our NAT toward the relay, whatever kind it
        is).  The offerer's node answers through the relay and matches the link to its
        attempt by the intent, our copy of its token."""
        listener = listener_for(self.node, offer.relayed[0])
        if listener is None:
            log.info("relay offer for %s: no listening UDP socket of its family", offer.relayed)
            return
        node = self.node
        if offer.answer_wanted:
            try:
                await self._answer(offer, sender, listener)
            except (StunUnavailable, ConnectionError, WarpgateError, OSError) as exc:
                log.info("relay offer: could not tell our address: %s", exc)
                return
        try:
            async with asyncio.timeout(float(node.conf["handshake_timeout"])):
                link = await node.udp.dial(
                    listener,
                    offer.relayed,
                    expected_identity=sender,
                    intent=offer.token,
                    method=self.name,
                )
        except (TimeoutError, OSError, WarpgateError) as exc:
            log.info("relay offer: no link through %s: %s", offer.relayed, exc)
            return
        link.path = dataclasses.replace(link.path, relayed=True)
        # For this side the link is an inbound one: the peer asked for it.
        node.adopt_link(link, inbound=True)
        if node.conf["turn_upgrade"] and offer.address:
            try:
                offerer = NodeAddress.decode(offer.address)
            except AddressError as exc:
                log.info("relay offer carried a bad node address (no upgrade): %s", exc)
                return
            if offerer.public_key == sender:
                self._start_upgrade(link, direct_candidates(node, offerer))

    async def _connect_to_relay(self, offer: RelayOffer) -> None:
        """RFC 6062 offer: connect to the relayed address; the node's TCP responder runs
        the link handshake the offering side starts over its data connection.  A
        refused connection (our IP not permitted yet) is retried on a schedule."""
        self._remember(offer.relayed)
        node = self.node
        loop = asyncio.get_running_loop()
        # A migratable link is taken here, wrapped, and offered to accept() as the wrapper;
        # the direct link that comes later (by its own intent) is taken for the wrapper.
        relayed = node.expect_inbound(offer.token) if offer.migratable else None
        direct = node.expect_inbound(direct_intent(offer.token)) if offer.migratable else None
        begin = time.monotonic()
        last: Exception | None = None
        try:
            for at in CONNECT_SCHEDULE:
                delay = at - (time.monotonic() - begin)
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(float(node.conf["turn_timeout"])):
                        await loop.create_connection(node.tcp_protocol_factory(), *offer.relayed)
                    break
                except (OSError, TimeoutError) as exc:
                    last = exc
            else:
                log.info("relay offer: could not connect to %s: %s", offer.relayed, last)
                return
            if relayed is None or direct is None:
                return
            async with asyncio.timeout(float(node.conf["handshake_timeout"])):
                inner = await relayed
            token = offer.token
            # The wait for the direct link of each round is the wrapper's, not this
            # offer's (which counts against MAX_PROBING).
            wrapper = MigratingLink(
                node,
                inner,
                expect=lambda n: node.expect_inbound(direct_intent(token, n)),
                first_direct=direct,
            )
            node.adopt_link(wrapper, inbound=True)
            direct = None
        except TimeoutError:
            log.info("relay offer %s: no relayed link in time", offer.relayed)
        finally:
            for fut in (relayed, direct):
                if fut is not None:
                    fut.cancel()

    def _remember(self, relayed: tuple[str, int]) -> None:
        now = time.monotonic()
        self.probed = {a: t for a, t in self.probed.items() if now - t < RELAY_MEMORY}
        self.probed[relayed] = now


def direct_intent(token: bytes, round: int = 0) -> bytes:
    """The intent of the direct link that a migratable relayed link moves to in
    ``round`` (round 0 as before rounds existed), so a link of another round is told
    apart and closed."""
    return b"direct:" + token + (b"#%d" % round if round else b"")


async def _bind_quietly(client: TurnClient, peer: tuple[str, int]) -> None:
    try:
        await client.bind_channel(peer)
    except (TurnError, ConnectionError) as exc:  # Send indications keep working
        log.info("TURN channel bind to %s failed: %s", peer, exc)


_methods: weakref.WeakKeyDictionary[Node, TurnMethod] = weakref.WeakKeyDictionary()


@hookimpl
def warpgate_link_established(node: Node, link: Any) -> None:
    """On the peer side, a TCP link that arrives from a relayed address we connected to is a
    relayed link: say so in its path."""
    method = _methods.get(node)
    if method is None or link.path.relayed:
        return
    if link.path.remote in method.probed:
        link.path = dataclasses.replace(link.path, relayed=True, method="turn")


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "turn_servers": [],
        "turn_username": "",
        "turn_password": "",
        "turn_timeout": 5.0,
        "turn_keepalive": 10.0,
        "turn_upgrade": True,
        "turn_relay_first": False,
    }


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="turn",
            factory=TurnMethod,
            cost=90,
            transports=("udp", "tcp"),
            description="relay through a TURN server (RFC 8656), end-to-end encrypted",
        )
    ]
