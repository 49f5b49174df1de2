"""PostgreSQL storage for the PNP server (``asyncpg``, from the ``postgres`` extra).

Same semantics as :class:`~warpgate.pnp.store.SqliteStore`: every write is one
transaction that checks ownership, replay order and quota and writes the row, so several
PNP servers may share one database.  The decision runs in the database, in the SQL
functions ``pnp_put`` and ``pnp_delete`` (created with the tables), so a write is one
round trip.  Two transaction-scoped advisory locks serialise the
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
from warpgate.pnp.store import SCHEMA_VERSION, PutOutcome, Record, is_postgres_url, tables_sql

log = logging.getLogger(__name__)

# Advisory locks: this one (one bigint key) guards schema creation; the functions
# below lock names with class 1 and client addresses with class 2 (two int4 keys).
_LOCK_SCHEMA = 0x504E50  # "PNP"

_SCHEMA = (
    tables_sql(blob="BYTEA", bigint="BIGINT")
    + """
-- One write decision per call, so a PUT or DELETE is one round trip (and one implicit
-- transaction): the advisory locks are held until it commits.
CREATE OR REPLACE FUNCTION pnp_put(
    p_name TEXT, p_owner BYTEA, p_value BYTEA, p_client TEXT,
    p_updated BIGINT, p_expires BIGINT, p_now BIGINT, p_quota INTEGER
) RETURNS TABLE (
    outcome TEXT, r_owner BYTEA, r_value BYTEA, r_updated BIGINT, r_expires BIGINT
) LANGUAGE plpgsql AS $fn$
DECLARE
    cur pnp_names%ROWTYPE;
    held BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(1, hashtext(p_name));
    SELECT * INTO cur FROM pnp_names WHERE name = p_name AND expires_ms > p_now;
    IF FOUND THEN
        IF cur.owner <> p_owner THEN
            RETURN QUERY SELECT 'taken', cur.owner, cur.value, cur.updated_ms, cur.expires_ms;
            RETURN;
        END IF;
        IF p_updated <= cur.updated_ms THEN
            RETURN QUERY SELECT 'stale', cur.owner, cur.value, cur.updated_ms, cur.expires_ms;
            RETURN;
        END IF;
    ELSE
        PERFORM pg_advisory_xact_lock(2, hashtext(p_client));
        SELECT count(*) INTO held FROM pnp_names
            WHERE client = p_client AND expires_ms > p_now AND name <> p_name;
        IF held >= p_quota THEN
            RETURN QUERY SELECT 'quota', NULL::BYTEA, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT;
            RETURN;
        END IF;
    END IF;
    INSERT INTO pnp_names (name, owner, value, client, updated_ms, expires_ms)
        VALUES (p_name, p_owner, p_value, p_client, p_updated, p_expires)
        ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, value = EXCLUDED.value,
            client = EXCLUDED.client, updated_ms = EXCLUDED.updated_ms,
            expires_ms = EXCLUDED.expires_ms;
    RETURN QUERY SELECT 'stored', NULL::BYTEA, NULL::BYTEA, NULL::BIGINT, NULL::BIGINT;
END
$fn$;

CREATE OR REPLACE FUNCTION pnp_delete(
    p_name TEXT, p_owner BYTEA, p_timestamp BIGINT, p_now BIGINT
) RETURNS TEXT LANGUAGE plpgsql AS $fn$
DECLARE
    cur pnp_names%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(1, hashtext(p_name));
    SELECT * INTO cur FROM pnp_names WHERE name = p_name AND expires_ms > p_now;
    IF NOT FOUND THEN
        RETURN 'not found';
    END IF;
    IF cur.owner <> p_owner THEN
        RETURN 'taken';
    END IF;
    IF p_timestamp <= cur.updated_ms THEN
        RETURN 'stale';
    END IF;
    DELETE FROM pnp_names WHERE name = p_name;
    RETURN 'stored';
END
$fn$;
"""
)

_GET = (
    "SELECT owner, value, updated_ms, expires_ms FROM pnp_names WHERE name = $1 AND expires_ms > $2"
)


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
        return Record.from_row(name, row)

    async def put(
        self, record: Record, *, client: str, now_ms: int, quota: int
    ) -> tuple[PutOutcome, Record | None]:
        row = await self._need_pool().fetchrow(
            "SELECT * FROM pnp_put($1, $2, $3, $4, $5, $6, $7, $8)",
            *record.row(client),
            now_ms,
            quota,
        )
        outcome = PutOutcome(row[0])
        if outcome == PutOutcome.STORED:
            return outcome, record
        if row[1] is None:
            return outcome, None
        return outcome, Record(record.name, bytes(row[1]), bytes(row[2]), row[3], row[4])

    async def delete(self, name: str, owner: bytes, timestamp_ms: int, now_ms: int) -> PutOutcome:
        outcome = await self._need_pool().fetchval(
            "SELECT pnp_delete($1, $2, $3, $4)", name, owner, timestamp_ms, now_ms
        )
        return PutOutcome(outcome)

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
