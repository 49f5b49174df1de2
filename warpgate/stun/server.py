"""An asyncio STUN server (RFC 8489 Binding, with the RFC 5780 NAT-behaviour tests).

Given only a primary address it is a plain Binding server: it answers with
XOR-MAPPED-ADDRESS and MAPPED-ADDRESS, RESPONSE-ORIGIN, SOFTWARE and FINGERPRINT, and,
as RFC 5780 section 6.1 requires of a server without a second address, it sends no
OTHER-ADDRESS and answers any CHANGE-REQUEST with 420 (Unknown Attribute).

Given an alternate IP (and port) it binds the four UDP sockets RFC 5780 needs,
``{primary ip, alternate ip} x {primary port, alternate port}``, names the diagonal
opposite of the receiving socket in OTHER-ADDRESS, and answers a CHANGE-REQUEST from the
socket with the changed IP and/or port.  RESPONSE-PORT (RFC 5780) sends the answer to
that port of the requesting IP.

The same addresses also listen on TCP (STUN framed by its own header); a CHANGE-REQUEST
that asks for a change cannot be honoured on a connection and gets 420 there.

Hardening: datagrams that are not STUN or do not decode are dropped silently (counted);
requests with unknown comprehension-required attributes get 420 with
UNKNOWN-ATTRIBUTES; every source IP has a token bucket (``rate`` per second, ``burst``),
and requests beyond it are dropped, so the server cannot be used to flood a spoofed
victim; TCP connections are capped in number, idle time and requests.  PADDING (RFC
5780) is not echoed, since it would let a small request ask for a large answer.

The wire format is :mod:`warpgate.sansio.stun`; the answering logic is
:meth:`StunServer.respond` (no I/O), the rest is sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from warpgate._version import __version__
from warpgate.config import dict_child
from warpgate.net.hostport import format_hostport
from warpgate.sansio import stun
from warpgate.sansio.stun import (
    Attr,
    AttrValue,
    ChangeRequest,
    ErrorCode,
    StunClass,
    StunMessage,
    StunMethod,
)

__all__ = ["STUN_SERVER_CONF", "Reply", "StunServer", "TokenBucketLimiter"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
Transport = Literal["udp", "tcp"]

STUN_SERVER_CONF: Final[dict[str, Any]] = {
    "rate": 10.0,  # requests per second per source IP (token refill rate)
    "burst": 40,  # token bucket size: requests a source may send at once
    "max_sources": 65536,  # source IPs tracked by the limiter; the least recent is forgotten
    "tcp": True,  # also listen on TCP on the same addresses
    "max_tcp_connections": 256,  # concurrent TCP connections; more are closed at once
    "tcp_idle_timeout": 10.0,  # seconds a TCP connection may wait for its next request
    "tcp_max_requests": 100,  # requests per TCP connection, then it is closed
    "max_message_size": 2048,  # bytes; larger requests are dropped as malformed
    "software": f"warpgate {__version__}",  # SOFTWARE attribute; "" or None: none sent
}

_BIND_ATTEMPTS: Final = 20  # port-0 binds retried when the port is taken on another address


class TokenBucketLimiter:
    """One token bucket per key (a source IP), sans-IO: the caller passes ``now``.

    A bucket holds at most ``burst`` tokens and refills at ``rate`` per second; each
    :meth:`allow` takes one.  At most ``max_keys`` buckets are kept (least recently used
    forgotten first), so memory is bounded whatever the sources.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = int(max_keys)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class Reply:
    """What to send for one request: ``data`` from local socket ``origin`` to ``dest``."""

    origin: Address
    dest: Address
    data: bytes


def _norm_ip(ip: str) -> str:
    return str(ipaddress.ip_address(ip.split("%", 1)[0]))


def _fmt(addr: Address) -> str:
    return format_hostport(addr[0], addr[1])


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, here: Address) -> None:
        self.server = server
        self.here = here

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.here = (self.here[0], int(transport.get_extra_info("sockname")[1]))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._on_datagram(data, (str(addr[0]), int(addr[1])), self.here)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (port unreachable, say): nothing to do.
        self.server._stats["send_errors"] += 1
        log.debug("stun server %s: %s", _fmt(self.here), exc)


class StunServer:
    """A STUN server on ``primary`` (ip, port; port 0 picks a free one).

    With ``alternate_ip`` it answers RFC 5780 behaviour tests; ``alternate_port``
    defaults to the primary port + 1 (any free port when the primary port is 0).
    ``conf`` overrides :data:`STUN_SERVER_CONF`.

    Use ``async with StunServer(("127.0.0.1", 0)) as server:`` or :meth:`start` and
    :meth:`close`.  :meth:`start` raises :class:`OSError` when an address cannot be bound.
    """

    def __init__(
        self,
        primary: Address,
        alternate_ip: str | None = None,
        alternate_port: int | None = None,
        *,
        conf: Mapping[str, Any] | None = None,
    ) -> None:
        unknown = set(conf or {}) - set(STUN_SERVER_CONF)
        if unknown:
            raise ValueError(f"unknown STUN server conf keys: {', '.join(sorted(unknown))}")
        self.conf = dict_child(conf or {}, STUN_SERVER_CONF)
        ip, port = primary
        self._ip = _norm_ip(ip)
        self._port = int(port)
        if not 0 <= self._port <= 0xFFFF:
            raise ValueError(f"not a port: {port!r}")
        self._alt_ip = _norm_ip(alternate_ip) if alternate_ip is not None else None
        if self._alt_ip is None and alternate_port is not None:
            raise ValueError("an alternate port needs an alternate IP (RFC 5780 uses both)")
        if self._alt_ip is not None:
            primary_ip = ipaddress.ip_address(self._ip)
            alt = ipaddress.ip_address(self._alt_ip)
            if primary_ip.is_unspecified or alt.is_unspecified:
                raise ValueError("RFC 5780 needs two specific IPs, not a wildcard address")
            if primary_ip.version != alt.version or primary_ip == alt:
                raise ValueError("the alternate IP must differ from the primary, same family")
            if alternate_port is None:
                alternate_port = self._port + 1 if 0 < self._port < 0xFFFF else 0
            if not 0 <= alternate_port <= 0xFFFF or (
                alternate_port and alternate_port == self._port
            ):
                raise ValueError(f"bad alternate port {alternate_port!r}")
        self._alt_port_wanted = alternate_port or 0
        self._family = (
            socket.AF_INET6 if ipaddress.ip_address(self._ip).version == 6 else socket.AF_INET
        )
        self._wildcard = ipaddress.ip_address(self._ip).is_unspecified
        self._limiter = TokenBucketLimiter(
            float(self.conf["rate"]), float(self.conf["burst"]), int(self.conf["max_sources"])
        )
        self._stats: Counter[str] = Counter()
        self._udp: dict[Address, asyncio.DatagramTransport] = {}
        self._tcp: list[asyncio.Server] = []
        self._tcp_tasks: set[asyncio.Task[Any]] = set()
        self._p1 = self._port
        self._p2 = 0
        self._started = False

    # ------------------------------------------------------------------ properties

    @property
    def rfc5780(self) -> bool:
        """Whether the server has a second IP and port (answers CHANGE-REQUEST)."""
        return self._alt_ip is not None

    @property
    def primary(self) -> Address:
        """The primary (ip, port), with the bound port once started."""
        return (self._ip, self._p1)

    @property
    def other_address(self) -> Address | None:
        """The alternate (ip, port) named in OTHER-ADDRESS of answers to the primary."""
        if self._alt_ip is None:
            return None
        return (self._alt_ip, self._p2)

    @property
    def addresses(self) -> list[Address]:
        """Every address the server listens on (UDP, and TCP unless disabled)."""
        return list(self._udp)

    def statistics(self) -> dict[str, int]:
        """Counters: requests and answers by transport, errors sent, malformed and
        rate-limited input, TCP connections, tracked sources."""
        stats = {
            key: 0
            for key in (
                "udp_received",
                "tcp_received",
                "malformed",
                "rate_limited",
                "ignored",
                "success",
                "error_400",
                "error_420",
                "send_errors",
                "tcp_accepted",
                "tcp_refused",
            )
        }
        stats.update(self._stats)
        stats["tcp_connections"] = len(self._tcp_tasks)
        stats["tracked_sources"] = len(self._limiter)
        return stats

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> StunServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> StunServer:
        """Bind every socket.  Raises :class:`OSError` if one cannot be bound (after a
        few retries when ports were left to the OS)."""
        if self._started:
            return self
        auto = self._port == 0 or (self.rfc5780 and self._alt_port_wanted == 0)
        attempts = _BIND_ATTEMPTS if auto else 1
        for attempt in range(attempts):
            try:
                await self._bind_all()
                break
            except OSError as exc:
                await self._close_sockets()
                if attempt + 1 >= attempts or exc.errno != errno.EADDRINUSE:
                    raise
                log.debug("stun server: port clash (%s), retrying", exc)
        self._started = True
        log.info(
            "STUN server listening on %s%s%s",
            ", ".join(_fmt(a) for a in self._udp),
            " (udp+tcp)" if self.conf["tcp"] else " (udp)",
            " with RFC 5780 tests" if self.rfc5780 else "",
        )
        return self

    async def _bind_all(self) -> None:
        loop = asyncio.get_running_loop()

        async def udp(ip: str, port: int) -> int:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, (ip, 0)), local_addr=(ip, port), family=self._family
            )
            bound = int(transport.get_extra_info("sockname")[1])
            self._udp[(ip, bound)] = transport
            return bound

        self._p1 = await udp(self._ip, self._port)
        if self._alt_ip is not None:
            self._p2 = await udp(self._ip, self._alt_port_wanted)
            await udp(self._alt_ip, self._p1)
            await udp(self._alt_ip, self._p2)
        if self.conf["tcp"]:
            for here in list(self._udp):
                server = await loop.create_server(
                    lambda here=here: self._tcp_protocol(here),  # type: ignore[misc]
                    host=here[0],
                    port=here[1],
                    family=self._family,
                )
                self._tcp.append(server)

    def _tcp_protocol(self, here: Address) -> asyncio.StreamReaderProtocol:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2 * int(self.conf["max_message_size"]), loop=loop)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            # close() cancels connection tasks; asyncio's stream callback would report
            # a cancelled task as an error, so the cancellation ends here.
            with contextlib.suppress(asyncio.CancelledError):
                await self._tcp_client(r, w, here)

        return asyncio.StreamReaderProtocol(reader, handle, loop=loop)

    async def _close_sockets(self) -> None:
        servers, self._tcp = self._tcp, []
        for server in servers:
            server.close()
        tasks = list(self._tcp_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        transports, self._udp = self._udp, {}
        for transport in transports.values():
            transport.close()
        if transports:
            await asyncio.sleep(0)  # let the transports' connection_lost run

    async def close(self) -> None:
        """Stop listening and close every connection.  Idempotent."""
        was = self._started
        self._started = False
        await self._close_sockets()
        if was:
            log.info("STUN server on %s stopped", _fmt(self.primary))

    # ------------------------------------------------------------------ answering

    def _changed(self, here: Address, change_ip: bool, change_port: bool) -> Address:
        ip, port = here
        if change_ip and self._alt_ip is not None:
            ip = self._alt_ip if ip == self._ip else self._ip
        if change_port:
            port = self._p2 if port == self._p1 else self._p1
        return (ip, port)

    def _error(self, msg: StunMessage, code: int, reason: str, unknown: list[int]) -> bytes:
        attrs: list[tuple[int, AttrValue]] = [(Attr.ERROR_CODE, ErrorCode(code, reason))]
        if unknown:
            attrs.append((Attr.UNKNOWN_ATTRIBUTES, tuple(unknown)))
        if self.conf["software"]:
            attrs.append((Attr.SOFTWARE, str(self.conf["software"])))
        self._stats[f"error_{code}"] += 1
        return stun.encode(
            StunMessage(msg.method, StunClass.ERROR, msg.transaction_id, tuple(attrs))
        )

    def respond(
        self, msg: StunMessage, source: Address, here: Address, transport: Transport = "udp"
    ) -> Reply | None:
        """The answer to ``msg`` from ``source`` received on local address ``here``, or
        None (not a request).  Pure apart from the counters."""
        if msg.cls is not StunClass.REQUEST:
            self._stats["ignored"] += 1
            return None
        if msg.method != StunMethod.BINDING:
            return Reply(here, source, self._error(msg, 400, "Bad Request", []))
        unknown = list(msg.unknown_required)
        change = msg.get(Attr.CHANGE_REQUEST)
        origin = here
        if isinstance(change, ChangeRequest):
            wants_change = change.change_ip or change.change_port
            if not self.rfc5780 or (transport == "tcp" and wants_change):
                # RFC 5780 section 6.1: no alternate address -> 420; over TCP the answer
                # must come on the same connection, so a change cannot be honoured.
                unknown.append(int(Attr.CHANGE_REQUEST))
            else:
                origin = self._changed(here, change.change_ip, change.change_port)
        if unknown:
            return Reply(here, source, self._error(msg, 420, "Unknown Attribute", unknown))
        dest = source
        response_port = msg.get(Attr.RESPONSE_PORT)
        if transport == "udp" and isinstance(response_port, int):
            if msg.get(Attr.PADDING) is not None or response_port == 0:
                return Reply(here, source, self._error(msg, 400, "Bad Request", []))
            dest = (source[0], response_port)
        attrs: list[tuple[int, AttrValue]] = [
            (Attr.XOR_MAPPED_ADDRESS, source),
            (Attr.MAPPED_ADDRESS, source),
        ]
        if not self._wildcard:
            attrs.append((Attr.RESPONSE_ORIGIN, origin))
        if self.rfc5780:
            attrs.append((Attr.OTHER_ADDRESS, self._changed(here, True, True)))
        if self.conf["software"]:
            attrs.append((Attr.SOFTWARE, str(self.conf["software"])))
        self._stats["success"] += 1
        answer = StunMessage(
            StunMethod.BINDING, StunClass.SUCCESS, msg.transaction_id, tuple(attrs)
        )
        return Reply(origin, dest, stun.encode(answer))

    def _admit(self, data: bytes, source: Address) -> StunMessage | None:
        """Decode a request if it is well-formed and its source is within its rate."""
        if len(data) > int(self.conf["max_message_size"]) or not stun.is_stun(data):
            self._stats["malformed"] += 1
            return None
        if not self._limiter.allow(source[0], time.monotonic()):
            self._stats["rate_limited"] += 1
            log.debug("stun server: rate limit for %s, dropped", source[0])
            return None
        try:
            return stun.decode(data)
        except stun.StunError as exc:
            self._stats["malformed"] += 1
            log.debug("stun server: malformed request from %s: %s", _fmt(source), exc)
            return None

    def _on_datagram(self, data: bytes, source: Address, here: Address) -> None:
        self._stats["udp_received"] += 1
        msg = self._admit(data, source)
        if msg is None:
            return
        try:
            reply = self.respond(msg, source, here, "udp")
        except stun.StunError as exc:  # an answer that cannot be encoded; never expected
            log.warning("stun server: cannot answer %s: %s", _fmt(source), exc)
            return
        if reply is None:
            return
        transport = self._udp.get(reply.origin)
        if transport is None or transport.is_closing():
            return
        try:
            transport.sendto(reply.data, reply.dest)
        except OSError as exc:
            self._stats["send_errors"] += 1
            log.debug("stun server: sending to %s failed: %s", _fmt(reply.dest), exc)

    async def _tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, here: Address
    ) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = (str(peer[0]), int(peer[1]))
        idle = float(self.conf["tcp_idle_timeout"])
        try:
            if task is None or len(self._tcp_tasks) >= int(self.conf["max_tcp_connections"]):
                self._stats["tcp_refused"] += 1
                return
            self._tcp_tasks.add(task)
            self._stats["tcp_accepted"] += 1
            for _ in range(int(self.conf["tcp_max_requests"])):
                try:
                    header = await asyncio.wait_for(reader.readexactly(stun.HEADER_SIZE), idle)
                    total = stun.message_length(header)
                    if total > int(self.conf["max_message_size"]):
                        raise stun.StunError(f"{total}-byte request is too large")
                    body = await asyncio.wait_for(
                        reader.readexactly(total - stun.HEADER_SIZE), idle
                    )
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                except stun.StunError as exc:  # framing lost: close the connection
                    self._stats["malformed"] += 1
                    log.debug("stun server: bad TCP stream from %s: %s", _fmt(source), exc)
                    return
                self._stats["tcp_received"] += 1
                msg = self._admit(header + body, source)
                if msg is None:
                    continue
                reply = self.respond(msg, source, here, "tcp")
                if reply is not None:
                    writer.write(reply.data)
                    await asyncio.wait_for(writer.drain(), idle)
        except (TimeoutError, ConnectionError, stun.StunError) as exc:
            log.debug("stun server: TCP connection from %s: %s", _fmt(source), exc)
        finally:
            if task is not None:
                self._tcp_tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
