"""TCP simultaneous open through two NATs, and the link handshake on the winner.

Each side opens a fresh TCP port for the session (its number travels in the offer or
answer as both the local and the predicted external port: the NATs this works through
keep the source port), listens on it, and connects from it to the other's predicted
endpoints, one socket per predicted port (``SO_REUSEADDR`` + ``SO_REUSEPORT`` let them
share the port).  The first SYN to reach the other NAT before that NAT saw its own
host's SYN is dropped there (a NAT drops unsolicited inbound TCP); the other side's
SYN then finds the first side's mapping open and gets in, and both kernels complete
one connection (RFC 793 simultaneous open).  Without a NAT in front, a SYN that
arrives before ours left meets the listening socket instead of a reset.  A refused
connect is tried again from a new socket, all bounded by the caller's deadline.

Why not the node's listening port: both nodes' listening ports give one 4-tuple per
pair of nodes, so a second punched link to the same peer (while the first is open, or
two attempts at once) could not connect (``EADDRNOTAVAIL``: the tuple is taken); and
the node's listener, not the punch, would take an early SYN and answer a handshake in
the wrong role.  (A tuple left in TIME_WAIT is no obstacle: with TCP timestamps, on
by default, Linux lets an explicitly bound socket reuse it; checked in the lab.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from warpgate.link.tcp import LinkConnection, TcpLink
from warpgate.sansio.link_handshake import LinkHandshake

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]
RETRY_DELAY = 0.2  # after a refused or failed connect, before the next try
MAX_TRIES = 50  # per target (and the caller's deadline bounds them all)


def bound_socket(local: Addr) -> socket.socket:
    """A non-blocking TCP socket bound to ``local`` (port 0: a fresh port), shareable
    with the other sockets of the same simultaneous open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(local)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(ip: str) -> socket.socket:
    """The session's socket: a fresh port, listening, so that a peer's SYN arriving
    before ours left (possible when no NAT sits in front of us) is accepted instead of
    answered with a reset.  The connecting sockets share its port."""
    sock = bound_socket((ip, 0))
    try:
        sock.listen(8)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_one(local: Addr, target: Addr, out: asyncio.Queue[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for _ in range(MAX_TRIES):
        try:
            sock = bound_socket(local)
        except OSError as exc:  # the 4-tuple is taken: the peer's SYN reached the listener
            last = exc
            log.debug("simultaneous open %s -> %s: %s", local, target, exc)
            await asyncio.sleep(RETRY_DELAY)
            continue
        try:
            await loop.sock_connect(sock, target)
        except OSError as exc:  # refused (a reset on the way), unreachable...
            sock.close()
            last = exc
            log.debug("simultaneous open %s -> %s: %s", local, target, exc)
        except BaseException:
            sock.close()
            raise
        else:
            out.put_nowait(sock)
            return
        await asyncio.sleep(RETRY_DELAY)
    raise ConnectionError(f"simultaneous open to {target[0]}:{target[1]} failed: {last}")


class SimultaneousOpen:
    """Connections between this side's session port and the peer's predicted endpoints,
    established from either end: the connecting sockets (one per target, at most
    ``max_sockets``) and the session's listening socket (owned from now on), which
    accepts only from the peer's addresses.  :meth:`next` gives them as they come;
    :meth:`aclose` closes everything not taken."""

    def __init__(
        self, listener: socket.socket, targets: Sequence[Addr], *, max_sockets: int
    ) -> None:
        self.listener = listener
        self.local: Addr = listener.getsockname()[:2]
        self.targets = list(dict.fromkeys(targets))[: max(1, max_sockets)]
        self.strays = 0  # connections from other addresses, closed at once
        self._ready: asyncio.Queue[socket.socket] = asyncio.Queue()
        self._errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self.targets:
            raise ConnectionError("no endpoint to aim at")
        self._tasks = [
            asyncio.create_task(self._connect(t), name=f"tcp punch {t}") for t in self.targets
        ]
        self._tasks.append(asyncio.create_task(self._accept(), name="tcp punch accept"))

    async def _connect(self, target: Addr) -> None:
        try:
            await _connect_one(self.local, target, self._ready)
        except ConnectionError as exc:
            self._errors.append(str(exc))

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        peers = {ip for ip, _port in self.targets}
        while True:  # bounded by the caller's deadline (aclose cancels it)
            sock, addr = await loop.sock_accept(self.listener)
            if addr[0] in peers:
                sock.setblocking(False)
                self._ready.put_nowait(sock)
            else:
                self.strays += 1
                log.info("tcp punch: closed a connection from %s:%s", addr[0], addr[1])
                sock.close()

    async def next(self) -> socket.socket:
        """The next established connection; ConnectionError once every connecting
        socket gave up (the listener alone is not worth waiting for then)."""
        while True:
            if not self._ready.empty():
                return self._ready.get_nowait()
            connecting = [t for t in self._tasks[:-1] if not t.done()]
            if not connecting:
                raise ConnectionError("; ".join(self._errors) or "simultaneous open failed")
            getter = asyncio.ensure_future(self._ready.get())
            try:
                await asyncio.wait([getter, *connecting], return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                getter.cancel()
                if getter.done() and not getter.cancelled():
                    getter.result().close()
                raise
            if getter.done():
                return getter.result()
            getter.cancel()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._ready.empty():
            self._ready.get_nowait().close()
        self.listener.close()


async def handshake_on(
    node: Node,
    sock: socket.socket,
    *,
    initiator: bool,
    expected_identity: bytes,
    intent: bytes,
    method: str,
) -> TcpLink:
    """The link handshake on a connected socket (owned from now on): the requester
    initiates (it sends the link magic first), the peer responds, whatever the order
    the SYNs crossed in.  Bounded by ``handshake_timeout``; on any failure the socket
    is closed."""
    hs = LinkHandshake(
        node.link_identity,
        initiator=initiator,
        expected_identity=expected_identity if initiator else None,
        intent=intent,
        plaintext=not node.conf["link_encryption"],
    )
    loop = asyncio.get_running_loop()
    try:
        transport, conn = await loop.create_connection(
            lambda: LinkConnection(hs, method=method, max_message=node.conf["max_message_size"]),
            sock=sock,
        )
    except BaseException:
        sock.close()
        raise
    try:
        async with asyncio.timeout(float(node.conf["handshake_timeout"])):
            link = await conn.ready
    except BaseException:
        transport.abort()
        raise
    if link.remote_key != expected_identity:
        await link.close("unexpected identity")
        raise ConnectionError("the punched connection reached another node")
    return link


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


async def first_link(
    opening: SimultaneousOpen,
    handshake: Callable[[socket.socket], Coroutine[Any, Any, TcpLink]],
) -> TcpLink:
    """The responder's side: run ``handshake`` on every connection as it is established
    and keep the first that completes.  (With several predicted ports, the two sides
    may see different connections first; only the one the requester picked carries
    its handshake.)  The others are closed."""
    handshakes: set[asyncio.Task[TcpLink]] = set()
    getter: asyncio.Task[socket.socket] | None = None
    exhausted: BaseException | None = None
    errors: list[str] = []
    try:
        while True:
            if getter is None and exhausted is None:
                getter = asyncio.ensure_future(opening.next())
            waiting = {*handshakes, *([getter] if getter is not None else [])}
            if not waiting:
                raise ConnectionError("; ".join(errors) or str(exhausted))
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if getter is not None and getter in done:
                got, getter = getter, None
                if got.exception() is not None:
                    exhausted = got.exception()
                else:
                    handshakes.add(asyncio.create_task(handshake(got.result())))
            for task in [t for t in handshakes if t in done]:
                handshakes.discard(task)
                if task.exception() is None:
                    return task.result()
                errors.append(str(task.exception()))
    finally:
        leftovers: list[asyncio.Task[Any]] = [*handshakes]
        if getter is not None:
            leftovers.append(getter)
        for left in leftovers:
            left.cancel()
        for result in await asyncio.gather(*leftovers, return_exceptions=True):
            if isinstance(result, socket.socket):
                result.close()
            elif isinstance(result, TcpLink):
                await result.close("another connection won")
