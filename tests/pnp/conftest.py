"""A PNP server on 127.0.0.1 with a SQLite store in the test's directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from warpgate.pnp.server import PnpServer
from warpgate.pnp.store import SqliteStore
from warpgate.sansio.pnp import Response, decode_response


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PnpServer]:
    async with PnpServer(SqliteStore(tmp_path / "pnp.db"), port=0) as srv:
        yield srv


class _Once(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def exchange(port: int, data: bytes, timeout: float = 3.0) -> Response:
    """Send one raw datagram to the server and decode its answer."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Once, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        return decode_response(await asyncio.wait_for(proto.answer, timeout))
    finally:
        transport.close()
