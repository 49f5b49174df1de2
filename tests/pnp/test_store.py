"""The NameStore contract, on SQLite and on PostgreSQL: the same decisions, atomically."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.pnp.conftest import Stores
from warpgate.pnp.store import PutOutcome, Record, SqliteStore, open_store

NOW = int(time.time() * 1000)


def rec(
    name: str, owner: int, updated: int = NOW, value: bytes = b"v", ttl_ms: int = 60_000
) -> Record:
    return Record(name, bytes([2]) + bytes([owner]) * 32, value, updated, updated + ttl_ms)


async def test_first_key_owns_until_expiry(stores: Stores) -> None:
    store = await stores.new()
    await store.open()
    try:
        assert (await store.put(rec("a", 1), client="c1", now_ms=NOW, quota=5))[0] == (
            PutOutcome.STORED
        )
        outcome, current = await store.put(rec("a", 2, NOW + 1), client="c2", now_ms=NOW, quota=5)
        assert (
            outcome == PutOutcome.TAKEN
            and current is not None
            and current.owner == rec("a", 1).owner
        )
        # an update must be newer than the stored record
        assert (await store.put(rec("a", 1, NOW), client="c1", now_ms=NOW, quota=5))[0] == (
            PutOutcome.STALE
        )
        assert (await store.put(rec("a", 1, NOW + 5, b"w"), client="c1", now_ms=NOW, quota=5))[
            0
        ] == PutOutcome.STORED
        got = await store.get("a", NOW)
        assert got is not None and got.value == b"w"
        # after expiry the name is free and invisible
        later = NOW + 120_000
        assert await store.get("a", later) is None
        assert (await store.put(rec("a", 2, later), client="c2", now_ms=later, quota=5))[0] == (
            PutOutcome.STORED
        )
        # delete: only the owner, only newer
        assert await store.delete("a", rec("a", 1).owner, later + 1, later) == PutOutcome.TAKEN
        assert await store.delete("a", rec("a", 2).owner, later, later) == PutOutcome.STALE
        assert await store.delete("a", rec("a", 2).owner, later + 1, later) == PutOutcome.STORED
        assert await store.delete("a", rec("a", 2).owner, later + 2, later) == PutOutcome.NOT_FOUND
    finally:
        await store.aclose()


async def test_concurrent_first_registrations_have_one_winner(stores: Stores) -> None:
    store = await stores.new()
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.put(rec("race", k), client=f"c{k}", now_ms=NOW, quota=5) for k in range(1, 9))
        )
        outcomes = [r[0] for r in results]
        assert outcomes.count(PutOutcome.STORED) == 1
        assert outcomes.count(PutOutcome.TAKEN) == 7
        winner = outcomes.index(PutOutcome.STORED) + 1
        got = await store.get("race", NOW)
        assert got is not None and got.owner == rec("race", winner).owner
    finally:
        await store.aclose()


async def test_concurrent_new_names_respect_the_quota(stores: Stores) -> None:
    store = await stores.new()
    await store.open()
    try:
        results = await asyncio.gather(
            *(store.put(rec(f"q{i}", 1), client="one", now_ms=NOW, quota=3) for i in range(10))
        )
        outcomes = [r[0] for r in results]
        assert outcomes.count(PutOutcome.STORED) == 3
        assert outcomes.count(PutOutcome.QUOTA) == 7
        # expired names do not count
        later = NOW + 120_000
        assert (await store.put(rec("q-new", 1, later), client="one", now_ms=later, quota=3))[
            0
        ] == PutOutcome.STORED
        assert await store.prune(later) == 3
    finally:
        await store.aclose()


def test_open_store_picks_the_implementation(tmp_path: object) -> None:
    from warpgate.pnp.pg_store import PostgresStore

    pg = open_store("postgresql://user:secret@db.example:5432/pnp")
    assert isinstance(pg, PostgresStore) and "secret" not in repr(pg)
    assert isinstance(open_store("postgres://h/db"), PostgresStore)
    lite = open_store("sqlite:///var/lib/x.db")
    assert isinstance(lite, SqliteStore) and lite.path == "/var/lib/x.db"
    assert isinstance(open_store("names.db"), SqliteStore)
    with pytest.raises(ValueError, match="unsupported"):
        open_store("mysql://h/db")
    with pytest.raises(ValueError, match="path"):
        open_store("sqlite://")


async def test_sqlite_group_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.db")
    await store.open()
    try:

        def broken(db: object) -> None:
            raise ZeroDivisionError("a bug in one decision")

        # 40 writes arrive together: they share commits, each sees the ones before it
        puts = [store.put(rec(f"g{i}", 1), client="c", now_ms=NOW, quota=30) for i in range(40)]
        results = await asyncio.gather(*puts, store._write(broken), return_exceptions=True)
        outcomes = [r[0] for r in results[:40] if isinstance(r, tuple)]
        assert outcomes.count(PutOutcome.STORED) == 30
        assert outcomes.count(PutOutcome.QUOTA) == 10
        assert isinstance(results[40], ZeroDivisionError)  # only that one failed
        assert store.batches < 41
    finally:
        await store.aclose()
    # everything acknowledged is on disk
    again = SqliteStore(tmp_path / "g.db")
    await again.open()
    try:
        for i in range(30):
            assert await again.get(f"g{i}", NOW) is not None
    finally:
        await again.aclose()
