"""PostgreSQL storage for the PNP server (``asyncpg``, from the ``postgres`` extra).

Same semantics as :class:`~warpgate.pnp.store.SqliteStore`: every write is one
transaction that checks ownership, replay order and quota and writes the row, so several
PNP servers may share one database.  Two transaction-scoped advisory locks serialise the
decisions that a plain row lock cannot: one on the name (two first registrations of a
free name race on a row that does not exist yet) and one on the client address (two new
names from one address race past the quota count).  Locks are always taken name first,
then client, so two writers can never wait on each other in a cycle.

Durability is PostgreSQL's: with the default ``synchronous_commit=on`` a commit is in
the flushed WAL before ``COMMIT`` returns, so an acknowledged PUT survives a crash.
"""

from __future__ import annotations

import logging
from typing import Any

from warpgate.errors import UnavailableError
from warpgate.pnp.store import SCHEMA_VERSION, PutOutcome, Record

log = logging.getLogger(__name__)

# Advisory lock classes (the first key of pg_advisory_xact_lock(int4, int4)).
_LOCK_SCHEMA = 0x504E50  # "PNP"
_LOCK_NAME = 1
_LOCK_CLIENT = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pnp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pnp_names (
    name TEXT PRIMARY KEY,
    owner BYTEA NOT NULL,
    value BYTEA NOT NULL,
    client TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS pnp_names_client ON pnp_names (client, expires_ms);
CREATE INDEX IF NOT EXISTS pnp_names_expiry ON pnp_names (expires_ms);
"""

_GET = (
    "SELECT owner, value, updated_ms, expires_ms FROM pnp_names WHERE name = $1 AND expires_ms > $2"
)
_UPSERT = (
    "INSERT INTO pnp_names (name, owner, value, client, updated_ms, expires_ms) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET "
    "owner = EXCLUDED.owner, value = EXCLUDED.value, client = EXCLUDED.client, "
    "updated_ms = EXCLUDED.updated_ms, expires_ms = EXCLUDED.expires_ms"
)


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


class PostgresStore:
    """:class:`~warpgate.pnp.store.NameStore` on PostgreSQL at ``url``
    (``postgresql://user:password@host:port/db``; ``?host=/dir`` for a unix socket)."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        self.url = url
        self.min_size, self.max_size = min_size, max_size
        self._pool: Any = None

    def __repr__(self) -> str:
        # never print a password that may be in the URL
        return f"PostgresStore({redact_url(self.url)!r})"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            import asyncpg  # type: ignore[import-untyped]
        except ImportError as exc:
            raise UnavailableError(
                "a PostgreSQL store needs asyncpg: pip install 'warpgate[postgres]'"
            ) from exc
        pool = await asyncpg.create_pool(
            self.url, min_size=self.min_size, max_size=self.max_size, command_timeout=30
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # CREATE ... IF NOT EXISTS is not safe against a concurrent creator.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_SCHEMA)
                await conn.execute(_SCHEMA)
                await conn.execute(
                    "INSERT INTO pnp_meta (key, value) VALUES ('schema', $1) "
                    "ON CONFLICT (key) DO NOTHING",
                    str(SCHEMA_VERSION),
                )
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        log.info("PNP store open: %s", redact_url(self.url))

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _need_pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def get(self, name: str, now_ms: int) -> Record | None:
        row = await self._need_pool().fetchrow(_GET, name, now_ms)
        if row is None:
            return None
        return Record(name, bytes(row[0]), bytes(row[1]), row[2], row[3])

    async def put(
        self, record: Record, *, client: str, now_ms: int, quota: int
    ) -> tuple[PutOutcome, Record | None]:
        async with self._need_pool().acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_NAME, record.name
            )
            row = await conn.fetchrow(_GET, record.name, now_ms)
            if row is not None:
                current = Record(record.name, bytes(row[0]), bytes(row[1]), row[2], row[3])
                if current.owner != record.owner:
                    return PutOutcome.TAKEN, current
                if record.updated_ms <= current.updated_ms:
                    return PutOutcome.STALE, current
            else:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_CLIENT, client
                )
                held = await conn.fetchval(
                    "SELECT COUNT(*) FROM pnp_names WHERE client = $1 AND expires_ms > $2 "
                    "AND name != $3",
                    client,
                    now_ms,
                    record.name,
                )
                if held >= quota:
                    return PutOutcome.QUOTA, None
            await conn.execute(
                _UPSERT,
                record.name,
                record.owner,
                record.value,
                client,
                record.updated_ms,
                record.expires_ms,
            )
        return PutOutcome.STORED, record

    async def delete(self, name: str, owner: bytes, timestamp_ms: int, now_ms: int) -> PutOutcome:
        async with self._need_pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_NAME, name)
            row = await conn.fetchrow(
                "SELECT owner, updated_ms FROM pnp_names WHERE name = $1 AND expires_ms > $2",
                name,
                now_ms,
            )
            if row is None:
                return PutOutcome.NOT_FOUND
            if bytes(row[0]) != owner:
                return PutOutcome.TAKEN
            if timestamp_ms <= row[1]:
                return PutOutcome.STALE
            await conn.execute("DELETE FROM pnp_names WHERE name = $1", name)
        return PutOutcome.STORED

    async def prune(self, now_ms: int) -> int:
        status = await self._need_pool().execute(
            "DELETE FROM pnp_names WHERE expires_ms <= $1", now_ms
        )
        # asyncpg returns the command tag, "DELETE <count>"
        return int(str(status).rsplit(" ", 1)[-1])


def redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
