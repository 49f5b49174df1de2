"""Relay-first UDP links: move to a direct path once one is proven, back when it dies.

A relayed UDP link carries data from its first message.  Meanwhile each end probes the
peer's direct addresses (external mapping, public or same-LAN interface address) from
its listening socket with **PING records of the link itself** -- sealed with the link's
keys, so only the peer can answer and nobody can forge a proof.  The peer's link
answers every PING with a PONG over whatever path it uses, so a PONG for a PING that
went to address X proves that *our* datagrams reach the peer at X.  Each end switches
its own sending to the first proven address; each direction is proven on its own,
which is all a datagram link needs (the receive side takes authentic records from any
path: the UDP link demultiplexes by index, and its replay window drops duplicates).

Once direct, the end keeps pinging the direct address every ``keepalive`` seconds.
After ``suspect_after`` seconds without a PONG it sends every datagram on both paths
(the peer keeps one copy), and after ``dead_after`` seconds it goes back to the relay,
which stayed allocated and refreshed all along.  ``link.path`` always says which path
is in use, and every change fires the ``warpgate_link_path_changed`` observer hook.

When the direct path is first suspected, the datagrams sent on it since one keepalive
before the last PONG are sent again over the relay (each end keeps a bounded record of
them): what the dying path swallowed arrives anyway, and the receiver's replay window
drops the copies that had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from warpgate.link.link import LinkClosed, LinkPath
from warpgate.link.udp import DATA, UdpLink
from warpgate.sansio.link_records import PING

if TYPE_CHECKING:
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]
_U32 = struct.Struct(">I")


@dataclasses.dataclass
class UpgradeSettings:
    probe_interval: float = 0.1  # between rounds of probes while looking for a path
    probe_for: float = 10.0  # give up looking after this long (the relay stays)
    keepalive: float = 0.5  # PING on the direct path this often
    suspect_after: float = 1.0  # no PONG this long: send on both paths too
    dead_after: float = 5.0  # no PONG this long: back to the relay (<= 6 s detection)
    rounds: int = 3  # upgrade attempts per link (direct, dead, direct again, ...)
    # While direct, a PING over the relay this often keeps our NAT's mapping toward the
    # relay (30 s for UDP on many NATs) and so the relayed path ready for a fallback.
    relay_keepalive: float = 10.0
    max_candidates: int = 6  # addresses probed; they come from the peer, so bounded
    # Datagrams sent on the direct path kept for a replay over the relay when the path
    # is suspected (the receiver's replay window, 2048 nonces, drops the copies it has).
    replay_datagrams: int = 1024
    replay_bytes: int = 1 << 20


class PathUpgrade:
    """Drives one relayed UDP link: probe, switch to direct, watch, fall back."""

    def __init__(
        self,
        node: Node,
        link: UdpLink,
        listener: Listener,
        candidates: list[Addr],
        settings: UpgradeSettings | None = None,
    ) -> None:
        self.node = node
        self.link = link
        self.listener = listener
        self.candidates = candidates[: (settings or UpgradeSettings()).max_candidates]
        self.settings = settings or UpgradeSettings()
        self.relay_send: Callable[[bytes], None] = link._send_datagram
        self.relay_path = link.path
        self.direct: Addr | None = None
        self.last_pong = 0.0
        self.switches = 0
        #: Set (to the reason) when the relay went away while the link was direct.
        self.relay_lost = ""
        #: Datagrams replayed over the relay when the direct path fell silent.
        self.replayed = 0
        self._recent: deque[tuple[float, bytes]] = deque()
        self._recent_bytes = 0
        self._header = bytes([DATA]) + _U32.pack(link.remote_index)

    # -- sending through the listener ----------------------------------------------------

    def _send_direct(self, data: bytes, remote: Addr) -> None:
        udp = self.listener.udp
        if udp is not None and not udp.is_closing():
            udp.sendto(data, remote)

    def _ping(self, remote: Addr) -> asyncio.Future[float]:
        """Send one PING record of the link straight to ``remote``; the future resolves
        when the peer's PONG comes back (over any path)."""
        token = b"wgpath" + secrets.token_bytes(10)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.link._pongs[token] = fut
        fut.add_done_callback(lambda _f: self.link._pongs.pop(token, None))
        self._send_direct(self._header + self.link._codec.seal_control(PING, token), remote)
        return fut

    def _relay_ping(self) -> bytes:
        """A PING for the relay path; its PONG is not awaited (the point is the packet)."""
        token = b"wgkeep" + secrets.token_bytes(10)
        return self._header + self.link._codec.seal_control(PING, token)

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            for _ in range(self.settings.rounds):
                found = await self._probe()
                if found is None or self.link.closed:
                    return
                self._use_direct(found)
                await self._watch()
                if self.link.closed:
                    return
                if self.relay_lost:
                    await self.link.close(
                        f"direct path dead and relay lost earlier ({self.relay_lost})"
                    )
                    return
                self._use_relay()
        except LinkClosed:
            return  # the link closed (its pending PINGs fail with it): nothing to upgrade
        except Exception:  # never take the link down over an upgrade
            log.exception("relay-first upgrade of %s failed", self.link)

    async def _probe(self) -> Addr | None:
        """Probe every candidate each ``probe_interval`` until one answers or
        ``probe_for`` passes."""
        if not self.candidates:
            return None
        deadline = time.monotonic() + self.settings.probe_for
        pending: dict[asyncio.Future[float], Addr] = {}
        try:
            while time.monotonic() < deadline and not self.link.closed:
                for remote in self.candidates:
                    pending[self._ping(remote)] = remote
                done, _ = await asyncio.wait(
                    pending, timeout=self.settings.probe_interval, return_when="FIRST_COMPLETED"
                )
                for fut in done:
                    if not fut.cancelled() and fut.exception() is None:
                        return pending[fut]
        finally:
            for fut in pending:
                fut.cancel()
        return None

    async def _watch(self) -> None:
        """Keep the direct path proven; return when it is dead."""
        assert self.direct is not None
        s = self.settings
        self.last_pong = time.monotonic()
        last_relay_ping = time.monotonic()
        suspected = False
        while not self.link.closed:
            if time.monotonic() - last_relay_ping >= s.relay_keepalive:
                last_relay_ping = time.monotonic()
                self.relay_send(self._relay_ping())
            fut = self._ping(self.direct)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.keepalive):
                    await asyncio.shield(fut)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.last_pong = time.monotonic()
                self.link._send_datagram = self._direct_sender(self.direct)
            else:
                fut.cancel()
            silent = time.monotonic() - self.last_pong
            if silent >= s.dead_after:
                return
            if silent >= s.suspect_after and not suspected:
                suspected = True
                self.link._send_datagram = self._both_sender(self.direct)
                self._replay(since=self.last_pong - s.keepalive)
            elif silent < s.suspect_after:
                suspected = False
            if fut.done():
                await asyncio.sleep(max(0.0, s.keepalive - (time.monotonic() - self.last_pong)))

    # -- switching -----------------------------------------------------------------

    def _direct_sender(self, remote: Addr) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            self._send_direct(data, remote)
            self._remember(data)

        return send

    def _remember(self, data: bytes) -> None:
        s = self.settings
        self._recent.append((time.monotonic(), data))
        self._recent_bytes += len(data)
        while self._recent and (
            len(self._recent) > s.replay_datagrams or self._recent_bytes > s.replay_bytes
        ):
            self._recent_bytes -= len(self._recent.popleft()[1])

    def _replay(self, since: float) -> None:
        """Send again, over the relay, what went on the direct path since ``since``:
        it may have died under it.  Copies that did arrive are dropped by the peer."""
        for at, data in self._recent:
            if at >= since:
                self.relay_send(data)
                self.replayed += 1
        self._recent.clear()
        self._recent_bytes = 0

    def _both_sender(self, remote: Addr) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            self._send_direct(data, remote)
            self.relay_send(data)

        return send

    def _use_direct(self, remote: Addr) -> None:
        self.direct = remote
        self.link._send_datagram = self._direct_sender(remote)
        self._set_path(
            LinkPath(self.relay_path.method, "udp", self.listener.local, remote, relayed=False)
        )

    def _use_relay(self) -> None:
        self.direct = None
        self.link._send_datagram = self.relay_send
        self._set_path(self.relay_path)

    def _set_path(self, new: LinkPath) -> None:
        old, self.link.path = self.link.path, new
        self.switches += 1
        log.info("link %s: path %s -> %s", self.link.remote_key.hex()[:16], old.kind, new.kind)
        self.node.plugins.notify(
            "warpgate_link_path_changed", node=self.node, link=self.link, old=old, new=new
        )
