"""An asyncio TURN client over UDP (RFC 8656): one allocation on one socket.

The client owns a UDP socket *connected* to the server, so an ICMP port-unreachable
(the server process is gone) surfaces at once as an error instead of a silent loss.
Protocol bytes come from :mod:`warpgate.sansio.turn`; this module only adds sockets,
retransmission and timers:

* :meth:`TurnClient.allocate` runs the long-term credential dance (401 → realm and
  nonce → signed request; 438 → new nonce) and returns the relayed address;
* a maintenance task refreshes the allocation before it expires, refreshes every
  permission and channel binding before theirs do (RFC 8656: 300 s and 600 s), and
  sends a Refresh as a keepalive when the server has been silent for ``keepalive``
  seconds, so a server that went away is noticed in bounded time;
* :meth:`send` relays a datagram to a peer (ChannelData once a channel is bound, a Send
  indication before); ``on_data(peer, data)`` receives what peers send.

When the allocation is lost (server gone, refresh refused) the client closes and calls
``on_closed(reason)`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal

from warpgate.errors import WarpgateError
from warpgate.net.hostport import format_hostport
from warpgate.sansio import stun, turn
from warpgate.sansio.stun import StunClass, StunError, StunMessage
from warpgate.sansio.turn import Allocation, LongTermAuth, TurnError, TurnMethod

log = logging.getLogger(__name__)

Addr = tuple[str, int]
DataHandler = Callable[[Addr, bytes], None]

#: Refresh this long before a lifetime ends (RFC 8656 suggests about a minute).
REFRESH_MARGIN = 60.0
#: How often the maintenance task wakes up at most (seconds).
MAINTENANCE_TICK = 1.0
MAX_TCP_BUFFER = 65536 + stun.HEADER_SIZE  # one STUN message at most
_MAX_AUTH_ROUNDS = 5  # 401 + a few 438s; more means a broken server


class TurnClosed(WarpgateError, ConnectionError):
    """The TURN client is closed (by us, or because the allocation was lost)."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: TurnClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.client._datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.client._socket_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.client._socket_error(exc)


class _TcpProtocol(asyncio.Protocol):
    """STUN over TCP (RFC 8656 / RFC 6062 control connection): messages are framed by
    their own header; a peer that breaks the framing ends the connection."""

    def __init__(self, client: TurnClient) -> None:
        self.client = client
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= stun.HEADER_SIZE:
            try:
                size = stun.message_length(bytes(buf[: stun.HEADER_SIZE]))
            except StunError as exc:
                self.client._socket_error(ConnectionResetError(f"bad STUN framing: {exc}"))
                buf.clear()
                return
            if len(buf) < size:
                if len(buf) > MAX_TCP_BUFFER:
                    self.client._socket_error(ConnectionResetError("oversized message"))
                    buf.clear()
                return
            message = bytes(buf[:size])
            del buf[:size]
            self.client._datagram(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._socket_error(
            exc if isinstance(exc, ConnectionError) else ConnectionResetError("connection closed")
        )


class TurnClient:
    """One TURN allocation over UDP, or (``protocol="tcp"``) a TCP allocation (RFC 6062)
    over a TCP control connection.

    :param server: the server's ``(ip, port)``.
    :param timeout: the longest one request may take, retransmissions included.
    :param keepalive: send a Refresh after this many seconds without hearing from the
        server; with ``timeout`` it bounds how long a vanished server goes unnoticed.
    """

    def __init__(
        self,
        server: Addr,
        username: str,
        password: str,
        *,
        local_ip: str | None = None,
        rto: float = 0.25,
        timeout: float = 5.0,
        keepalive: float = 10.0,
        lifetime: int = 600,
        on_data: DataHandler | None = None,
        on_closed: Callable[[str], None] | None = None,
        protocol: Literal["udp", "tcp"] = "udp",
        on_connection_attempt: Callable[[int, Addr], None] | None = None,
    ) -> None:
        self.server = server
        self.protocol = protocol
        #: RFC 6062: a peer connected to our relayed address: ``(connection id, peer)``.
        self.on_connection_attempt = on_connection_attempt
        self.auth = LongTermAuth(username, password)
        self.local_ip = local_ip
        self.rto = rto
        self.timeout = timeout
        self.keepalive = keepalive
        self.lifetime = lifetime
        self.on_data = on_data
        self.on_closed = on_closed
        self.allocation: Allocation | None = None
        self.local: Addr | None = None
        self.closed = False
        self.close_reason = ""
        self.dropped = 0
        self.refreshes = 0
        self._transport: asyncio.DatagramTransport | asyncio.Transport | None = None
        self._pending: dict[bytes, asyncio.Future[tuple[StunMessage, bytes]]] = {}
        self._socket_failure: Exception | None = None
        self._expires = 0.0
        self._permissions: dict[str, float] = {}  # peer IP -> when it was (re)installed
        self._channels: dict[Addr, int] = {}
        self._channel_peers: dict[int, Addr] = {}
        self._channel_times: dict[int, float] = {}
        self._next_channel = turn.CHANNEL_MIN
        self._last_heard = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------

    @property
    def relayed(self) -> Addr:
        if self.allocation is None:
            raise TurnClosed("no allocation yet: call allocate() first")
        return self.allocation.relayed

    async def allocate(self) -> Allocation:
        """Open the socket and allocate a relayed address (once).

        :raises TurnError: the server refused (wrong credentials: code 401; quota
            reached: 486), or did not answer within ``timeout``.
        """
        if self.allocation is not None:
            return self.allocation
        loop = asyncio.get_running_loop()
        local = (self.local_ip, 0) if self.local_ip else None
        transport: asyncio.DatagramTransport | asyncio.Transport
        try:
            if self.protocol == "tcp":
                transport, _ = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _TcpProtocol(self), self.server[0], self.server[1], local_addr=local
                    ),
                    self.timeout,
                )
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=local, remote_addr=self.server
                )
        except (OSError, TimeoutError) as exc:
            raise TurnError(f"cannot reach TURN server {_fmt(self.server)}: {exc}") from exc
        self._transport = transport
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1])
        try:
            proto = turn.PROTO_TCP if self.protocol == "tcp" else turn.PROTO_UDP
            answer = await self._request(turn.allocate(protocol=proto, lifetime=self.lifetime))
            self.allocation = turn.parse_allocation(answer)
        except BaseException as exc:
            await self.aclose(f"allocation failed: {exc}")
            raise
        self._expires = time.monotonic() + self.allocation.lifetime
        self._task = asyncio.create_task(self._maintain(), name=f"turn {_fmt(self.server)}")
        log.info(
            "TURN allocation on %s: relayed %s, mapped %s, lifetime %d s",
            _fmt(self.server),
            _fmt(self.allocation.relayed),
            _fmt(self.allocation.mapped) if self.allocation.mapped else "?",
            self.allocation.lifetime,
        )
        return self.allocation

    async def create_permission(self, peers: Iterable[Addr]) -> None:
        """Let ``peers``' IP addresses send to the relayed address (kept refreshed)."""
        peers = list(peers)
        await self._request(turn.create_permission(peers))
        now = time.monotonic()
        for ip, _port in peers:
            self._permissions[ip] = now

    async def bind_channel(self, peer: Addr) -> int:
        """Bind a channel to ``peer`` (kept refreshed); returns its number.  Data to and
        from the peer then uses ChannelData: 4 bytes of overhead instead of 36."""
        peer = (peer[0], int(peer[1]))
        channel = self._channels.get(peer)
        if channel is None:
            if self._next_channel > turn.CHANNEL_MAX:
                raise TurnError("no channel numbers left on this allocation")
            channel = self._next_channel
            self._next_channel += 1
        # The server may relay ChannelData as soon as it has bound the channel, which
        # can be before our task sees the answer: accept inbound ChannelData on it from
        # now on.  Outbound uses the channel only once it is confirmed (RFC 8656 12).
        self._channel_peers[channel] = peer
        try:
            await self._request(turn.channel_bind(channel, peer))
        except BaseException:
            if self._channels.get(peer) != channel:
                self._channel_peers.pop(channel, None)
            raise
        now = time.monotonic()
        self._channels[peer] = channel
        self._channel_times[channel] = now
        self._permissions[peer[0]] = now  # a channel binding installs the permission too
        return channel

    def send(self, peer: Addr, data: bytes) -> None:
        """Relay one datagram to ``peer`` (dropped silently, as UDP would, when the
        server's buffers are full; :class:`TurnClosed` when the client is closed)."""
        if self.closed or self._transport is None:
            raise TurnClosed(f"TURN client closed {self.close_reason}".strip())
        if self.protocol == "tcp":
            raise TurnError("a TCP allocation relays over data connections, not send()")
        channel = self._channels.get(peer)
        if channel is not None:
            self._write(turn.encode_channel_data(channel, data))
        else:
            self._write(stun.encode(turn.send_indication(peer, data), fingerprint=False))

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        if self.protocol == "tcp":
            self._transport.write(data)  # type: ignore[union-attr]
        else:
            self._transport.sendto(data)  # type: ignore[union-attr]

    def is_closing(self) -> bool:
        return self.closed or self._transport is None or self._transport.is_closing()

    async def aclose(self, reason: str = "closed") -> None:
        """Release the allocation (Refresh with lifetime 0, best effort) and close."""
        if self.closed:
            return
        try:
            if self.allocation is not None and self._socket_failure is None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(min(self.timeout, 1.0)):
                        await self._request(turn.refresh(0), tries=2)
        finally:
            # Even when cancelled half-way (the node is closing), the socket is closed.
            self._close(reason)
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await self._task

    # -- transactions ------------------------------------------------------------------

    async def _request(self, msg: StunMessage, *, tries: int | None = None) -> StunMessage:
        """Send a request until answered, through the credential dance; the answer is
        a success (else :class:`TurnError`)."""
        for _round in range(_MAX_AUTH_ROUNDS):
            if self.closed:
                raise TurnClosed(f"TURN client closed {self.close_reason}".strip())
            msg = StunMessage(msg.method, msg.cls, stun.new_transaction_id(), msg.attributes)
            signed = self.auth.ready
            answer, raw = await self._transact(self.auth.sign(msg), msg.transaction_id, tries)
            if not self.auth.check_response(raw):
                # A forged or corrupted answer: treat as not received (the caller's
                # timeout applies), and say so in the log.
                log.warning(
                    "TURN %s: answer with a bad MESSAGE-INTEGRITY ignored", _fmt(self.server)
                )
                raise TurnError(f"TURN server {_fmt(self.server)} sent an unauthentic answer")
            if answer.cls == StunClass.SUCCESS:
                if signed:
                    self.auth.accepted()
                return answer
            if not self.auth.accept_error(answer, was_signed=signed):
                raise turn.describe_error(answer)
        raise TurnError(f"TURN server {_fmt(self.server)}: too many authentication rounds")

    async def _transact(
        self, data: bytes, tid: bytes, tries: int | None
    ) -> tuple[StunMessage, bytes]:
        assert self._transport is not None
        sends, _ = stun.retransmission_schedule(self.rto, rc=tries or 7)
        if self.protocol == "tcp":
            sends = (0.0,)  # a reliable transport: one send, then wait (RFC 8489 6.2.2)
        fut: asyncio.Future[tuple[StunMessage, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[tid] = fut
        begin = time.monotonic()
        try:
            for index, at in enumerate(sends):
                answer = await self._answer_within(fut, at - (time.monotonic() - begin))
                if answer is not None:
                    return answer
                if time.monotonic() - begin >= self.timeout:
                    break
                self._write(data)
                if index == len(sends) - 1:
                    break
            answer = await self._answer_within(fut, self.timeout - (time.monotonic() - begin))
            if answer is not None:
                return answer
            raise TurnError(
                f"TURN server {_fmt(self.server)} did not answer within {self.timeout:g} s"
            )
        finally:
            self._pending.pop(tid, None)
            if not fut.done():
                fut.cancel()

    async def _answer_within(
        self, fut: asyncio.Future[tuple[StunMessage, bytes]], seconds: float
    ) -> tuple[StunMessage, bytes] | None:
        """The answer if it is there within ``seconds``, else ``None``; a socket that
        failed meanwhile raises at once (waiting longer cannot help)."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await asyncio.shield(fut)
        if fut.done():
            return fut.result()
        if self._socket_failure is not None:
            raise TurnError(f"TURN server {_fmt(self.server)} unreachable: {self._socket_failure}")
        return None

    # -- receiving -----------------------------------------------------------------------

    def _datagram(self, data: bytes) -> None:
        self._last_heard = time.monotonic()
        try:
            if turn.is_channel_data(data):
                channel, payload = turn.decode_channel_data(data)
                peer = self._channel_peers.get(channel)
                if peer is None:
                    self.dropped += 1
                    return
                self._deliver(peer, payload)
                return
            if not stun.is_stun(data):
                self.dropped += 1
                return
            msg = stun.decode(data)
        except StunError as exc:
            self.dropped += 1
            log.debug("TURN %s: dropped a malformed datagram: %s", _fmt(self.server), exc)
            return
        if msg.cls in (StunClass.SUCCESS, StunClass.ERROR):
            fut = self._pending.get(msg.transaction_id)
            if fut is not None and not fut.done():
                fut.set_result((msg, bytes(data)))
            return
        if msg.cls == StunClass.INDICATION and msg.method == TurnMethod.CONNECTION_ATTEMPT:
            try:
                conn_id = turn.parse_connection_id(msg)
            except TurnError:
                conn_id = None
            attempt_peer = msg.get(stun.Attr.XOR_PEER_ADDRESS)
            if (
                conn_id is None
                or not isinstance(attempt_peer, tuple)
                or self.on_connection_attempt is None
            ):
                self.dropped += 1
                return
            try:
                self.on_connection_attempt(conn_id, (str(attempt_peer[0]), int(attempt_peer[1])))
            except Exception:
                log.exception("TURN connection-attempt handler failed")
            return
        if msg.cls == StunClass.INDICATION and msg.method == TurnMethod.DATA:
            try:
                peer, payload = turn.parse_data_indication(msg)
            except TurnError as exc:
                self.dropped += 1
                log.debug("TURN %s: %s", _fmt(self.server), exc)
                return
            self._deliver(peer, payload)
            return
        self.dropped += 1

    def _deliver(self, peer: Addr, payload: bytes) -> None:
        if self.on_data is None:
            self.dropped += 1
            return
        try:
            self.on_data(peer, payload)
        except Exception:  # a failing consumer must not take the relay down
            log.exception("TURN data handler failed")

    def _socket_error(self, exc: Exception) -> None:
        if self.closed:
            return  # our own close (a TCP connection reports it as lost)
        log.info("TURN %s: socket error: %s", _fmt(self.server), exc)
        if isinstance(exc, ConnectionError):
            self._socket_failure = exc
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(
                        TurnError(f"TURN server {_fmt(self.server)} unreachable: {exc}")
                    )
            self._wake.set()

    # -- maintenance ---------------------------------------------------------------------

    async def _maintain(self) -> None:
        try:
            while not self.closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(MAINTENANCE_TICK):
                        await self._wake.wait()
                self._wake.clear()
                await self._tick(time.monotonic())
        except (TurnError, OSError) as exc:
            self._close(f"relay lost: {exc}")
        except asyncio.CancelledError:
            raise

    async def _tick(self, now: float) -> None:
        assert self.allocation is not None
        if self._socket_failure is not None:
            raise TurnError(f"TURN server {_fmt(self.server)} unreachable: {self._socket_failure}")
        margin = min(REFRESH_MARGIN, self.allocation.lifetime / 4)
        if now >= self._expires - margin or now - self._last_heard >= self.keepalive:
            answer = await self._request(turn.refresh(self.lifetime))
            granted = turn.parse_lifetime(answer) or self.lifetime
            self.refreshes += 1
            self._expires = time.monotonic() + granted
        stale = [
            ip
            for ip, at in self._permissions.items()
            if now - at >= turn.PERMISSION_LIFETIME - REFRESH_MARGIN
        ]
        if stale:
            await self.create_permission((ip, 0) for ip in stale)
        for channel, at in list(self._channel_times.items()):
            if now - at >= turn.CHANNEL_LIFETIME - REFRESH_MARGIN:
                await self.bind_channel(self._channel_peers[channel])

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = f"({reason})"
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(TurnClosed(f"TURN client closed ({reason})"))
        if self._transport is not None:
            self._transport.close()
        if self.allocation is not None:
            log.info("TURN allocation %s closed: %s", _fmt(self.allocation.relayed), reason)
        if self.on_closed is not None:
            try:
                self.on_closed(reason)
            except Exception:
                log.exception("TURN on_closed callback failed")


def _fmt(addr: Addr | None) -> str:
    return "?" if addr is None else format_hostport(*addr)
