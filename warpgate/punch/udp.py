"""UDP hole punching: probes from the socket whose mapping STUN measured, confirmation,
birthday probing for a symmetric NAT, and keepalives on the punched path.

:class:`UdpPuncher` owns the probe state of one node.  Its :meth:`tap` sits on the
node's listening UDP sockets (``node.datagram_taps``) and on the extra birthday
sockets: a probe with a known session is answered at once to its source address, and
the first probe or answer from the peer *confirms* a path (socket, remote address).
The requester then runs the ordinary UDP link handshake on that path; the peer's side
gets the link as an inbound one, like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warpgate.punch.sockets import PunchSocket
from warpgate.sansio.punch_plan import RANDOM_PORT_RANGE
from warpgate.sansio.punch_probe import (
    KEEPALIVE,
    PROBE,
    PROBE_ACK,
    Probe,
    ProbeError,
    decode_probe,
    is_probe,
)

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]

# Probe pacing: fast at first (the peer's first probes may have been dropped by our NAT
# before our own opened it), then slower; every loop is also bounded by the caller.
FAST_INTERVAL = 0.02
FAST_PROBES = 10
SLOW_INTERVAL = 0.1
MAX_PROBE_ROUNDS = 400
# Birthday probing.
HARD_RESEND = 0.25  # each hard-side socket re-sends this often
EASY_BATCH = 32  # random probes sent per tick by the easy side
EASY_TICK = 0.005


@dataclass
class ProbeState:
    session: bytes
    confirmed: asyncio.Future[tuple[Listener, Addr]]
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    probes_sent: int = 0


class UdpPuncher:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.states: dict[bytes, ProbeState] = {}
        self.ignored = 0  # probes with an unknown session or malformed
        self._keepalives: set[asyncio.Task[None]] = set()
        self._sockets: set[PunchSocket] = set()

    # -- receiving --------------------------------------------------------------------

    def tap(self, data: bytes, addr: Addr, listener: Listener) -> bool:
        """For ``node.datagram_taps``: take every probe datagram."""
        if not is_probe(data):
            return False
        log.debug("probe datagram from %s on %s", addr, listener.local)
        try:
            probe = decode_probe(data)
        except ProbeError as exc:
            self.ignored += 1
            log.debug("dropped a malformed probe from %s: %s", addr, exc)
            return True
        if probe.kind == KEEPALIVE:
            return True  # it did its job on the way in (our NAT saw traffic)
        state = self.states.get(probe.session)
        if state is None:
            self.ignored += 1
            log.debug("dropped a probe from %s for an unknown session", addr)
            return True
        if probe.kind == PROBE:
            _send(listener, Probe(PROBE_ACK, probe.session, probe.seq).encode(), addr)
        elif probe.kind == PROBE_ACK:
            state.acked.set()
        if not state.confirmed.done():
            log.debug("punch path confirmed: %s -> %s", listener.local, addr)
            state.confirmed.set_result((listener, addr))
        return True

    # -- sessions ---------------------------------------------------------------------

    def open(self, session: bytes) -> ProbeState:
        state = ProbeState(session, asyncio.get_running_loop().create_future())
        self.states[session] = state
        return state

    def close(self, state: ProbeState) -> None:
        if self.states.get(state.session) is state:
            del self.states[state.session]
        if not state.confirmed.done():
            state.confirmed.cancel()

    # -- sending ----------------------------------------------------------------------

    def send_probes(self, listener: Listener, session: bytes, targets: Sequence[Addr]) -> None:
        """One probe to each target, now (no state needed)."""
        packet = Probe(PROBE, session, 0).encode()
        for target in targets:
            _send(listener, packet, target)

    async def probe(
        self, state: ProbeState, listener: Listener, targets: Sequence[Addr]
    ) -> tuple[Listener, Addr]:
        """Probe ``targets`` from ``listener`` until a path is confirmed."""
        log.debug("probing %s from %s", targets, listener.local)
        for rounds in range(MAX_PROBE_ROUNDS):
            for target in targets:
                _send(
                    listener,
                    Probe(PROBE, state.session, state.probes_sent & 0xFFFF).encode(),
                    target,
                )
                state.probes_sent += 1
            interval = FAST_INTERVAL if rounds < FAST_PROBES else SLOW_INTERVAL
            done, _ = await asyncio.wait({state.confirmed}, timeout=interval)
            if done:
                return state.confirmed.result()
        raise TimeoutError(f"no probe answered after {MAX_PROBE_ROUNDS} rounds")

    async def birthday_hard(
        self,
        state: ProbeState,
        base: Listener,
        targets: Sequence[Addr],
        sockets: int,
        *,
        keep_open: bool = False,
    ) -> tuple[Listener, Addr, PunchSocket | None, list[PunchSocket]]:
        """Open ``sockets`` extra sockets (each its own random mapping on a symmetric
        NAT), all probing the peer, until one of them hears from it.  The winner is kept
        (and owned here until its link closes); the others are closed, unless
        ``keep_open``: then they are returned, adopted, for the caller to close.

        The side that does not dial (the responder) keeps them: the dialling side
        confirms the first hard-side mapping *it* hears from, which need not be the one
        this side heard first (another random probe may hit a second mapping within a
        round trip), and its handshake must find that socket open."""
        opened: list[PunchSocket] = []
        winner: PunchSocket | None = None
        spare: list[PunchSocket] = []
        try:
            for _ in range(sockets):
                sock = PunchSocket(self.node, base, self.tap)
                await sock.open()
                opened.append(sock)
            by_listener = {id(s.listener): s for s in opened}
            for _rounds in range(MAX_PROBE_ROUNDS):
                packet = Probe(PROBE, state.session, state.probes_sent & 0xFFFF).encode()
                for sock in opened:
                    for target in targets:
                        sock.sendto(packet, target)
                state.probes_sent += 1
                done, _ = await asyncio.wait({state.confirmed}, timeout=HARD_RESEND)
                if done:
                    listener, remote = state.confirmed.result()
                    winner = by_listener.get(id(listener))
                    if winner is not None:  # else: the listening socket itself got through
                        winner.adopted = True
                        self._sockets.add(winner)
                    if keep_open:
                        spare = [sock for sock in opened if sock is not winner]
                        for sock in spare:
                            sock.adopted = True
                            self._sockets.add(sock)  # closed with the puncher at the latest
                    return listener, remote, winner, spare
            raise TimeoutError("birthday probing found no path")
        finally:
            for sock in opened:
                if sock is not winner and sock not in spare:
                    await sock.close()

    async def release(self, sockets: Sequence[PunchSocket]) -> None:
        """Close sockets :meth:`birthday_hard` kept open."""
        for sock in sockets:
            self._sockets.discard(sock)
            await sock.close()

    async def birthday_easy(
        self,
        state: ProbeState,
        listener: Listener,
        peer_ip: str,
        targets: Sequence[Addr],
        max_probes: int,
    ) -> tuple[Listener, Addr]:
        """Probe random ports of ``peer_ip`` (each port once) from ``listener`` until a
        path is confirmed or ``max_probes`` went out."""
        low, high = RANDOM_PORT_RANGE
        ports = random.sample(range(low, high + 1), min(max_probes, high - low + 1))
        packet = Probe(PROBE, state.session, 0).encode()
        for target in targets:
            _send(listener, packet, target)
        for start in range(0, len(ports), EASY_BATCH):
            for port in ports[start : start + EASY_BATCH]:
                _send(listener, packet, (peer_ip, port))
            state.probes_sent += EASY_BATCH
            done, _ = await asyncio.wait({state.confirmed}, timeout=EASY_TICK)
            if done:
                return state.confirmed.result()
        async with asyncio.timeout(2.0):  # late answers to the last probes
            return await asyncio.shield(state.confirmed)

    # -- after the punch --------------------------------------------------------------

    def keep_alive(
        self,
        link: Link,
        listener: Listener,
        remote: Addr,
        session: bytes,
        interval: float,
        owned: PunchSocket | None = None,
    ) -> None:
        """Send a keepalive every ``interval`` seconds while ``link`` is open, so both
        NATs keep the mapping; then close ``owned`` (a birthday socket)."""
        task = asyncio.create_task(
            self._keep_alive(link, listener, remote, session, interval, owned),
            name=f"punch keepalive {remote}",
        )
        self._keepalives.add(task)
        task.add_done_callback(self._keepalives.discard)

    async def _keep_alive(
        self,
        link: Link,
        listener: Listener,
        remote: Addr,
        session: bytes,
        interval: float,
        owned: PunchSocket | None,
    ) -> None:
        packet = Probe(KEEPALIVE, session, 0).encode()
        step = min(interval, 1.0)  # notice a closed link within a second
        last = time.monotonic()
        try:
            while not link.closed and not self.node.closed:
                await asyncio.sleep(step)
                if time.monotonic() - last >= interval:
                    _send(listener, packet, remote)
                    last = time.monotonic()
        finally:
            if owned is not None:
                self._sockets.discard(owned)
                await owned.close()

    async def aclose(self) -> None:
        for task in list(self._keepalives):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._keepalives, return_exceptions=True)
        for sock in list(self._sockets):
            await sock.close()
        self._sockets.clear()
        for state in list(self.states.values()):
            self.close(state)


def _send(listener: Listener, data: bytes, remote: Addr) -> None:
    if listener.udp is not None and not listener.udp.is_closing():
        listener.udp.sendto(data, remote)
