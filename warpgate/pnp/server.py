"""The PNP name server: UDP and TCP on one port, storage behind :class:`NameStore`.

Each request is answered with one response; bad input gets a specific error status and
a log line, and never stops the server.  Checks, in order: per-IP rate limit
(RATE_LIMITED), structure and size (MALFORMED / TOO_LARGE / BAD_VERSION), the owner's
signature (BAD_SIGNATURE), freshness of the signed timestamp (STALE), the nonce cache
(REPLAY), then the store's atomic decision: another key owns the name (NAME_TAKEN), not
newer than the stored record (STALE), per-IP name quota (QUOTA).

TCP frames every packet with a 2-byte big-endian length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from warpgate.net.scope import client_key
from warpgate.pnp.store import NameStore, PutOutcome, Record
from warpgate.sansio.envelope import EnvelopeReplayed, ReplayCache
from warpgate.sansio.pnp import (
    MAX_PACKET,
    Op,
    PnpError,
    Request,
    Response,
    Status,
    decode_request,
    encode_response,
    peek_request_id,
    verify_request,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 5300
_FRAME = struct.Struct(">H")

_OUTCOME_STATUS = {
    PutOutcome.STORED: Status.OK,
    PutOutcome.TAKEN: Status.NAME_TAKEN,
    PutOutcome.STALE: Status.STALE,
    PutOutcome.QUOTA: Status.QUOTA,
    PutOutcome.NOT_FOUND: Status.NOT_FOUND,
}


class RateLimiter:
    """A token bucket per client, bounded to ``max_clients`` (least recently seen evicted)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.pop(client, (self.burst, now))
        # max(0, ...): a wall clock stepped back (NTP) must not lock every client out
        # for as long as the step
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: PnpServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self.server
        if server._udp_inflight >= server.max_inflight:
            # the store cannot keep up (or a flood): drop rather than queue without
            # bound; clients retry, and the answer to a retry is the same
            server.dropped += 1
            if server.dropped % 1000 == 1:
                log.warning("PNP: overloaded, dropping requests (%d so far)", server.dropped)
            return
        server._udp_inflight += 1
        server._spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.server.handle(data, addr[0])
        finally:
            self.server._udp_inflight -= 1
        if reply[2] == Status.RATE_LIMITED and not self.server._may_refuse_udp(addr[0]):
            return  # told less than a second ago: stay silent (see _may_refuse_udp)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("PNP UDP error: %s", exc)


class PnpServer:
    """A PNP server on ``host:port`` (UDP and TCP; ``port=0`` picks a free port)."""

    def __init__(
        self,
        store: NameStore,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        window: float = 120.0,
        min_ttl: int = 60,
        max_ttl: int = 30 * 86400,
        names_per_ip: int = 20,
        rate: float = 50.0,
        burst: float = 100.0,
        replay_cache: int = 100_000,
        prune_interval: float = 600.0,
        tcp_idle: float = 30.0,
        max_inflight: int = 4096,
        max_tcp: int = 1024,
        max_tcp_per_ip: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.host, self.port = host, port
        self.window = window
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        self.names_per_ip = names_per_ip
        self.limiter = RateLimiter(rate, burst)
        self.replays = ReplayCache(window=2 * window, max_entries=replay_cache)
        self.prune_interval = prune_interval
        self.tcp_idle = tcp_idle
        # bounds on what a flood can make the server hold: UDP requests being answered,
        # TCP connections in all and per client address (IPv4 address or IPv6 /64)
        self.max_inflight = max_inflight
        self.max_tcp, self.max_tcp_per_ip = max_tcp, max_tcp_per_ip
        self.dropped = 0
        self._udp_inflight = 0
        self._tcp_clients: dict[str, int] = {}
        self._refused_udp: OrderedDict[str, float] = OrderedDict()
        self._tcp_total = 0
        self.clock = clock
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)

    def _may_refuse_udp(self, ip: str) -> bool:
        """Whether to send a RATE_LIMITED answer over UDP: once a second per client.

        A UDP source address can be forged, and a refusal (about 80 bytes) is larger than
        the smallest request: answering every datagram over the rate would let anyone
        reflect answers at a victim as fast as they can send.  One refusal a second still
        tells an honest client to slow down (TCP, which cannot be forged, always answers).
        """
        key, now = client_key(ip), self.clock()
        last = self._refused_udp.pop(key, None)
        if last is not None and 0 <= now - last < 1.0:
            self._refused_udp[key] = last
            return False
        self._refused_udp[key] = now
        while len(self._refused_udp) > self.limiter.max_clients:
            self._refused_udp.popitem(last=False)
        return True

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> PnpServer:
        """Open the store and bind UDP and TCP on the same port."""
        await self.store.open()
        loop = asyncio.get_running_loop()
        try:
            for attempt in range(10):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self.host, self.port)
                )
                port = transport.get_extra_info("sockname")[1]
                try:
                    self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
                except OSError:
                    transport.close()
                    if self.port or attempt == 9:
                        raise
                    continue
                self._udp = transport
                self.port = port
                break
        except BaseException:
            await self.store.aclose()
            raise
        self._spawn(self._prune_loop())
        log.info("PNP server on %s port %d (UDP and TCP)", self.host, self.port)
        return self

    async def aclose(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 5.0)
            self._tcp = None
        await self.store.aclose()

    async def __aenter__(self) -> PnpServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                removed = await self.store.prune(int(self.clock() * 1000))
                if removed:
                    log.info("PNP: pruned %d expired names", removed)
            except Exception:
                log.exception("PNP: pruning failed")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = client_key(peer[0])
        held = self._tcp_clients.get(client, 0)
        total = self._tcp_total
        if held >= self.max_tcp_per_ip or total >= self.max_tcp:
            # over a bound: close at once (the client still has UDP, or retries later)
            log.info("PNP: refusing a TCP connection from %s (%d open from it, %d in all)",
                     peer[0], held, total)  # fmt: skip
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            return
        self._tcp_clients[client] = held + 1
        self._tcp_total += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle)
                (size,) = _FRAME.unpack(head)
                data = await asyncio.wait_for(reader.readexactly(size), self.tcp_idle)
                reply = await self.handle(data, peer[0])
                writer.write(_FRAME.pack(len(reply)) + reply)
                await asyncio.wait_for(writer.drain(), self.tcp_idle)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_total -= 1
            left = self._tcp_clients.get(client, 1) - 1
            if left > 0:
                self._tcp_clients[client] = left
            else:
                self._tcp_clients.pop(client, None)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    # -- requests -----------------------------------------------------------------------

    async def handle(self, data: bytes, ip: str) -> bytes:
        """The response to one request packet from ``ip``."""
        try:
            resp = await self._handle(data, ip)
        except Exception:
            log.exception("PNP: internal error handling a request from %s", ip)
            resp = Response(Status.INTERNAL, peek_request_id(data), message="internal error")
        self.counts[resp.status] += 1
        if resp.status == Status.RATE_LIMITED:
            log.debug("PNP: rate limited %s", ip)
        elif resp.status not in (Status.OK, Status.NOT_FOUND):
            log.info("PNP: %s from %s: %s", resp.status.name, ip, resp.message)
        return encode_response(resp)

    async def _handle(self, data: bytes, ip: str) -> Response:
        now = self.clock()
        rid = peek_request_id(data)
        client = client_key(ip)
        if not self.limiter.allow(client, now):
            return Response(Status.RATE_LIMITED, rid, message="too many requests; slow down")
        if len(data) > MAX_PACKET:
            return Response(Status.TOO_LARGE, rid, message=f"packet over {MAX_PACKET} bytes")
        try:
            req = decode_request(data)
            verify_request(req)
        except PnpError as exc:
            return Response(exc.status, rid, message=str(exc))
        now_ms = int(now * 1000)
        if req.op == Op.GET:
            record = await self.store.get(req.name, now_ms)
            if record is None:
                return Response(Status.NOT_FOUND, rid, message=f"no name {req.name!r}")
            return Response(Status.OK, rid, record.expires_ms, record.owner, record.value)
        if abs(req.timestamp_ms / 1000 - now) > self.window:
            return Response(
                Status.STALE, rid, message=f"timestamp is more than {self.window:g} s off"
            )
        try:
            self.replays.check_and_add(req.owner, req.nonce, req.timestamp_ms / 1000, now)
        except EnvelopeReplayed:
            return Response(Status.REPLAY, rid, message="request was already received")
        if req.op == Op.DELETE:
            outcome = await self.store.delete(req.name, req.owner, req.timestamp_ms, now_ms)
            return Response(_OUTCOME_STATUS[outcome], rid, message=_explain(outcome, req))
        return await self._put(req, client, now_ms)

    async def _put(self, req: Request, client: str, now_ms: int) -> Response:
        ttl = min(max(req.ttl, self.min_ttl), self.max_ttl)
        record = Record(req.name, req.owner, req.value, req.timestamp_ms, now_ms + ttl * 1000)
        outcome, stored = await self.store.put(
            record, client=client, now_ms=now_ms, quota=self.names_per_ip
        )
        status = _OUTCOME_STATUS[outcome]
        if status == Status.OK:
            return Response(Status.OK, req.request_id, record.expires_ms, record.owner)
        expires = stored.expires_ms if stored is not None and status == Status.NAME_TAKEN else 0
        return Response(status, req.request_id, expires, message=_explain(outcome, req))


def _explain(outcome: PutOutcome, req: Request) -> str:
    return {
        PutOutcome.STORED: "",
        PutOutcome.TAKEN: f"the name {req.name!r} belongs to another key",
        PutOutcome.STALE: "not newer than the stored record",
        PutOutcome.QUOTA: "this address holds too many names",
        PutOutcome.NOT_FOUND: f"no name {req.name!r}",
    }[outcome]
