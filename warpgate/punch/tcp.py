"""TCP simultaneous open from the listening port, and the link handshake on the winner.

Each side connects to the other's predicted endpoints from sockets bound to its own
listening address and port (``SO_REUSEADDR`` + ``SO_REUSEPORT``; the listening socket
gets ``SO_REUSEPORT`` too), so the NAT maps the same local port it mapped for the
listener.  Whichever SYN crosses the other NAT after that NAT saw its own host's SYN
gets in; both kernels then complete one connection (RFC 793 simultaneous open).  At
most ``max_sockets`` sockets at once (one per predicted port), each re-tried after a
refusal, all bounded by the caller's deadline.  The first connected socket wins; the
others are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from warpgate.link.tcp import LinkConnection, TcpLink
from warpgate.sansio.link_handshake import LinkHandshake

if TYPE_CHECKING:
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Addr = tuple[str, int]
RETRY_DELAY = 0.2  # after a refused or failed connect, before the next try
MAX_TRIES = 50  # per target


def allow_port_sharing(listener: Listener) -> None:
    """Let punch sockets bind the listener's TCP port (Linux checks ``SO_REUSEPORT`` on
    the bound socket at the time of the new bind, so setting it now is enough)."""
    if listener.tcp is None or not hasattr(socket, "SO_REUSEPORT"):
        return
    for sock in listener.tcp.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _bound_socket(local: Addr) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(local)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_one(local: Addr, target: Addr, prime_ttl: int | None) -> socket.socket:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for tries in range(MAX_TRIES):
        sock = _bound_socket(local)
        try:
            if prime_ttl and tries == 0:
                _primed_connect(sock, target, prime_ttl)
            await loop.sock_connect(sock, target)
            return sock
        except OSError as exc:  # refused (an RST on the way), unreachable...
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
        await asyncio.sleep(RETRY_DELAY)
    raise ConnectionError(f"simultaneous open to {target[0]}:{target[1]} failed: {last}")


def _primed_connect(sock: socket.socket, target: Addr, ttl: int) -> None:
    """Send the first SYN with a small TTL: it opens our own NAT's mapping and dies
    before it reaches the peer's NAT, which would otherwise answer it with a reset
    (a NAT without a matching mapping does).  Later packets (our SYN-ACK, a
    retransmitted SYN) go out with the normal TTL."""
    normal = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    try:
        err = sock.connect_ex(target)  # the SYN leaves now; EINPROGRESS
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
    finally:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, normal)


async def prime(local: Addr, targets: Sequence[Addr], ttl: int) -> None:
    """Open our NAT's mapping towards each target with a low-TTL SYN from ``local``,
    then drop the socket (the ICMP time-exceeded would abort it anyway).  The peer's
    SYN then finds the mapping and reaches our *listening* socket, which shares the
    port, so the link arrives as an ordinary inbound one."""
    for target in targets:
        try:
            sock = _bound_socket(local)
        except OSError as exc:  # the 4-tuple is taken: a connection already exists
            log.debug("not priming %s: %s", target, exc)
            continue
        try:
            _primed_connect(sock, target, ttl)
        except OSError as exc:
            log.debug("priming %s failed: %s", target, exc)
        finally:
            sock.close()


async def simultaneous_open(
    local: Addr, targets: Sequence[Addr], *, max_sockets: int, prime_ttl: int | None = None
) -> socket.socket:
    """The first socket that connects to one of ``targets`` from ``local``; with
    ``prime_ttl``, each socket's first SYN is sent with that TTL (see
    :func:`_primed_connect`)."""
    tasks = [
        asyncio.create_task(_connect_one(local, t, prime_ttl), name=f"tcp punch {t}")
        for t in list(targets)[: max(1, max_sockets)]
    ]
    if not tasks:
        raise ConnectionError("no endpoint to aim at")
    winner: socket.socket | None = None
    errors = []
    try:
        pending = set(tasks)
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None and winner is None:
                    winner = task.result()
                elif task.exception() is None:
                    task.result().close()
                else:
                    errors.append(str(task.exception()))
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, socket.socket) and result is not winner:
                result.close()
    if winner is None:
        raise ConnectionError("; ".join(errors) or "simultaneous open failed")
    return winner


async def handshake_on(
    node: Node,
    sock: socket.socket,
    *,
    initiator: bool,
    expected_identity: bytes,
    intent: bytes,
    method: str,
) -> TcpLink:
    """The link handshake on a connected socket: the requester initiates (it sends the
    link magic first), the peer responds, whatever the order the SYNs crossed in."""
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
