"""PNP client: signed PUT / DELETE and GET against one or more PNP servers.

Each request tries UDP a few times (short, growing waits), then TCP.  Signed requests are
signed afresh for every attempt (new timestamp and nonce), so a retry is never refused
as a replay of an attempt whose answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import time
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric import ec

from warpgate.errors import ConfigError, WarpgateError
from warpgate.net.hostport import format_hostport
from warpgate.sansio.pnp import (
    Op,
    PnpError,
    Request,
    Response,
    Status,
    decode_response,
    encode_request,
    make_get,
    make_signed,
    normalise_name,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 5300
_FRAME = struct.Struct(">H")
Server = tuple[str, int]


class PnpRequestError(WarpgateError):
    """A PNP server refused a request (``status``) or could not be reached (``None``)."""

    def __init__(self, message: str, *, status: Status | None = None, server: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server = server


class NameTakenError(PnpRequestError):
    """The name is registered to another public key (until its record expires)."""


class NameNotFoundError(PnpRequestError, LookupError):
    """No live record of the name."""


class PnpUnreachableError(PnpRequestError, ConnectionError):
    """No answer from the server over UDP or TCP in time."""


def parse_server(text: str) -> Server:
    """``"host:port"`` (or ``"[v6]:port"``; port 5300 if omitted) → ``(host, port)``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a PNP server must be 'host:port', not {text!r}")
    text = text.strip()
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    if not host:
        raise ConfigError(f"a PNP server must be 'host:port', not {text!r}")
    return host, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"bad port in PNP server {whole!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"bad port in PNP server {whole!r}")
    return port


def _label(server: Server) -> str:
    return format_hostport(server[0], server[1])


class _UdpWaiter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[Response]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            resp = decode_response(data)
        except PnpError as exc:
            log.debug("PNP: ignoring a bad response: %s", exc)
            return
        fut = self.waiting.get(resp.request_id)
        if fut is not None and not fut.done():
            fut.set_result(resp)

    def error_received(self, exc: Exception) -> None:
        log.debug("PNP UDP error: %s", exc)


class PnpClient:
    """Talks to PNP servers.  ``timeout`` bounds one request to one server (UDP tries,
    then TCP)."""

    def __init__(self, servers: Sequence[Server], *, timeout: float = 3.0, udp_tries: int = 3):
        self.servers = list(servers)
        self.timeout = timeout
        self.udp_tries = udp_tries
        self._last_ms = 0

    def _timestamp(self) -> int:
        # Strictly increasing, so each signed update is newer than the last one.
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return self._last_ms

    async def request(self, server: Server, make: Callable[[int], bytes]) -> Response:
        """Send ``make(request_id)`` (a fresh packet per attempt) to ``server``."""
        loop = asyncio.get_running_loop()
        udp_budget = self.timeout * 0.6
        waits = [
            udp_budget * (i + 1) / sum(range(1, self.udp_tries + 1)) for i in range(self.udp_tries)
        ]
        try:
            transport, proto = await loop.create_datagram_endpoint(_UdpWaiter, remote_addr=server)
        except OSError as exc:
            log.debug("PNP: no UDP to %s: %s", _label(server), exc)
        else:
            try:
                for wait in waits:
                    rid = secrets.randbits(32)
                    fut: asyncio.Future[Response] = loop.create_future()
                    proto.waiting[rid] = fut
                    transport.sendto(make(rid))
                    done, _ = await asyncio.wait(
                        [*proto.waiting.values()], timeout=wait, return_when="FIRST_COMPLETED"
                    )
                    for f in done:
                        return f.result()
            finally:
                transport.close()
                for f in proto.waiting.values():
                    f.cancel()
        return await self._tcp(server, make, self.timeout * 0.4)

    async def _tcp(self, server: Server, make: Callable[[int], bytes], budget: float) -> Response:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(budget):
                reader, writer = await asyncio.open_connection(*server)
                rid = secrets.randbits(32)
                packet = make(rid)
                writer.write(_FRAME.pack(len(packet)) + packet)
                await writer.drain()
                (size,) = _FRAME.unpack(await reader.readexactly(2))
                resp = decode_response(await reader.readexactly(size))
                if resp.request_id != rid:
                    raise PnpError("response to another request")
                return resp
        except (OSError, TimeoutError, asyncio.IncompleteReadError, PnpError) as exc:
            raise PnpUnreachableError(
                f"PNP server {_label(server)} did not answer over UDP or TCP "
                f"within {self.timeout:g} s ({type(exc).__name__}: {exc})",
                server=_label(server),
            ) from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def put(
        self, name: str, value: bytes, key: ec.EllipticCurvePrivateKey, *, ttl: int
    ) -> int:
        """Register ``name`` → ``value`` on every server; return the earliest expiry (ms).

        :raises NameTakenError: another key owns the name on some server.
        :raises PnpRequestError: another refusal, or a server is unreachable.
        """
        results = await self.put_each(name, value, key, ttl=ttl)
        for result in results.values():
            if isinstance(result, BaseException):
                raise result
        return min(r.expires_ms for r in results.values() if isinstance(r, Response))

    async def put_each(
        self, name: str, value: bytes, key: ec.EllipticCurvePrivateKey, *, ttl: int
    ) -> dict[Server, Response | PnpRequestError]:
        """Register on every server at once; each server's response or error."""
        name = normalise_name(name)
        results = await asyncio.gather(
            *(self._signed(s, Op.PUT, name, key, ttl, value) for s in self.servers),
            return_exceptions=True,
        )
        out: dict[Server, Response | PnpRequestError] = {}
        for server, result in zip(self.servers, results, strict=True):
            if isinstance(result, PnpRequestError | Response):
                out[server] = result
            elif isinstance(result, BaseException):
                raise result  # a bug or a cancellation, not a server's answer
        return out

    async def delete(self, name: str, key: ec.EllipticCurvePrivateKey) -> None:
        """Delete ``name`` on every server (a server without it is fine).

        :raises PnpRequestError: a server refused or could not be reached.
        """
        for result in (await self.delete_each(name, key)).values():
            if isinstance(result, PnpRequestError) and not isinstance(result, NameNotFoundError):
                raise result

    async def delete_each(
        self,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        servers: Sequence[Server] | None = None,
    ) -> dict[Server, Response | PnpRequestError]:
        """Delete ``name`` on ``servers`` (default: all) at once; each one's answer."""
        name = normalise_name(name)
        targets = list(self.servers if servers is None else servers)
        results = await asyncio.gather(
            *(self._signed(s, Op.DELETE, name, key, 0, b"") for s in targets),
            return_exceptions=True,
        )
        out: dict[Server, Response | PnpRequestError] = {}
        for server, result in zip(targets, results, strict=True):
            if isinstance(result, PnpRequestError | Response):
                out[server] = result
            elif isinstance(result, BaseException):
                raise result
        return out

    async def _signed(
        self,
        server: Server,
        op: Op,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        ttl: int,
        value: bytes,
    ) -> Response:
        def make(rid: int) -> bytes:
            req = make_signed(
                op,
                name,
                key=key,
                request_id=rid,
                timestamp_ms=self._timestamp(),
                nonce=secrets.token_bytes(16),
                ttl=ttl,
                value=value,
            )
            return encode_request(req)

        return _check(await self.request(server, make), server, name)

    async def get(self, name: str) -> Response:
        """The record of ``name`` from the first server that has it.

        Every server is asked at once and the first positive answer wins, so a server
        that is down costs nothing while another answers (with one server, the same
        as asking it).

        :raises NameNotFoundError: no server has it.
        :raises PnpRequestError: every server failed.
        """
        name = normalise_name(name)
        if not self.servers:
            raise PnpRequestError("no PNP servers configured")

        async def ask(server: Server) -> Response:
            resp = await self.request(server, lambda rid: encode_request(_get(name, rid)))
            return _check(resp, server, name)

        tasks = [asyncio.ensure_future(ask(s)) for s in self.servers]
        errors: list[PnpRequestError] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    return await next_done
                except PnpRequestError as exc:
                    errors.append(exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        missing = [e for e in errors if isinstance(e, NameNotFoundError)]
        down = [e for e in errors if isinstance(e, PnpUnreachableError)]
        if missing and len(missing) + len(down) == len(errors):
            # no server that answered has the name: not found (saying which were down)
            if not down:
                raise missing[0]
            raise NameNotFoundError(
                f"{missing[0]} ({len(down)} of {len(errors)} servers did not answer)",
                status=missing[0].status,
                server=missing[0].server,
            )
        if len(down) == len(errors):
            raise (
                down[0] if len(down) == 1 else PnpUnreachableError("; ".join(str(e) for e in down))
            )
        if len(errors) == 1:
            raise errors[0]
        raise PnpRequestError("; ".join(str(e) for e in errors))


def _get(name: str, rid: int) -> Request:
    return make_get(name, rid)


def _check(resp: Response, server: Server, name: str) -> Response:
    if resp.status == Status.OK:
        return resp
    where = _label(server)
    detail = f" ({resp.message})" if resp.message else ""
    if resp.status == Status.NAME_TAKEN:
        raise NameTakenError(
            f"the name {name!r} is registered to another key on PNP server {where}{detail}",
            status=resp.status,
            server=where,
        )
    if resp.status == Status.NOT_FOUND:
        raise NameNotFoundError(
            f"PNP server {where} has no name {name!r}", status=resp.status, server=where
        )
    raise PnpRequestError(
        f"PNP server {where} refused {name!r}: {resp.status.name}{detail}",
        status=resp.status,
        server=where,
    )
