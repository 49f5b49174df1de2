"""Name storage for the PNP server: a small async interface and its SQLite implementation.

The interface is async so that a networked database (PostgreSQL through ``asyncpg``) can
implement it directly.  Every write is one atomic decision -- ownership, replay order
and quota are checked and the row written in one transaction -- so concurrent requests
cannot race each other past a check.

:class:`SqliteStore` runs the standard library's ``sqlite3`` on one dedicated writer
thread (writes are decided one after another, so none can race past a check) and one
reader thread, in WAL mode with ``synchronous=FULL``: a write is on disk before the
server acknowledges it (writes that arrive while one batch commits are group-committed
together, one fsync per batch).
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
from typing import Any, Protocol, TypeVar, runtime_checkable

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

    @classmethod
    def from_row(cls, name: str, row: Any) -> Record:
        """The record of ``name`` from a ``(owner, value, updated_ms, expires_ms)`` row
        (both databases hand back their own bytes-like types)."""
        return cls(name, bytes(row[0]), bytes(row[1]), row[2], row[3])

    def row(self, client: str) -> tuple[str, bytes, bytes, str, int, int]:
        """The ``pnp_names`` row of this record, registered from ``client``, in column
        order (name, owner, value, client, updated_ms, expires_ms)."""
        return (self.name, self.owner, self.value, client, self.updated_ms, self.expires_ms)


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


def tables_sql(*, blob: str, bigint: str) -> str:
    """The tables and indexes every store has, in a database's own type names (SQLite:
    BLOB and INTEGER, PostgreSQL: BYTEA and BIGINT), so the layout is written once."""
    return f"""
CREATE TABLE IF NOT EXISTS pnp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pnp_names (
    name TEXT PRIMARY KEY,
    owner {blob} NOT NULL,
    value {blob} NOT NULL,
    client TEXT NOT NULL,
    updated_ms {bigint} NOT NULL,
    expires_ms {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS pnp_names_client ON pnp_names (client, expires_ms);
CREATE INDEX IF NOT EXISTS pnp_names_expiry ON pnp_names (expires_ms);
"""


_SCHEMA = tables_sql(blob="BLOB", bigint="INTEGER")


def is_postgres_url(text: str) -> bool:
    """Whether a store spec names a PostgreSQL database."""
    return text.startswith(("postgresql://", "postgres://"))


class SqliteStore:
    """:class:`NameStore` on a SQLite file (``":memory:"`` for a throwaway store).

    Writes are group-committed: while one batch of PUTs and DELETEs is being committed,
    the next ones queue up, and the writer thread then decides them one after another
    in a single transaction (each in its own savepoint) and commits once.  Every
    decision sees the ones before it, exactly as if they ran one per transaction, and
    no caller hears its outcome before the commit that holds it is on disk -- an
    acknowledged write is still durable, at one fsync per batch instead of one per write.
    Lookups run on a second connection and thread (WAL readers never wait for the
    writer), so they do not queue behind a commit.
    """

    def __init__(self, path: str | Path, *, max_batch: int = 256) -> None:
        self.path = str(path)
        self.max_batch = max_batch
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self.batches = 0  # commits so far (for tests and benchmarks)

    @property
    def _memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    def _connect(self, *, schema: bool) -> sqlite3.Connection:
        if not self._memory and not self.path.startswith("file:"):
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if schema:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO pnp_meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
        return db

    async def open(self) -> None:
        if self._executor is not None:
            return
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pnp-sqlite")
        try:
            self._db = await loop.run_in_executor(
                self._executor, lambda: self._connect(schema=True)
            )
            if not self._memory:  # an in-memory database is private to its connection
                self._read_executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="pnp-sqlite-read"
                )
                self._reader = await loop.run_in_executor(
                    self._read_executor, lambda: self._connect(schema=False)
                )
        except BaseException:
            await self.aclose()
            raise
        log.info("PNP store open: %s", self.path)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for executor, db in ((self._read_executor, self._reader), (self._executor, self._db)):
            if executor is not None:
                if db is not None:
                    await loop.run_in_executor(executor, db.close)
                # the one worker thread is idle now; joining it takes no time
                executor.shutdown(wait=True)
        self._executor = self._read_executor = None
        self._db = self._reader = None
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("the store was closed"))
        self._pending.clear()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor, db = self._read_executor, self._reader
        if executor is None or db is None:
            executor, db = self._executor, self._db
        if executor is None or db is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, db)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``fn`` (a decision and its writes, no transaction control) for the next
        group commit; its result once that commit is on disk."""
        if self._executor is None or self._db is None:
            raise RuntimeError("the store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        if not self._flushing:
            self._flush()
        return await fut

    def _flush(self) -> None:
        """Start committing the queued writes (called on the event loop thread)."""
        if not self._pending or self._executor is None or self._db is None:
            self._flushing = False
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._flushing = True
        db = self._db
        job = asyncio.get_running_loop().run_in_executor(
            self._executor, _commit_batch, db, [fn for fn, _ in batch]
        )

        def done(job: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            self.batches += 1
            if job.cancelled():
                error: BaseException | None = RuntimeError("the commit was cancelled")
            else:
                error = job.exception()
            for i, (_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                    continue
                ok, value = job.result()[i]
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            self._flush()  # what queued meanwhile is the next batch

        job.add_done_callback(done)

    async def get(self, name: str, now_ms: int) -> Record | None:
        def query(db: sqlite3.Connection) -> Record | None:
            row = db.execute(
                "SELECT owner, value, updated_ms, expires_ms FROM pnp_names "
                "WHERE name = ? AND expires_ms > ?",
                (name, now_ms),
            ).fetchone()
            return Record.from_row(name, row) if row else None

        return await self._read(query)

    async def put(
        self, record: Record, *, client: str, now_ms: int, quota: int
    ) -> tuple[PutOutcome, Record | None]:
        def decide(db: sqlite3.Connection) -> tuple[PutOutcome, Record | None]:
            row = db.execute(
                "SELECT owner, value, updated_ms, expires_ms FROM pnp_names "
                "WHERE name = ? AND expires_ms > ?",
                (record.name, now_ms),
            ).fetchone()
            if row is not None:
                current = Record.from_row(record.name, row)
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
                record.row(client),
            )
            return PutOutcome.STORED, record

        return await self._write(decide)

    async def delete(self, name: str, owner: bytes, timestamp_ms: int, now_ms: int) -> PutOutcome:
        def decide(db: sqlite3.Connection) -> PutOutcome:
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
            return PutOutcome.STORED

        return await self._write(decide)

    async def prune(self, now_ms: int) -> int:
        def delete(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM pnp_names WHERE expires_ms <= ?", (now_ms,)).rowcount

        return await self._write(delete)


def _commit_batch(
    db: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
) -> list[tuple[bool, Any]]:
    """Run each decision in its own savepoint inside one transaction, then commit once
    (on the writer thread).  A decision that raises is rolled back alone and its
    exception returned; a failed COMMIT raises, failing the whole batch."""
    results: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for fn in fns:
            db.execute("SAVEPOINT op")
            try:
                results.append((True, fn(db)))
            except Exception as exc:
                db.execute("ROLLBACK TO SAVEPOINT op")
                results.append((False, exc))
            db.execute("RELEASE SAVEPOINT op")
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
    return results


def open_store(spec: str | Path) -> NameStore:
    """The store for ``spec``: a ``postgresql://`` (or ``postgres://``) URL, a
    ``sqlite:///path`` URL, or a plain path to a SQLite file (``:memory:`` allowed).
    The store is not opened yet."""
    text = str(spec)
    if is_postgres_url(text):
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
