"""A TURN allocation shaped like a listening UDP socket, so the node's UDP link
endpoint (handshake, records, demux) runs over the relay unchanged.

:class:`RelayEndpoint` has what :class:`~warpgate.link.udp.UdpLinks` uses of a
:class:`~warpgate.net.servers.Listener`: ``udp.sendto(data, addr)``, ``udp.is_closing()``
and ``local`` (here the relayed address), plus ``relayed = True`` so links made on it
say ``path.kind == "relay"``.  Datagrams peers send through the relay are handed to
``node.udp`` in arrival order by one pump task, as a listener's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from warpgate.turn.client import TurnClient, TurnClosed

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]
QUEUE_LIMIT = 1024  # datagrams waiting for the link endpoint; more are dropped, as UDP


class RelayEndpoint:
    relayed = True

    def __init__(self, node: Node, client: TurnClient) -> None:
        self.node = node
        self.client = client
        self.udp = self  # UdpLinks sends through listener.udp
        self.local: Addr = client.relayed
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[bytes, Addr]] = asyncio.Queue(QUEUE_LIMIT)
        self._pump = asyncio.create_task(self._run(), name=f"relay {self.local}")

    # -- the DatagramTransport subset UdpLinks uses -------------------------------------

    def sendto(self, data: bytes, addr: Addr) -> None:
        try:
            self.client.send(addr, data)
        except TurnClosed:
            self.dropped += 1  # like a datagram sent on a closed socket: gone

    def is_closing(self) -> bool:
        return self.client.is_closing()

    # -- inbound ---------------------------------------------------------------------

    def feed(self, peer: Addr, data: bytes) -> None:
        try:
            self._queue.put_nowait((data, peer))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            data, peer = await self._queue.get()
            try:
                handled = await self.node.udp.datagram_received(data, peer, self)  # type: ignore[arg-type]
            except Exception:  # never let one datagram stop the relay
                log.exception("relay %s: datagram from %s failed", self.local, peer)
                continue
            if not handled:
                self.dropped += 1

    async def aclose(self, reason: str = "closed") -> None:
        self._pump.cancel()
        try:
            await self.client.aclose(reason)
        finally:
            with contextlib.suppress(BaseException):
                await self._pump
