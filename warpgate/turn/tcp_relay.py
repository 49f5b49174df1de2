"""TURN TCP relaying (RFC 6062), the data-connection half.

A TCP allocation (``TurnClient(protocol="tcp")``) announces each peer that connects to
its relayed address with a ConnectionAttempt indication carrying a CONNECTION-ID.  The
client then opens a *data connection* to the server and sends ConnectionBind with that
id; after the success answer the connection is a plain byte pipe to the peer, and
anything -- here the TCP link handshake -- runs over it.

:func:`open_data_connection` does that exchange on a raw non-blocking socket, reading
exactly one STUN answer (the peer sends nothing before we do, but reading no further
keeps any early bytes for whoever takes the socket next).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

from warpgate.sansio import stun, turn
from warpgate.sansio.stun import StunClass, StunMessage
from warpgate.sansio.turn import TurnError
from warpgate.turn.client import TurnClient

_MAX_ROUNDS = 3  # a 401/438 on the data connection, then the signed request again


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise TurnError("the TURN server closed the data connection")
        buf += chunk
    return bytes(buf)


async def _read_message(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    header = await _read_exactly(loop, sock, stun.HEADER_SIZE)
    size = stun.message_length(header)
    return header + await _read_exactly(loop, sock, size - stun.HEADER_SIZE)


async def open_data_connection(
    client: TurnClient, connection_id: int, *, timeout: float
) -> socket.socket:
    """A connected TCP socket to the server, bound to ``connection_id``'s peer.

    :raises TurnError: the server refused (the id is unknown or expired: 400/447) or did
        not answer within ``timeout``.
    """
    loop = asyncio.get_running_loop()
    family = (
        socket.AF_INET6 if ipaddress.ip_address(client.server[0]).version == 6 else socket.AF_INET
    )
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, client.server)
            for _ in range(_MAX_ROUNDS):
                base = turn.connection_bind(connection_id)
                msg = StunMessage(base.method, base.cls, stun.new_transaction_id(), base.attributes)
                signed = client.auth.ready
                await loop.sock_sendall(sock, client.auth.sign(msg))
                raw = await _read_message(loop, sock)
                answer = stun.decode(raw)
                if answer.transaction_id != msg.transaction_id:
                    raise TurnError("the TURN server answered another ConnectionBind")
                if not client.auth.check_response(raw):
                    raise TurnError("the TURN server's ConnectionBind answer is not authentic")
                if answer.cls == StunClass.SUCCESS:
                    return sock
                if not client.auth.accept_error(answer, was_signed=signed):
                    raise turn.describe_error(answer)
            raise TurnError("too many authentication rounds on the data connection")
    except TimeoutError as exc:
        sock.close()
        raise TurnError(
            f"TURN server did not complete ConnectionBind within {timeout:g} s"
        ) from exc
    except OSError as exc:  # coturn resets the connection for an unknown id
        sock.close()
        raise TurnError(
            f"ConnectionBind failed: the TURN server dropped the connection ({exc})"
        ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
