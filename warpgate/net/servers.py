"""The node's TCP and UDP servers, bound per address on one shared port.

TCP connections get a protocol from the node's factory (the link handshake); UDP
datagrams go, in order, to the node's datagram handler with a :class:`ServerPipe` for
their remote address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from warpgate.errors import PortInUseError

log = logging.getLogger(__name__)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Addr = tuple[str, int]
TcpFactory = Callable[[], asyncio.Protocol]
DatagramHandler = Callable[[bytes, Addr, "ServerPipe"], Awaitable[None]]

UDP_QUEUE_LIMIT = 1024  # datagrams waiting for callbacks; more are dropped, not buffered


class ServerPipe:
    """The server side of one UDP remote address on a listening socket."""

    def __init__(
        self,
        kind: Literal["udp"],
        local: Addr,
        remote: Addr,
        *,
        datagram: asyncio.DatagramTransport | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.kind = kind
        self.local = local
        self.remote = remote
        self.listener = listener
        self._datagram = datagram

    @property
    def closed(self) -> bool:
        return self._datagram is None or self._datagram.is_closing()

    async def send_raw(self, data: bytes) -> None:
        """Send one datagram to the remote address."""
        if self._datagram is None or self._datagram.is_closing():
            raise ConnectionError("the listening socket is closed")
        self._datagram.sendto(data, self.remote)

    def __repr__(self) -> str:
        return f"<ServerPipe {self.kind} {self.local} <- {self.remote}>"


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, local: Addr) -> None:
        self.local = local
        self.queue: asyncio.Queue[tuple[bytes, Addr]] = asyncio.Queue(UDP_QUEUE_LIMIT)
        self.dropped = 0

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.queue.put_nowait((data, (addr[0], addr[1])))
        except asyncio.QueueFull:
            self.dropped += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (port unreachable...): nothing to do for a server.
        log.debug("udp %s: %s", self.local, exc)


@dataclass(eq=False)
class Listener:
    """A TCP server and a UDP endpoint on one local (ip, port)."""

    ip: IP
    port: int
    tcp: asyncio.Server | None = None
    udp: asyncio.DatagramTransport | None = None
    udp_protocol: _DatagramProtocol | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # TCP connections accepted here that may still be in their handshake.
    connections: weakref.WeakSet[asyncio.Protocol] = field(default_factory=weakref.WeakSet)

    @property
    def local(self) -> Addr:
        return (str(self.ip), self.port)

    async def close(self) -> None:
        for conn in list(self.connections):
            abort = getattr(conn, "abort_handshake", None)
            if abort is not None:
                abort("the node is closing")
        if self.tcp is not None:
            self.tcp.close()
        if self.udp is not None:
            self.udp.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.tcp is not None:
            # wait_closed() also waits for connection handlers; they were cancelled above.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.tcp.wait_closed()


def _bind_socket(ip: IP, port: int, kind: int, reuse_addr: bool, scope_id: int) -> socket.socket:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((str(ip), port, 0, scope_id if ip.is_link_local else 0))
        else:
            sock.bind((str(ip), port))
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:
            sock.listen(512)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_listeners(
    ips: Sequence[tuple[IP, int]],
    port: int,
    *,
    reuse_addr: bool,
    tcp_factory: TcpFactory,
    on_datagram: DatagramHandler,
) -> list[Listener]:
    """Bind TCP and UDP on ``port`` for every ``(ip, scope_id)``; all or nothing.

    ``port`` 0 takes a free port on the first address and uses it for the rest.

    :raises PortInUseError: the port is taken on one of the addresses (nothing stays
        bound).
    """
    loop = asyncio.get_running_loop()
    listeners: list[Listener] = []
    socks: list[socket.socket] = []
    try:
        for ip, scope in ips:
            try:
                tsock = _bind_socket(ip, port, socket.SOCK_STREAM, reuse_addr, scope)
                socks.append(tsock)
                if port == 0:
                    port = tsock.getsockname()[1]
                usock = _bind_socket(ip, port, socket.SOCK_DGRAM, reuse_addr, scope)
                socks.append(usock)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(
                        f"port {port} is already in use on {ip} (TCP or UDP); pass another "
                        "port with Node(port=...), or port=0 for any free port",
                        port=port,
                    ) from exc
                raise
            listener = Listener(ip, port)
            listeners.append(listener)
            listener.tcp = await loop.create_server(
                functools.partial(_tracked, listener, tcp_factory), sock=tsock
            )
            listener.udp, listener.udp_protocol = await loop.create_datagram_endpoint(
                functools.partial(_DatagramProtocol, listener.local), sock=usock
            )
            pump = asyncio.create_task(
                _pump_datagrams(listener, on_datagram), name=f"udp {listener.local}"
            )
            listener.tasks.add(pump)
    except BaseException:
        for lst in listeners:
            await lst.close()
        for s in socks:
            s.close()
        raise
    return listeners


def _tracked(listener: Listener, factory: TcpFactory) -> asyncio.Protocol:
    conn = factory()
    listener.connections.add(conn)
    return conn


async def _pump_datagrams(listener: Listener, on_datagram: DatagramHandler) -> None:
    pipes: dict[Addr, ServerPipe] = {}
    while True:
        assert listener.udp_protocol is not None and listener.udp is not None
        data, addr = await listener.udp_protocol.queue.get()
        pipe = pipes.get(addr)
        if pipe is None:
            if len(pipes) > 4096:  # a flood of sources must not grow this forever
                pipes.clear()
            pipe = pipes[addr] = ServerPipe(
                "udp", listener.local, addr, datagram=listener.udp, listener=listener
            )
        try:
            await on_datagram(data, addr, pipe)
        except Exception:
            log.exception("udp datagram from %s: handler failed", addr)
