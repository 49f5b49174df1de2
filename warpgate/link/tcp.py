"""Links over TCP.

Wire: ``WGL\\x02`` from the dialler, then the three handshake messages, each behind a
2-byte big-endian length, then records: type u8 | length u24 | ciphertext (see
:mod:`warpgate.sansio.link_records`).

One :class:`LinkConnection` (an ``asyncio.Protocol``) drives each connection from its
first byte: bytes are parsed as they arrive, with no stream reader in between, so bulk
transfers copy each byte as few times as possible and the handshake costs no extra
event-loop rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence

from warpgate.link.link import Addr, Link, LinkClosed, LinkPath, _ReceiveFailed
from warpgate.net.scope import client_key
from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity, LinkProtocolError
from warpgate.sansio.link_records import RECORD_HEADER, Record, RecordCodec, RecordStreamParser
from warpgate.sansio.link_resumption import ResumedHandshake, ResumptionTickets

AnyHandshake = LinkHandshake | ResumedHandshake

log = logging.getLogger(__name__)

# The last byte is the version of the framing: 2 since records carry 24-bit lengths.
LINK_MAGIC = b"WGL\x02"
# A dialler resuming with a ticket (warpgate.sansio.link_resumption) starts with this.
RESUME_MAGIC = b"WGR\x02"
_LEN = 2
# struct tcp_info (linux/tcp.h): tcpi_last_ack_recv (milliseconds since the peer last
# acknowledged anything) is the u32 at offset 56, there since Linux 2.6.
_TCP_INFO_SIZE = 60
_U32 = struct.Struct("=I")
_PROBE_ANSWER_MS = 130_000


def _send_queue_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel's send queue, sent or not, not yet acknowledged (Linux)."""
    try:
        import fcntl
        import termios

        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])
    except (ImportError, OSError, AttributeError):
        return 0


PAUSE_AT = 16  # records (up to 1 MiB each) waiting for the reader before reading pauses
# Inbound handshakes in progress from one source: an IPv4 address or an IPv6 /64 (one
# host gets a whole /64).  Each may hold a socket and up to 64 KiB of buffered handshake
# bytes until handshake_timeout: without a cap, one host could pin gigabytes.  High
# enough for a whole machine of honest nodes dialling at once.
MAX_PENDING_PER_SOURCE = 128
# ... and from everyone: many sources together (a botnet, or a /48 of /64s) may hold at
# most this many sockets and 64 KiB each (256 MiB) before new connections are closed.
MAX_PENDING = 4096


def _frame(msg: bytes) -> bytes:
    return len(msg).to_bytes(_LEN, "big") + msg


def _addr(sockname: object) -> Addr:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return (str(sockname[0]), int(sockname[1]))
    return ("?", 0)


class LinkConnection(asyncio.Protocol):
    """One TCP connection: magic (responder side), handshake, then records."""

    def __init__(
        self,
        hs: AnyHandshake,
        *,
        method: str,
        max_message: int,
        on_link: Callable[[TcpLink], None] | None = None,
        on_failure: Callable[[str, Addr], None] | None = None,
        admit: Callable[[LinkConnection], str] | None = None,
        tickets: ResumptionTickets | None = None,
    ) -> None:
        self.hs: AnyHandshake = hs
        # Where full handshakes leave a ticket and (listening side) resumed ones find
        # theirs; None: this connection neither makes nor answers tickets.
        self.tickets = tickets
        self.admit = admit  # responder side: why this connection may not start a handshake
        self.method = method
        self.max_message = max_message
        self.on_link = on_link
        self.on_failure = on_failure
        self.transport: asyncio.Transport | None = None
        self.link: TcpLink | None = None
        self.ready: asyncio.Future[TcpLink] = asyncio.get_running_loop().create_future()
        self._state = "handshake" if hs.initiator else "magic"
        self._buffer = bytearray()
        self._parser = RecordStreamParser()
        self._records: list[tuple[int, bytes]] = []
        self._records_ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._eof = False
        self._paused = False
        self.peer: Addr = ("?", 0)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _addr(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.hs.initiator:
            magic = RESUME_MAGIC if self.hs.resumed else LINK_MAGIC
            transport.write(magic + _frame(self.hs.start()))
        elif self.admit is not None and (refusal := self.admit(self)):
            self._fail(refusal)

    def data_received(self, data: bytes) -> None:
        if self._state == "records":
            if self.link is not None:
                self.link.last_received = time.monotonic()  # bytes are a sign of life
            try:
                records = self._parser.feed(data)
            except LinkProtocolError as exc:
                # An impossible record length: the reader task closes the link with it.
                self._state = "closed"
                self._records.append(_ReceiveFailed(exc))  # type: ignore[arg-type]
                self._records_ready.set()
                if self.link is not None:
                    self.link.wake_reader()
                return
            self._add_records(records)
            return
        if self._state == "closed":
            # A failed handshake aborted the transport, but bytes it had already read
            # may still be delivered: drop them, or a peer streaming garbage grows the
            # buffer without bound.
            return
        self._buffer += data
        try:
            self._advance_handshake()
        except (LinkProtocolError, LinkClosed) as exc:
            self._fail(str(exc))
        except Exception as exc:  # anything a hostile peer provokes ends only this link
            self._fail(f"{type(exc).__name__}: {exc}")

    def eof_received(self) -> bool:
        self._eof = True
        self._records_ready.set()
        if self.link is not None:
            self.link.wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._records_ready.set()
        if self.link is not None:
            self.link.wake_reader()
        self._writable.set()
        if not self.ready.done():
            self._settle(
                ConnectionError(f"connection closed during the handshake {exc or ''}".strip())
            )
            if self.on_failure is not None:
                self.on_failure("closed during the handshake", self.peer)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- handshake ------------------------------------------------------------------

    def _advance_handshake(self) -> None:
        buf = self._buffer
        if self._state == "magic":
            if len(buf) < len(LINK_MAGIC):
                return
            if bytes(buf[: len(RESUME_MAGIC)]) == RESUME_MAGIC:
                hs = self.hs
                self.hs = ResumedHandshake(
                    hs.identity,
                    initiator=False,
                    tickets=self.tickets,
                    now=time.monotonic(),
                    plaintext=hs.plaintext,
                )
            elif bytes(buf[: len(LINK_MAGIC)]) != LINK_MAGIC:
                if bytes(buf[:3]) == LINK_MAGIC[:3]:
                    raise LinkProtocolError(
                        f"the peer speaks link framing version {buf[3]}, this build "
                        f"version {LINK_MAGIC[3]}: upgrade the older side"
                    )
                raise LinkProtocolError(f"not a warpgate link (first bytes {bytes(buf[:4])!r})")
            del buf[: len(LINK_MAGIC)]
            self._state = "handshake"
        while self._state == "handshake" and len(buf) >= _LEN:
            size = int.from_bytes(buf[:_LEN], "big")
            if len(buf) < _LEN + size:
                return
            message = bytes(buf[_LEN : _LEN + size])
            del buf[: _LEN + size]
            reply = self.hs.receive(message)
            assert self.transport is not None
            if reply is not None:
                self.transport.write(_frame(reply))
            if self.hs.complete:
                self._complete()

    def _complete(self) -> None:
        assert self.transport is not None
        hs = self.hs
        assert hs.remote_identity is not None
        codec = RecordCodec(*hs.transport_ciphers(), max_message=self.max_message)
        if self.tickets is not None and hs.resumption_secret:
            self.tickets.remember(hs.remote_identity, hs.resumption_secret, time.monotonic())
        hs.resumption_secret = b""  # the ticket store holds it now, or nobody
        path = LinkPath(
            method=self.method,
            transport="tcp",
            local=_addr(self.transport.get_extra_info("sockname")),
            remote=self.peer,
        )
        self.link = TcpLink(
            self,
            codec=codec,
            remote_key=hs.remote_identity,
            path=path,
            initiator=hs.initiator,
            intent=hs.intent,
        )
        self.link.resumed = hs.resumed
        self._state = "records"
        leftover, self._buffer = bytes(self._buffer), bytearray()
        self.link.start_reading()
        if not self.ready.done():
            self.ready.set_result(self.link)
        if self.on_link is not None:
            self.on_link(self.link)
        if leftover:  # records sent right behind the last handshake message, delivered
            # once the node has set the link up (message callbacks, intent routing)
            self._add_records(self._parser.feed(leftover))

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self._settle(LinkProtocolError(reason))
            if self.on_failure is not None:
                self.on_failure(reason, self.peer)
        self._state = "closed"
        if self.transport is not None:
            self.transport.abort()

    def _settle(self, exc: BaseException) -> None:
        self.ready.set_exception(exc)
        if not self.hs.initiator:
            self.ready.exception()  # nobody awaits an inbound handshake: mark it seen

    def abort_handshake(self, reason: str) -> None:
        """Give up on a handshake that is taking too long (the node's timer calls it)."""
        if not self.ready.done():
            self._fail(reason)

    # -- records ---------------------------------------------------------------------

    def _add_records(self, records: list[tuple[int, bytes]]) -> None:
        if not records:
            return
        link = self.link
        if link is not None and not self._records and not link.reader_busy:
            # Nothing queued before these and the reader is idle: deliver in place.
            records = link._receive_now(records)  # type: ignore[assignment]
            if not records:
                return
        self._records += records
        self._records_ready.set()
        if link is not None:
            link.wake_reader()
        if len(self._records) >= PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    async def next_records(self) -> list[tuple[int, bytes]]:
        """The records received since the last call; ``[]`` at the end of the stream."""
        while not self._records and not self._eof:
            self._records_ready.clear()
            await self._records_ready.wait()
        records, self._records = self._records, []
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()
        return records

    async def write(self, parts: Sequence[bytes | bytearray]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise LinkClosed("connection closed")
        if len(parts) == 1:
            transport.write(parts[0])
        else:
            transport.writelines(parts)
        if not self._writable.is_set():
            await self._writable.wait()
            if transport.is_closing():
                raise LinkClosed("connection closed")


class TcpLink(Link[Record]):
    """A link over one TCP connection; a reader task handles the received records."""

    _codec: RecordCodec  # the stream codec: seal_message_wire() too

    def __init__(
        self,
        conn: LinkConnection,
        *,
        codec: RecordCodec,
        remote_key: bytes,
        path: LinkPath,
        initiator: bool,
        intent: bytes = b"",
    ) -> None:
        super().__init__(
            codec=codec, remote_key=remote_key, path=path, initiator=initiator, intent=intent
        )
        self._conn = conn
        self._reader_task: asyncio.Task[None] | None = None
        # True while the reader task handles queued items: new records must then queue
        # behind them, or messages would be delivered out of order.
        self.reader_busy = False
        self._reading = False

    def busy(self) -> bool:
        transport = self._conn.transport
        return (
            super().busy()
            or self.reader_busy
            or self._conn._paused
            or (transport is not None and transport.get_write_buffer_size() > 0)
        )

    def peer_acked_within(self, seconds: float) -> bool:
        # Linux's TCP_INFO says when the peer's kernel last acknowledged anything: it
        # keeps doing so (window probes included) while its application is not reading,
        # so a peer that is only slow is told apart from one that is gone.
        transport = self._conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or not hasattr(socket, "TCP_INFO"):
            return False
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return False
        if len(info) < _TCP_INFO_SIZE:
            return False
        last_ack_ms = _U32.unpack_from(info, 56)[0]  # tcpi_last_ack_recv
        if last_ack_ms < seconds * 1000:
            return True
        # Our data is waiting in the kernel (the peer's receive window is full, its
        # application is not reading): a live peer's kernel still answers the window
        # probes, at least every TCP_RTO_MAX (120 s).
        return _send_queue_bytes(sock) > 0 and last_ack_ms < _PROBE_ANSWER_MS

    def start_reading(self) -> None:
        """Records may now be delivered.  The reader task itself starts only when a
        record needs an await or the stream ends: most messages are delivered straight
        from the protocol callback, and a task per link costs time and memory."""
        self._reading = True
        if self._conn._records or self._conn._eof:
            self.wake_reader()

    def wake_reader(self) -> None:
        if self._reader_task is None and self._reading and not self.closed:
            self._reader_task = asyncio.create_task(self._read_loop(), name=f"link {self.path}")

    async def _read_loop(self) -> None:
        reason = "(connection lost)"
        try:
            while items := await self._conn.next_records():
                self.reader_busy = True
                for item in items:
                    if not await self._handle_item(item):
                        reason = self._close_reason
                        return
                self.reader_busy = False
        except LinkProtocolError as exc:
            log.warning("closing link to %s: %s", self.path.remote, exc)
            reason = f"(protocol error: {exc})"
        except Exception as exc:  # a bug must close this link, not leak out of its task
            log.exception("closing link to %s after an internal error", self.path.remote)
            reason = f"(internal error: {type(exc).__name__})"
        finally:
            self._mark_closed(reason)
            self._close_transport()

    async def _send_message(self, data: bytes) -> None:
        if self.closed:
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        await self._conn.write([self._codec.seal_message_wire(data)])

    async def _transmit(self, records: list[Record]) -> None:
        if self.closed:
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        parts: list[bytes] = []
        for kind, ciphertext in records:
            parts.append(bytes([kind]) + len(ciphertext).to_bytes(RECORD_HEADER - 1, "big"))
            parts.append(ciphertext)
        await self._conn.write(parts)

    def _close_transport(self) -> None:
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    async def _shutdown(self, reason: str) -> None:
        self._mark_closed(reason)
        self._close_transport()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def dial_tcp(
    identity: LinkIdentity,
    remote: Addr,
    *,
    expected_identity: bytes | None,
    method: str,
    max_message: int,
    local_ip: str | None = None,
    intent: bytes = b"",
    encrypt: bool = True,
    tickets: ResumptionTickets | None = None,
) -> TcpLink:
    """Connect to ``remote`` and run the handshake as initiator: resumed when
    ``tickets`` holds a live ticket for ``expected_identity``, else the full one (which
    leaves a ticket there for next time).

    A resumed dial that fails before its handshake ends (the peer runs an older build,
    say) drops the ticket and dials once more with the full handshake.  Callers bound
    the whole call with a timeout (``asyncio.timeout``); a cancelled dial closes its
    connection.
    """
    resumed = (
        ResumedHandshake.dialling(
            identity,
            tickets,
            expected_identity,
            now=time.monotonic(),
            intent=intent,
            plaintext=not encrypt,
        )
        if tickets is not None and expected_identity is not None
        else None
    )
    if resumed is not None:
        assert tickets is not None and expected_identity is not None
        hs: AnyHandshake = resumed
        try:
            return await _dial(hs, remote, method, max_message, local_ip, tickets)
        except _ResumptionFailed as exc:
            tickets.forget(expected_identity)
            log.info("resuming the link to %s:%s failed (%s): full handshake", *remote, exc)
    hs = LinkHandshake(
        identity,
        initiator=True,
        expected_identity=expected_identity,
        intent=intent,
        plaintext=not encrypt,
    )
    return await _dial(hs, remote, method, max_message, local_ip, tickets)


async def _dial(
    hs: AnyHandshake,
    remote: Addr,
    method: str,
    max_message: int,
    local_ip: str | None,
    tickets: ResumptionTickets | None,
) -> TcpLink:
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(
        lambda: LinkConnection(hs, method=method, max_message=max_message, tickets=tickets),
        remote[0],
        remote[1],
        local_addr=(local_ip, 0) if local_ip else None,
    )
    try:
        return await conn.ready
    except (LinkProtocolError, ConnectionError) as exc:
        transport.abort()
        if hs.resumed:  # connected, but the resumed handshake itself failed
            raise _ResumptionFailed(str(exc)) from exc
        raise
    except BaseException:
        transport.abort()
        raise


class _ResumptionFailed(Exception):
    """A resumed handshake failed on an established connection (worth a full one)."""


def responder_factory(
    identity: Callable[[], LinkIdentity],
    *,
    max_message: int,
    encrypt: bool,
    handshake_timeout: Callable[[], float],
    on_link: Callable[[TcpLink], None],
    on_failure: Callable[[str, Addr], None],
    max_pending_per_source: int = MAX_PENDING_PER_SOURCE,
    max_pending: int = MAX_PENDING,
    tickets: Callable[[], ResumptionTickets | None] = lambda: None,
) -> Callable[[], LinkConnection]:
    """A protocol factory for a listening socket: every connection must complete the
    link handshake within ``handshake_timeout()`` seconds or is dropped, and at most
    ``max_pending_per_source`` handshakes run at once from one source (IPv4 address or
    IPv6 /64), ``max_pending`` from all.  ``tickets()``
    is where resumption tickets are kept and looked up (None: none are)."""
    pending: dict[str, int] = {}
    total = 0

    def release(source: str) -> None:
        nonlocal total
        total -= 1
        left = pending.pop(source, 1) - 1
        if left > 0:
            pending[source] = left

    def admit(conn: LinkConnection) -> str:
        """Why ``conn`` may not start a handshake ("" when it may)."""
        nonlocal total
        source = client_key(conn.peer[0])
        count = pending.get(source, 0)
        if count >= max_pending_per_source:
            return f"too many handshakes in progress from {source}"
        if total >= max_pending:
            return f"too many handshakes in progress ({total})"
        pending[source] = count + 1
        total += 1
        conn.ready.add_done_callback(lambda _f: release(source))
        return ""

    def make() -> LinkConnection:
        conn = LinkConnection(
            # The identity is asked for per connection: a node nobody dials never
            # makes its link key (a key generation and a signature saved at start-up).
            LinkHandshake(identity(), initiator=False, plaintext=not encrypt),
            method="inbound",
            max_message=max_message,
            on_link=on_link,
            on_failure=on_failure,
            admit=admit,
            tickets=tickets(),
        )
        limit = handshake_timeout()
        timer = asyncio.get_running_loop().call_later(
            limit, conn.abort_handshake, f"no handshake within {limit} s"
        )
        conn.ready.add_done_callback(lambda _f: timer.cancel())
        return conn

    return make


__all__ = [
    "LINK_MAGIC",
    "RESUME_MAGIC",
    "LinkConnection",
    "TcpLink",
    "dial_tcp",
    "responder_factory",
]
