"""Relay-first stream links: a TCP link that starts on the relay and moves, once, to a
direct TCP link, losing, duplicating and reordering nothing.

Both ends wrap their relayed link in a :class:`MigratingLink` (they agree through the
relay offer).  Every message then carries one byte of header inside the link's
encrypted records: ``0`` application data, ``1`` *switch*.  The direct link is a second,
separately authenticated link between the same two nodes; each end hands it to its
wrapper with :meth:`MigratingLink.offer_direct`.

Moving is one switch per direction: an end sends *switch* as its last message on the
relay and everything after it on the direct link; the other end reads the relay up to
that *switch*, then the direct link (whose messages wait in its queue meanwhile), and
answers with its own *switch*.  Both links are reliable and ordered and the relayed one
stays up until both switches were read, so every message is delivered once, in order.
The relayed link then closes, which releases its allocation.  ``link.path`` follows the
sending direction and the ``warpgate_link_path_changed`` hook fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from warpgate.link.link import Link, LinkClosed

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

DATA = b"\x00"
SWITCH = b"\x01"
#: How long an end that read *switch* waits for its own copy of the direct link.
DIRECT_WAIT = 15.0


class MigratingLink(Link):
    """A link over an inner relayed link that can move to a direct one."""

    def __init__(self, node: Node, relayed: Link) -> None:
        super().__init__(
            codec=relayed._codec,
            remote_key=relayed.remote_key,
            path=relayed.path,
            initiator=relayed.initiator,
            intent=relayed.intent,
        )
        self.node = node
        self.max_message = relayed.max_message - len(DATA)
        self.relayed = relayed
        self._send_link = relayed
        self._read_link = relayed
        self._direct: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        self._sent_switch = False
        self._got_switch = False
        self._send_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read(), name="migrating link reader")

    # -- moving ------------------------------------------------------------------

    def offer_direct(self, link: Link) -> None:
        """The direct link to the same peer (authenticated on its own)."""
        if link.remote_key != self.remote_key:
            raise ValueError("the direct link goes to another peer")
        if self._direct.done() or self.closed:
            self.node.spawn(link.close("not needed"), name="close spare direct link")
            return
        self._direct.set_result(link)

    async def switch_sending(self) -> None:
        """Send *switch* on the relay and everything after it on the direct link."""
        async with self._send_lock:
            if self._sent_switch or self.closed:
                return
            async with asyncio.timeout(DIRECT_WAIT):
                direct = await asyncio.shield(self._direct)
            await self.relayed.send(SWITCH)
            self._sent_switch = True
            self._send_link = direct
            old, self.path = self.path, direct.path
            log.info("link %s: moved to %s", self.remote_key.hex()[:16], direct.path)
            self.node.plugins.notify(
                "warpgate_link_path_changed", node=self.node, link=self, old=old, new=self.path
            )
        self._maybe_release_relay()

    def _maybe_release_relay(self) -> None:
        if self._sent_switch and self._got_switch and not self.relayed.closed:
            self.node.spawn(self.relayed.close("moved to a direct path"), name="close relay")

    # -- liveness: the inner links' ------------------------------------------------

    def _inner_links(self) -> list[Link]:
        links = [self.relayed]
        direct = getattr(self, "_direct", None)
        if direct is not None and direct.done() and not direct.cancelled():
            links.append(direct.result())
        return links

    @property
    def last_received(self) -> float:
        """When the peer was last heard from on any inner link (records reach the inner
        links, never this wrapper)."""
        own = self.__dict__.get("_own_last_received", 0.0)
        if "relayed" not in self.__dict__:
            return float(own)
        return max([float(own)] + [getattr(x, "last_received", 0.0) for x in self._inner_links()])

    @last_received.setter
    def last_received(self, value: float) -> None:
        self.__dict__["_own_last_received"] = value

    async def send_keepalive(self) -> None:
        """A keepalive goes on the link that currently carries our messages."""
        probe = getattr(self._send_link, "send_keepalive", None)
        if probe is not None:
            await probe()

    # -- Link -------------------------------------------------------------------

    async def _send_message(self, data: bytes) -> None:
        async with self._send_lock:
            await self._send_link.send(DATA + data)

    async def ping(self, timeout: float = 5.0) -> float:
        return await self._send_link.ping(timeout)

    async def close(self, reason: str = "") -> None:
        await self._end(f"(closed by us{': ' + reason if reason else ''})", reason)

    async def _end(self, why: str, reason: str = "") -> None:
        if self.closed:
            return
        self._mark_closed(why)
        if self._reader is not asyncio.current_task():
            self._reader.cancel()
        links = [self.relayed]
        if self._direct.done() and not self._direct.cancelled():
            links.append(self._direct.result())
        else:
            self._direct.cancel()
        for link in links:
            with contextlib.suppress(Exception):
                await link.close(reason)

    async def _shutdown(self, reason: str) -> None:
        await self.close(reason)

    async def _transmit(self, records: list[bytes]) -> None:
        raise LinkClosed("a migrating link sends through its inner links")

    # -- receiving -----------------------------------------------------------------

    async def _read(self) -> None:
        reason = ""
        try:
            while True:
                msg = await self._read_link.recv()
                kind, body = msg[:1], msg[1:]
                if kind == SWITCH and self._read_link is self.relayed and not self._got_switch:
                    async with asyncio.timeout(DIRECT_WAIT):
                        self._read_link = await asyncio.shield(self._direct)
                    self._got_switch = True
                    self.node.spawn(self.switch_sending(), name="answer switch")
                    self._maybe_release_relay()
                    continue
                if kind != DATA:
                    reason = f"(protocol error: message kind {kind!r})"
                    return
                await self._deliver(body)
        except LinkClosed as exc:
            reason = self._read_link._close_reason or str(exc)
        except TimeoutError:
            reason = "(the peer switched to a direct link this end never got)"
        finally:
            if not self.closed:
                why = reason or "(inner link closed)"
                self.node.spawn(self._end(why, why.strip("()")), name="close migrating link")

    async def _deliver(self, data: bytes) -> None:
        self.messages_received += 1
        self.bytes_received += len(data)
        if self._on_message is not None and await self._on_message(data, self):
            return
        await self._queue.put(data)
