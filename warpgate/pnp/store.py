"""Name storage for the PNP server: a small async interface and its SQLite implementation.

The interface is async so that a networked database (PostgreSQL through ``asyncpg``) can
implement it directly.  Every write is one atomic decision -- ownership, replay order
and quota are checked and the row written in one transaction -- so concurrent requests
cannot race each other past a check.

:class:`SqliteStore` runs the standard library's ``sqlite3`` on one dedicated worker
thread (a connection is used only by the thread that made it), in WAL mode with
``synchronous=FULL``: a write is on disk before the server acknowledges it.
:func:`open_store` picks the implementation from a URL: ``postgresql://...`` is
:class:`~warpgate.pnp.pg_store.PostgresStore`, anything else a SQLite file.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1


class PutOutcome(enum.Enum):
    STORED = "stored"
    TAKEN = "taken"  # another key owns the name
    STALE = "stale"  # not newer than the stored record
    QUOTA = "quota"  # the client's address holds too many names
    NOT_FOUND = "not found"  # (delete) no such name


@dataclass(frozen=True)
class Record:
    name: str
    owner: bytes
    value: bytes
    updated_ms: int
    expires_ms: int


@runtime_checkable
class NameStore(Protocol):
    """What the PNP server needs from storage.  Times are milliseconds since the epoch."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def get(self, name: str, now_ms: int) -> Record | None:
        """The live (unexpired) record of ``name``, or None."""
        ...

    async def put(
        self, record: Record, *, client: str, now_ms: int, quota: int
    ) -> tuple[PutOutcome, Record | None]:
        """Store ``record`` unless another key owns the live name (TAKEN), the stored
        record is as new or newer (STALE) or ``client`` already holds ``quota`` other live
        names (QUOTA).  Returns the outcome and the record now stored under the name."""
        ...

    async def delete(self, name: str, owner: bytes, timestamp_ms: int, now_ms: int) -> PutOutcome:
        """Delete ``name`` if ``owner`` owns it and ``timestamp_ms`` is newer than it."""
        ...

    async def prune(self, now_ms: int) -> int:
        """Delete expired records; return how many."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS pnp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pnp_names (
    name TEXT PRIMARY KEY,
    owner BLOB NOT NULL,
    value BLOB NOT NULL,
    client TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pnp_names_client ON pnp_names (client, expires_ms);
CREATE INDEX IF NOT EXISTS pnp_names_expiry ON pnp_names (expires_ms);
"""


class SqliteStore:
    """:class:`NameStore` on a SQLite file (``":memory:"`` for a throwaway store)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise RuntimeError("the store is not open")
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pnp-sqlite")

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:" and not self.path.startswith("file:"):
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO pnp_meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        log.info("PNP store open: %s", self.path)

    async def aclose(self) -> None:
        executor, db = self._executor, self._db
        self._executor = self._db = None
        if executor is None:
            return
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        # The one worker thread is idle now; joining it takes no time.
        executor.shutdown(wait=True)

    async def get(self, name: str, now_ms: int) -> Record | None:
        def query(db: sqlite3.Connection) -> Record | None:
            row = db.execute(
                "SELECT owner, value, updated_ms, expires_ms FROM pnp_names "
                "WHERE name = ? AND expires_ms > ?",
                (name, now_ms),
            ).fetchone()
            return Record(name, bytes(row[0]), bytes(row[1]), row[2], row[3]) if row else None

        return await self._run(query)

    async def put(
        self, record: Record, *, client: str, now_ms: int, quota: int
    ) -> tuple[PutOutcome, Record | None]:
        def txn(db: sqlite3.Connection) -> tuple[PutOutcome, Record | None]:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT owner, value, updated_ms, expires_ms FROM pnp_names "
                    "WHERE name = ? AND expires_ms > ?",
                    (record.name, now_ms),
                ).fetchone()
                if row is not None:
                    current = Record(record.name, bytes(row[0]), bytes(row[1]), row[2], row[3])
                    if current.owner != record.owner:
                        return PutOutcome.TAKEN, current
                    if record.updated_ms <= current.updated_ms:
                        return PutOutcome.STALE, current
                else:
                    (held,) = db.execute(
                        "SELECT COUNT(*) FROM pnp_names WHERE client = ? AND expires_ms > ? "
                        "AND name != ?",
                        (client, now_ms, record.name),
                    ).fetchone()
                    if held >= quota:
                        return PutOutcome.QUOTA, None
                db.execute(
                    "INSERT OR REPLACE INTO pnp_names "
                    "(name, owner, value, client, updated_ms, expires_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.name,
                        record.owner,
                        record.value,
                        client,
                        record.updated_ms,
                        record.expires_ms,
                    ),
                )
                db.execute("COMMIT")
                return PutOutcome.STORED, record
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")

        return await self._run(txn)

    async def delete(self, name: str, owner: bytes, timestamp_ms: int, now_ms: int) -> PutOutcome:
        def txn(db: sqlite3.Connection) -> PutOutcome:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT owner, updated_ms FROM pnp_names WHERE name = ? AND expires_ms > ?",
                    (name, now_ms),
                ).fetchone()
                if row is None:
                    return PutOutcome.NOT_FOUND
                if bytes(row[0]) != owner:
                    return PutOutcome.TAKEN
                if timestamp_ms <= row[1]:
                    return PutOutcome.STALE
                db.execute("DELETE FROM pnp_names WHERE name = ?", (name,))
                db.execute("COMMIT")
                return PutOutcome.STORED
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")

        return await self._run(txn)

    async def prune(self, now_ms: int) -> int:
        def txn(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM pnp_names WHERE expires_ms <= ?", (now_ms,)).rowcount

        return await self._run(txn)


def open_store(spec: str | Path) -> NameStore:
    """The store for ``spec``: a ``postgresql://`` (or ``postgres://``) URL, a
    ``sqlite:///path`` URL, or a plain path to a SQLite file (``:memory:`` allowed).
    The store is not opened yet."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        from warpgate.pnp.pg_store import PostgresStore

        return PostgresStore(text)
    if text.startswith("sqlite://"):
        text = text.removeprefix("sqlite://")
        # sqlite:///var/x.db → /var/x.db; sqlite://x.db (relative) → x.db
        text = text.removeprefix("/") if text.startswith("//") else text
        if not text:
            raise ValueError("a sqlite:// URL needs a path: sqlite:///var/lib/warpgate/pnp.db")
    elif "://" in text:
        raise ValueError(
            f"unsupported store URL {text!r}: use postgresql://..., sqlite:///path or a path"
        )
    return SqliteStore(text)
