"""Links over TCP: ``WGL\\x01`` from the dialler, then the three handshake messages,
each behind a 2-byte big-endian length, then records: type u8 | length u16 |
ciphertext (see :mod:`warpgate.sansio.link_records`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from warpgate.link.link import Addr, Link, LinkClosed, LinkPath
from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity, LinkProtocolError
from warpgate.sansio.link_records import RecordCodec

log = logging.getLogger(__name__)

LINK_MAGIC = b"WGL\x01"
_LEN = 2
_RECORD_HEADER = 3


async def _read_msg(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await reader.readexactly(_LEN), "big")
    return await reader.readexactly(size)


def _frame(msg: bytes) -> bytes:
    return len(msg).to_bytes(_LEN, "big") + msg


class TcpLink(Link):
    """A link over one TCP connection; a reader task feeds received records."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
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
        self._reader = reader
        self._writer = writer
        self._reader_task: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"link {self.path}")

    async def _read_loop(self) -> None:
        reason = "(connection lost)"
        reader = self._reader
        try:
            while True:
                header = await reader.readexactly(_RECORD_HEADER)
                body = await reader.readexactly(int.from_bytes(header[1:], "big"))
                if not await self._handle_record((header[0], body)):
                    reason = self._close_reason
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            reason = "(connection lost)"
        except LinkProtocolError as exc:
            log.warning("closing link to %s: %s", self.path.remote, exc)
            reason = f"(protocol error: {exc})"
        finally:
            self._mark_closed(reason)
            self._close_transport()

    async def _transmit(self, records: list[tuple[int, bytes]]) -> None:  # type: ignore[override]
        if self._writer.is_closing():
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        parts: list[bytes] = []
        for kind, ciphertext in records:
            parts.append(bytes([kind]) + len(ciphertext).to_bytes(_LEN, "big"))
            parts.append(ciphertext)
        self._writer.writelines(parts)
        await self._writer.drain()

    def _close_transport(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()

    async def _shutdown(self, reason: str) -> None:
        self._mark_closed(reason)
        self._close_transport()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1)


def _addr(sockname: object) -> Addr:
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return (str(sockname[0]), int(sockname[1]))
    return ("?", 0)


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
) -> TcpLink:
    """Connect to ``remote`` and run the handshake as initiator.

    Callers bound the whole call with a timeout (``asyncio.timeout``).
    """
    local_addr = (local_ip, 0) if local_ip else None
    reader, writer = await asyncio.open_connection(remote[0], remote[1], local_addr=local_addr)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hs = LinkHandshake(
            identity,
            initiator=True,
            expected_identity=expected_identity,
            intent=intent,
            plaintext=not encrypt,
        )
        writer.write(LINK_MAGIC + _frame(hs.start()))
        await writer.drain()
        reply = hs.receive(await _read_msg(reader))
        assert reply is not None
        writer.write(_frame(reply))
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return _make_link(hs, reader, writer, method=method, max_message=max_message)


async def accept_tcp(
    identity: LinkIdentity,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    max_message: int,
    encrypt: bool = True,
) -> TcpLink:
    """Run the handshake as responder on an inbound connection whose first bytes were
    :data:`LINK_MAGIC` (already read)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hs = LinkHandshake(identity, initiator=False, plaintext=not encrypt)
    reply = hs.receive(await _read_msg(reader))
    assert reply is not None
    writer.write(_frame(reply))
    await writer.drain()
    if hs.receive(await _read_msg(reader)) is not None:
        raise LinkProtocolError("unexpected handshake reply")
    return _make_link(hs, reader, writer, method="inbound", max_message=max_message)


def _make_link(
    hs: LinkHandshake,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    method: str,
    max_message: int,
) -> TcpLink:
    codec = RecordCodec(*hs.transport_ciphers(), max_message=max_message)
    assert hs.remote_identity is not None
    path = LinkPath(
        method=method,
        transport="tcp",
        local=_addr(writer.get_extra_info("sockname")),
        remote=_addr(writer.get_extra_info("peername")),
    )
    link = TcpLink(
        reader,
        writer,
        codec=codec,
        remote_key=hs.remote_identity,
        path=path,
        initiator=hs.initiator,
        intent=hs.intent,
    )
    link.start_reading()
    return link
