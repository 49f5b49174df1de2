"""Extra UDP sockets for birthday probing, each usable by the UDP link layer once it won.

A :class:`PunchSocket` is bound to the same local address as a listener, on a port of
its own (so the symmetric NAT gives it a mapping of its own).  Until it wins, its
datagrams go to the probe handler; once adopted, everything that is not a probe goes to
the node's UDP link endpoint, exactly as datagrams on a listening socket do, through a
:class:`~warpgate.net.servers.Listener` that wraps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from warpgate.net.servers import Listener
from warpgate.sansio.punch_probe import is_probe

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]
ProbeHandler = Callable[[bytes, Addr, Listener], bool]
QUEUE_LIMIT = 256


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Addr]] = asyncio.Queue(QUEUE_LIMIT)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a flood is dropped, not buffered
            self.queue.put_nowait((data, (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("punch socket: %s", exc)


class PunchSocket:
    """One extra UDP socket and the task that reads it."""

    def __init__(self, node: Node, listener: Listener, on_probe: ProbeHandler) -> None:
        self.node = node
        self.on_probe = on_probe
        self.adopted = False
        self.listener = Listener(listener.ip, 0)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        ip = self.listener.ip
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((str(ip), 0))
            sock.setblocking(False)
            transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                _Protocol, sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self.listener.port = sock.getsockname()[1]
        self.listener.udp = transport
        self._protocol = protocol
        self._task = asyncio.create_task(self._pump(), name=f"punch socket {self.listener.local}")

    def sendto(self, data: bytes, addr: Addr) -> None:
        udp = self.listener.udp
        if udp is not None and not udp.is_closing():
            udp.sendto(data, addr)

    async def _pump(self) -> None:
        while True:
            data, addr = await self._protocol.queue.get()
            try:
                if is_probe(data):
                    self.on_probe(data, addr, self.listener)
                elif self.adopted:
                    await self.node.udp.datagram_received(data, addr, self.listener)
            except Exception:
                log.exception("punch socket: datagram from %s", addr)

    async def close(self) -> None:
        if self.listener.udp is not None:
            self.listener.udp.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def ipv4_listener(node: Node, local_port: int | None = None) -> Listener:
    """The listening socket whose mapping the NAT classification measured: an IPv4,
    non-loopback one (on ``local_port`` when given)."""
    candidates = [
        lst
        for lst in node.listeners
        if lst.ip.version == 4 and not lst.ip.is_loopback and lst.udp is not None
    ]
    if local_port:
        candidates = [lst for lst in candidates if lst.port == local_port] or candidates
    # A public (or NATed) address rather than a link-local one.
    candidates.sort(key=lambda lst: lst.ip.is_link_local or ipaddress.ip_address(lst.ip).is_private)
    if not candidates:
        raise ConnectionError("no IPv4 listening socket to punch from")
    return candidates[0]
