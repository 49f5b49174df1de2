"""An asyncio STUN Binding client over UDP and TCP (RFC 8489, RFC 5780 tests).

:func:`stun_binding` asks one server for the caller's external (mapped) address;
:func:`race_bindings` asks several at once and returns the first answer, so one dead
server never stalls the caller.  Every call is bounded by its ``timeout`` and closes
the sockets it opened.

Over UDP a request is retransmitted on RFC 8489's schedule (RTO 500 ms, doubling, at
most Rc=7 sends, then Rm=16 RTOs of waiting), cut short by ``timeout``.  Datagrams that
are not STUN, do not decode (a FINGERPRINT that does not match, say) or carry another
transaction id are ignored, not errors.  An error response, a success response without a
mapped address or with unknown comprehension-required attributes ends the transaction.

Over TCP one request is sent on a fresh connection; messages are framed by their own
STUN header.

A component that already owns a UDP socket (and reads it) can run a
:class:`BindingTransaction` itself: send ``request`` bytes as the transaction asks and
``feed`` it the STUN datagrams it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from warpgate.errors import UnavailableError
from warpgate.net.hostport import format_hostport
from warpgate.sansio import stun
from warpgate.sansio.stun import Attr, ChangeRequest, StunClass, StunError, StunMessage

__all__ = [
    "DEFAULT_TIMEOUT",
    "BindingResult",
    "BindingTransaction",
    "StunUnavailable",
    "race_bindings",
    "stun_binding",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
RTO = 0.5
RC = 7
RM = 16
_RECV_SIZE = 2048

Address = tuple[str, int]
Transport = Literal["udp", "tcp"]


class StunUnavailable(UnavailableError):
    """No STUN server gave a usable answer in time.

    ``outcomes`` maps each server tried (``"host:port"``) to what happened there.
    """

    def __init__(self, outcomes: dict[str, str]) -> None:
        detail = "; ".join(f"{server}: {what}" for server, what in outcomes.items())
        super().__init__(f"no STUN server answered ({detail or 'no servers given'})")
        self.outcomes = outcomes


class _Failed(Exception):
    """One server's transaction failed; the message is its outcome."""


@dataclass(frozen=True)
class BindingResult:
    """What a Binding transaction learnt.

    ``mapped`` is the reflexive transport address the server saw; ``response_origin``
    and ``other_address`` are the RFC 5780 attributes when the server sends them;
    ``rtt`` is seconds from the last transmission to the answer.
    """

    mapped: Address
    response_origin: Address | None
    other_address: Address | None
    rtt: float
    server: Address
    local: Address | None = None
    transport: Transport = "udp"
    software: str | None = None


def _fmt(addr: Address) -> str:
    return format_hostport(addr[0], addr[1])


def _request(change_ip: bool, change_port: bool, software: str | None) -> StunMessage:
    attrs: list[tuple[int, stun.AttrValue]] = []
    if software:
        attrs.append((Attr.SOFTWARE, software))
    if change_ip or change_port:
        attrs.append((Attr.CHANGE_REQUEST, ChangeRequest(change_ip, change_port)))
    return StunMessage(stun.StunMethod.BINDING, StunClass.REQUEST, attributes=tuple(attrs))


class BindingTransaction:
    """One Binding request and the wait for its answer, independent of any socket.

    ``request`` is the datagram to send; :meth:`run` calls ``send`` on the RFC schedule
    until :meth:`feed` is given the answer or ``timeout`` passes.
    """

    def __init__(
        self,
        server: Address,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        software: str | None = None,
        transport: Transport = "udp",
    ) -> None:
        self.server = server
        self.transport: Transport = transport
        self.message = _request(change_ip, change_port, software)
        self.request = stun.encode(self.message)
        self.transaction_id = self.message.transaction_id
        self._future: asyncio.Future[BindingResult] | None = None
        self._last_send = 0.0
        self.local: Address | None = None
        self.ignored = 0

    def _get_future(self) -> asyncio.Future[BindingResult]:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def feed(self, data: bytes, addr: object = None) -> bool:
        """Offer a received datagram; True if it was this transaction's answer."""
        if len(data) < stun.HEADER_SIZE or data[8:20] != self.transaction_id:
            return False
        try:
            msg = stun.decode(data)
        except StunError as exc:
            self.ignored += 1
            log.debug("stun %s: ignoring a malformed answer: %s", _fmt(self.server), exc)
            return False
        if msg.cls not in (StunClass.SUCCESS, StunClass.ERROR) or msg.method != self.message.method:
            self.ignored += 1
            return False
        future = self._get_future()
        if future.done():
            return True
        rtt = max(0.0, time.monotonic() - self._last_send)
        if msg.cls is StunClass.ERROR:
            err = msg.error_code
            what = f"{err.code} {err.reason}".strip() if err else "no ERROR-CODE"
            future.set_exception(_Failed(f"error response {what}"))
        elif msg.unknown_required:
            types = ", ".join(f"{t:#06x}" for t in msg.unknown_required)
            future.set_exception(_Failed(f"unknown comprehension-required attributes {types}"))
        elif msg.mapped_address is None:
            future.set_exception(_Failed("success response without a mapped address"))
        else:
            software = msg.get(Attr.SOFTWARE)
            future.set_result(
                BindingResult(
                    mapped=msg.mapped_address,
                    response_origin=msg.response_origin,
                    other_address=msg.other_address,
                    rtt=rtt,
                    server=self.server,
                    local=self.local,
                    transport=self.transport,
                    software=software if isinstance(software, str) else None,
                )
            )
        return True

    def fail(self, why: str) -> None:
        """End the transaction with outcome ``why`` (an ICMP error, say)."""
        future = self._get_future()
        if not future.done():
            future.set_exception(_Failed(why))

    async def run(
        self,
        send: Callable[[bytes], Awaitable[object] | object],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        rto: float = RTO,
        rc: int = RC,
        rm: int = RM,
    ) -> BindingResult:
        """Send and retransmit until answered; raise :class:`StunUnavailable` (one outcome)
        if not answered, or answered with an error, within ``timeout`` seconds."""
        future = self._get_future()
        sends, give_up = stun.retransmission_schedule(rto, rc, rm)
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + min(timeout, give_up)
        try:
            for n, offset in enumerate(sends):
                when = start + offset
                if when >= deadline:
                    break
                if n:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(when):
                            await asyncio.shield(future)
                if future.done():
                    break
                self._last_send = time.monotonic()
                try:
                    sent = send(self.request)
                    if inspect.isawaitable(sent):
                        await sent
                except OSError as exc:
                    raise _Failed(f"send failed: {exc}") from exc
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(future)
            if not future.done():
                raise _Failed(f"no answer within {min(timeout, give_up):.1f}s")
            return future.result()
        except _Failed as exc:
            raise StunUnavailable({_fmt(self.server): str(exc)}) from None
        finally:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" log at exit


# ------------------------------------------------------------------ UDP plumbing


class _UdpReceiver:
    """Reads one socket and hands every STUN datagram to the open transactions."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Only a connected socket's ICMP errors name one server (Windows reports them
        #: on unconnected sockets too, without saying which send they belong to).
        self.connected = False
        self.transactions: set[BindingTransaction] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, addr = await loop.sock_recvfrom(self.sock, _RECV_SIZE)
            except ConnectionRefusedError:
                # ICMP port unreachable on a connected socket: that server is not there.
                if self.connected:
                    for txn in list(self.transactions):
                        txn.fail("port unreachable (ICMP)")
                continue
            except OSError as exc:
                log.debug("stun: receive error on %s: %s", self.sock, exc)
                await asyncio.sleep(0.05)
                continue
            if not stun.is_stun(data):
                continue
            for txn in list(self.transactions):
                if txn.feed(data, addr):
                    break


async def _resolve(server: Address, kind: int, family: int = 0) -> tuple[int, tuple[Any, ...]]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(server[0], server[1], family=family, type=kind)
    except OSError as exc:
        raise _Failed(f"cannot resolve: {exc}") from exc
    if not infos:
        raise _Failed("cannot resolve: no addresses")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def _local(sock: socket.socket) -> Address | None:
    try:
        name = sock.getsockname()
    except OSError:
        return None
    return (str(name[0]), int(name[1]))


def _open_udp(family: int, local_addr: Address | None, owned: list[socket.socket]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    owned.append(sock)
    sock.setblocking(False)
    if local_addr is None:
        local_addr = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    sock.bind(local_addr)
    return sock


def _sender(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    target: tuple[Any, ...],
) -> Callable[[bytes], Awaitable[object]]:
    def send(data: bytes) -> Awaitable[object]:
        return loop.sock_sendto(sock, data, target)

    return send


async def _udp_bindings(
    servers: Sequence[Address],
    *,
    sock: socket.socket | None,
    local_addr: Address | None,
    timeout: float,
    change_ip: bool,
    change_port: bool,
    software: str | None,
    first_only: bool,
) -> tuple[BindingResult | None, dict[str, str]]:
    """Run one transaction per server over UDP; return the first success (with
    ``first_only``) and every server's outcome."""
    outcomes: dict[str, str] = {}
    receivers: dict[int, _UdpReceiver] = {}  # by address family
    owned: list[socket.socket] = []
    saved_blocking: bool | None = None
    loop = asyncio.get_running_loop()
    jobs: dict[asyncio.Task[BindingResult], Address] = {}
    # A lone request without CHANGE-REQUEST gets a connected socket, which hears ICMP
    # errors (a closed port fails at once).  Answers to a CHANGE-REQUEST come from
    # another address, and several servers share one socket (one mapping): unconnected.
    connect = sock is None and len(servers) == 1 and not (change_ip or change_port)
    try:
        if sock is not None:
            saved_blocking = sock.getblocking()
            sock.setblocking(False)
            receivers[sock.family] = _UdpReceiver(sock)
            receivers[sock.family].start()
        for server in servers:
            try:
                if sock is not None:
                    _, target = await _resolve(server, socket.SOCK_DGRAM, sock.family)
                    receiver = receivers[sock.family]
                else:
                    family, target = await _resolve(server, socket.SOCK_DGRAM)
                    if family not in receivers:
                        receivers[family] = _UdpReceiver(_open_udp(family, local_addr, owned))
                        if connect:
                            receivers[family].sock.connect(target)
                            receivers[family].connected = True
                        receivers[family].start()
                    receiver = receivers[family]
            except (_Failed, OSError) as exc:
                outcomes[_fmt(server)] = str(exc)
                continue
            txn = BindingTransaction(
                server, change_ip=change_ip, change_port=change_port, software=software
            )
            txn.local = _local(receiver.sock)
            receiver.transactions.add(txn)
            jobs[
                asyncio.ensure_future(
                    txn.run(_sender(loop, receiver.sock, target), timeout=timeout)
                )
            ] = server
        winner: BindingResult | None = None
        pending = set(jobs)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if failure is None:
                    if winner is None:
                        winner = task.result()
                    outcomes[_fmt(jobs[task])] = "answered"
                elif isinstance(failure, StunUnavailable):
                    outcomes.update(failure.outcomes)
                else:
                    outcomes[_fmt(jobs[task])] = f"failed: {failure!r}"
            if winner is not None and first_only:
                break
        return winner, outcomes
    finally:
        for task in jobs:
            task.cancel()
        if jobs:
            await asyncio.gather(*jobs, return_exceptions=True)
        for receiver in receivers.values():
            await receiver.stop()
        for own in owned:
            own.close()
        if sock is not None and saved_blocking is not None:
            sock.setblocking(saved_blocking)


# ------------------------------------------------------------------ TCP


async def _tcp_binding(
    server: Address,
    *,
    local_addr: Address | None,
    timeout: float,
    change_ip: bool,
    change_port: bool,
    software: str | None,
) -> BindingResult:
    txn = BindingTransaction(
        server, change_ip=change_ip, change_port=change_port, software=software, transport="tcp"
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(
                    server[0], server[1], local_addr=local_addr
                )
            except OSError as exc:
                raise _Failed(f"cannot connect: {exc}") from exc
            txn.local = _local(writer.get_extra_info("socket"))
            txn._last_send = time.monotonic()
            future = txn._get_future()
            writer.write(txn.request)
            await writer.drain()
            while not future.done():
                try:
                    header = await reader.readexactly(stun.HEADER_SIZE)
                    size = stun.message_length(header)
                    body = await reader.readexactly(size - stun.HEADER_SIZE)
                except asyncio.IncompleteReadError as exc:
                    raise _Failed("connection closed before an answer") from exc
                except StunError as exc:
                    raise _Failed(f"not a STUN stream: {exc}") from exc
                except OSError as exc:
                    raise _Failed(f"receive failed: {exc}") from exc
                txn.feed(header + body)
            return future.result()
    except TimeoutError:
        raise StunUnavailable({_fmt(server): f"no answer within {timeout:.1f}s"}) from None
    except _Failed as exc:
        raise StunUnavailable({_fmt(server): str(exc)}) from None
    finally:
        if txn._future is not None and not txn._future.done():
            txn._future.cancel()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


# ------------------------------------------------------------------ public API


async def stun_binding(
    server: Address,
    *,
    sock: socket.socket | None = None,
    local_addr: Address | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    change_ip: bool = False,
    change_port: bool = False,
    transport: Transport = "udp",
    software: str | None = None,
) -> BindingResult:
    """Ask ``server`` (host, port) for our mapped address.

    Over UDP, ``sock`` is a bound UDP socket to send from (its mapping is what the
    server reports); it must not be read by anyone else meanwhile, is switched to
    non-blocking while in use, and is left open.  Without ``sock`` a socket is bound to
    ``local_addr`` (default: any address, any port) and closed afterwards.
    ``change_ip``/``change_port`` add an RFC 5780 CHANGE-REQUEST.

    Raises :class:`StunUnavailable` when no usable answer arrives within ``timeout``.
    """
    if transport == "tcp":
        if sock is not None:
            raise ValueError("sock is for UDP; use local_addr with transport='tcp'")
        return await _tcp_binding(
            server,
            local_addr=local_addr,
            timeout=timeout,
            change_ip=change_ip,
            change_port=change_port,
            software=software,
        )
    if transport != "udp":
        raise ValueError(f"transport must be 'udp' or 'tcp', not {transport!r}")
    return await race_bindings(
        [server],
        sock=sock,
        local_addr=local_addr,
        timeout=timeout,
        change_ip=change_ip,
        change_port=change_port,
        software=software,
    )


async def race_bindings(
    servers: Iterable[Address],
    *,
    sock: socket.socket | None = None,
    local_addr: Address | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    change_ip: bool = False,
    change_port: bool = False,
    transport: Transport = "udp",
    software: str | None = None,
) -> BindingResult:
    """Ask every server in ``servers`` at once; the first usable answer wins and the
    other transactions are cancelled.

    Over UDP with ``sock`` every request leaves from that one socket (one mapping);
    without it each server gets its own socket.  Raises :class:`StunUnavailable`
    naming each server's outcome when none answers within ``timeout``.
    """
    servers = list(servers)
    if not servers:
        raise StunUnavailable({})
    if transport == "udp":
        winner, outcomes = await _udp_bindings(
            servers,
            sock=sock,
            local_addr=local_addr,
            timeout=timeout,
            change_ip=change_ip,
            change_port=change_port,
            software=software,
            first_only=True,
        )
        if winner is None:
            raise StunUnavailable(outcomes)
        log.debug("stun race won by %s in %.3fs", _fmt(winner.server), winner.rtt)
        return winner
    if sock is not None:
        raise ValueError("sock is for UDP; use local_addr with transport='tcp'")
    tasks = {
        asyncio.ensure_future(
            stun_binding(
                server,
                local_addr=local_addr,
                timeout=timeout,
                change_ip=change_ip,
                change_port=change_port,
                transport=transport,
                software=software,
            )
        ): server
        for server in servers
    }
    outcomes = {}
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if failure is None:
                    return task.result()
                if isinstance(failure, StunUnavailable):
                    outcomes.update(failure.outcomes)
                else:
                    outcomes[_fmt(tasks[task])] = f"failed: {failure!r}"
        raise StunUnavailable(outcomes)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
