"""PNP test fixtures: a PNP server on 127.0.0.1, over each store (SQLite in the test's
directory, and PostgreSQL in a throwaway cluster started for the session)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.pnp.pg_cluster import PgCluster, why_unavailable
from warpgate.pnp.server import PnpServer
from warpgate.pnp.store import NameStore, open_store
from warpgate.sansio.pnp import Response, decode_response

STORES = ["sqlite", "postgres"]

# (make a new store, reopen the same data after a restart)
StoreFactory = Callable[[], Awaitable[NameStore]]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = why_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests must run in CI: {reason}")
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


class Stores:
    """Makes stores of one kind: ``await stores.new()`` is a store on fresh, empty
    storage; ``stores.same(store)`` another store on the same storage (a restart);
    ``stores.crash()`` simulates a crash of the storage (PostgreSQL: immediate stop)."""

    def __init__(self, kind: str, tmp_path: Path, cluster: PgCluster | None) -> None:
        self.kind, self.tmp_path, self.cluster = kind, tmp_path, cluster
        self._n = 0
        self._spec: dict[int, str] = {}

    async def new(self) -> NameStore:
        self._n += 1
        if self.cluster is not None:
            spec = await self.cluster.new_database()
        else:
            spec = str(self.tmp_path / f"pnp{self._n}.db")
        store = open_store(spec)
        self._spec[id(store)] = spec
        return store

    def same(self, store: NameStore) -> NameStore:
        spec = self._spec[id(store)]
        again = open_store(spec)
        self._spec[id(again)] = spec
        return again

    def crash(self) -> None:
        if self.cluster is not None:
            self.cluster.restart("immediate")


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    return Stores(request.param, tmp_path, cluster)


@pytest.fixture
async def server(stores: Stores) -> AsyncIterator[PnpServer]:
    async with PnpServer(await stores.new(), port=0) as srv:
        yield srv


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[PnpServer]:
    async with PnpServer(open_store(tmp_path / "pnp.db"), port=0) as srv:
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
