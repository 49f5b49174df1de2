"""Links: authenticated, encrypted, message-oriented connections to one peer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from warpgate.errors import WarpgateError
from warpgate.sansio.link_handshake import LinkProtocolError
from warpgate.sansio.link_records import CLOSE, PING, PONG, Closed, Event, Message, Ping, Pong

log = logging.getLogger(__name__)

Addr = tuple[str, int]
RECV_QUEUE_MESSAGES = 256  # messages held for recv() before the reader stops reading

# What a link's codec seals and opens: ``(type, ciphertext)`` tuples on streams
# (:class:`~warpgate.sansio.link_records.RecordCodec`), whole datagrams (``bytes``) on
# UDP (:class:`~warpgate.sansio.link_records.DatagramRecordCodec`).
R = TypeVar("R")


class LinkCodec(Protocol[R]):
    """The part of a record codec a :class:`Link` uses, for its kind of record."""

    max_message: int

    def seal_message(self, data: bytes) -> list[R]: ...

    def seal_control(self, kind: int, body: bytes = b"") -> R: ...

    def open(self, record: R) -> Event | None: ...


class LinkClosed(WarpgateError, ConnectionError):
    """The link is closed (by us, by the peer, or because the connection broke)."""


class MessageTooLarge(WarpgateError, ValueError):
    """A message is larger than the link's ``max_message``."""


@dataclass(frozen=True)
class LinkPath:
    """How a link reaches its peer."""

    method: str  # the traversal method that made it ("direct", "reverse", "inbound", ...)
    transport: Literal["tcp", "udp"]
    local: Addr
    remote: Addr
    relayed: bool = False

    @property
    def kind(self) -> Literal["direct", "relay"]:
        return "relay" if self.relayed else "direct"

    def __str__(self) -> str:
        return (
            f"{self.method} {self.transport} {self.local[0]}:{self.local[1]} -> "
            f"{self.remote[0]}:{self.remote[1]} ({self.kind})"
        )


class Link(Generic[R]):
    """One authenticated, end-to-end encrypted link to a peer.

    ``await link.send(data)`` / ``await link.recv(timeout=...)`` keep message
    boundaries; ``async for msg in link`` reads until the link closes.  ``remote_key``
    is the peer's identity key (verified in the handshake); ``path`` says how the link
    got there.
    """

    def __init__(
        self,
        *,
        codec: LinkCodec[R],
        remote_key: bytes,
        path: LinkPath,
        initiator: bool,
        intent: bytes = b"",
    ) -> None:
        self.remote_key = remote_key
        self.path = path
        self.initiator = initiator
        self.intent = intent
        self.max_message = codec.max_message
        self.trace: list[object] = []  # auto_connect's attempts, for the winner
        # True when the handshake resumed an earlier link's ticket instead of running the
        # full one (see warpgate.sansio.link_resumption).
        self.resumed = False
        self.created = time.monotonic()
        # When the peer was last heard from (any record): the node's keepalive loop
        # pings a quiet link and closes a silent one (see warpgate_plugins.maintenance).
        self.last_received = self.created
        self.last_keepalive = 0.0
        self._codec = codec
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(RECV_QUEUE_MESSAGES)
        self._closed = asyncio.Event()
        self._close_reason = ""
        # Set by the node for inbound links: message callbacks, and its link registry.
        self._on_message: Callable[[bytes, Link], Awaitable[bool]] | None = None
        # Whether _on_message wants this message (None: always): lets messages nobody
        # has a callback for skip the await.
        self._on_message_wanted: Callable[[], bool] | None = None
        self._on_closed: Callable[[Link], None] | None = None
        self._accepted = True
        # Datagram links drop what the reader cannot keep up with instead of pushing back.
        self._drop_when_full = False
        self.messages_dropped = 0
        self._pongs: dict[bytes, asyncio.Future[float]] = {}
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- user API -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def send(self, data: bytes) -> None:
        """Send one message (bytes).  Waits while the transport's buffer is full.

        :raises MessageTooLarge: ``len(data) > link.max_message``.
        :raises LinkClosed: the link is closed.
        """
        if self.closed:
            raise LinkClosed(f"link to {self.remote_key.hex()[:16]} is closed {self._close_reason}")
        if len(data) > self.max_message:
            raise MessageTooLarge(
                f"message of {len(data)} bytes is larger than this link's maximum of "
                f"{self.max_message} (conf key max_message_size); use link.stream() for bulk data"
            )
        self.messages_sent += 1
        self.bytes_sent += len(data)
        await self._send_message(data)

    async def _send_message(self, data: bytes) -> None:
        await self._transmit(self._codec.seal_message(bytes(data)))

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message.

        :raises TimeoutError: nothing arrived within ``timeout`` seconds.
        :raises LinkClosed: the link closed and every message was read.
        """
        if self._queue.empty() and self.closed:
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        if timeout is None:
            item = await self._queue.get()
        else:
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # keep later recv() calls failing fast
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        return item

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except LinkClosed:
                return

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip time to the peer in seconds, measured over the link itself."""
        token = time.monotonic_ns().to_bytes(8, "big")
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pongs[token] = fut
        begin = time.perf_counter()
        try:
            await self._transmit([self._codec.seal_control(PING, token)])
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._pongs.pop(token, None)
        return time.perf_counter() - begin

    def busy(self) -> bool:
        """True while silence from the peer proves nothing: our side is behind (the
        application has not read what arrived, so reading is paused) or our own data is
        still queued ahead of a ping.  The keepalive loop neither pings nor closes then."""
        return self._queue.full()

    def peer_acked_within(self, seconds: float) -> bool:
        """Whether the peer's network stack acknowledged our data within ``seconds``
        (where the transport can tell; see :class:`~warpgate.link.tcp.TcpLink`)."""
        return False

    async def send_keepalive(self) -> None:
        """Send a PING without waiting for its PONG (the keepalive loop's probe: any
        answer, or any other record, counts as a sign of life).  Never raises."""
        self.last_keepalive = time.monotonic()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._transmit([self._codec.seal_control(PING, b"keepalive")])

    def stream(self) -> LinkStream:
        """A byte-stream view of this link for bulk data (see :class:`LinkStream`)."""
        return LinkStream(self)

    async def close(self, reason: str = "") -> None:
        """Tell the peer, then close.  Idempotent."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):  # in place: wait_for would start a task per close
                await self._transmit([self._codec.seal_control(CLOSE, reason.encode()[:200])])
        await self._shutdown(f"(closed by us{': ' + reason if reason else ''})")

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def statistics(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "age": time.monotonic() - self.created,
            "closed": self.closed,
        }

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Link {self.remote_key.hex()[:16]} {self.path} {state}>"

    # -- for transports --------------------------------------------------------------

    async def _transmit(self, records: list[R]) -> None:
        raise NotImplementedError

    async def _shutdown(self, reason: str) -> None:
        raise NotImplementedError

    def _mark_closed(self, reason: str) -> None:
        if self.closed:
            return
        self._close_reason = reason
        self._closed.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        if self._queue.full():
            # Make room for the end marker so a waiting recv() wakes; the dropped
            # message was never going to be read on a full, closed link anyway.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self._queue.put_nowait(None)
        for fut in self._pongs.values():
            if not fut.done():
                fut.set_exception(LinkClosed("link closed"))
        if self._on_closed is not None:
            self._on_closed(self)

    async def _handle_record(self, record: R) -> bool:
        """Process one received record; False when the peer closed the link."""
        event = self._codec.open(record)
        if self._is_sign_of_life(event):
            self.last_received = time.monotonic()
        if event is None:
            return True
        return await self._handle_event(event)

    def _receive_now(self, records: list[R]) -> list[object]:
        """Open ``records`` and deliver every message that needs no await, right in the
        transport's callback (saving the reader task a loop turn per message).

        Returns what the reader task must still handle, in order: from the first event
        that needs an await (already opened, so it is passed as an event) onward, or a
        :class:`_ReceiveFailed` when a record fails to open."""
        self.last_received = time.monotonic()
        on_message = self._on_message
        if on_message is not None and self._on_message_wanted is not None:
            if not self._on_message_wanted():
                on_message = None
        queue = self._queue
        for index, record in enumerate(records):
            try:
                event = self._codec.open(record)
            except LinkProtocolError as exc:
                return [_ReceiveFailed(exc)]
            if event is None:
                continue
            if type(event) is Message and on_message is None and not queue.full():
                self.messages_received += 1
                self.bytes_received += len(event.data)
                queue.put_nowait(event.data)
                continue
            return [event, *records[index + 1 :]]
        return []

    def _is_sign_of_life(self, event: object) -> bool:
        """Whether a record that opened to ``event`` shows the peer is alive.  On a
        stream every record that opens is authentic (``None`` is part of a message)."""
        return True

    async def _handle_item(self, item: object) -> bool:
        """One item a transport queued for the reader task: a record, an event
        :meth:`_receive_now` opened, or a failure to raise in the reader."""
        if isinstance(item, tuple):
            return await self._handle_record(item)  # type: ignore[arg-type]
        if isinstance(item, _ReceiveFailed):
            raise item.error
        return await self._handle_event(item)

    async def _handle_event(self, event: object) -> bool:
        if isinstance(event, Message):
            self.messages_received += 1
            self.bytes_received += len(event.data)
            consumed = False
            if self._on_message is not None:
                consumed = await self._on_message(event.data, self)
            if not consumed:
                if not self._queue.full():
                    self._queue.put_nowait(event.data)  # the common case: no await
                elif self._drop_when_full:
                    self.messages_dropped += 1
                else:
                    await self._queue.put(event.data)
            return True
        if isinstance(event, Ping):
            await self._transmit([self._codec.seal_control(PONG, event.body)])
            return True
        if isinstance(event, Pong):
            fut = self._pongs.get(event.body)
            if fut is not None and not fut.done():
                fut.set_result(time.monotonic())
            return True
        if isinstance(event, Closed):
            self._close_reason = f"(closed by peer{': ' + event.reason if event.reason else ''})"
            return False
        raise LinkProtocolError(f"unexpected event {event!r}")


@dataclass(frozen=True)
class _ReceiveFailed:
    """A record that failed to open in the transport callback; the reader raises it."""

    error: LinkProtocolError


class LinkStream:
    """Bytes in, bytes out, over a link's messages: for bulk data.

    ``write`` cuts data into messages of at most ``chunk`` bytes; ``read`` returns bytes
    from the messages received, as a socket would.  Don't mix ``stream()`` reads with
    ``recv()`` on the same link.
    """

    def __init__(self, link: Link, chunk: int = 65536) -> None:
        self.link = link
        self.chunk = min(chunk, link.max_message)
        self._buffer = bytearray()
        self._eof = False

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(data), self.chunk):
            await self.link.send(bytes(view[start : start + self.chunk]))

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``-1``: whatever is buffered or the next message);
        ``b""`` at the end of the stream (link closed)."""
        if not self._buffer and not self._eof:
            try:
                self._buffer += await self.link.recv()
            except LinkClosed:
                self._eof = True
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            try:
                self._buffer += await self.link.recv()
            except LinkClosed:
                self._eof = True
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data
