"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temp dir.

The server runs as the ``postgres`` user (PostgreSQL refuses to run as root), listens
only on a unix socket in its own directory (no TCP port at all, so nothing outside
this machine can reach it and no port can clash), and keeps ``fsync`` on so that the
durability tests mean what they say.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_PORT = 5432  # only names the socket file (.s.PGSQL.5432) in our private directory


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, or one on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def why_unavailable() -> str | None:
    """None if a cluster can be started here, else the reason."""
    if find_pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
    try:
        import asyncpg  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[dev]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class PgCluster:
    """``start()`` / ``stop()`` / ``restart()`` a private cluster; ``url(db)`` for asyncpg."""

    def __init__(self) -> None:
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="warpgate-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o700)
            for path in (self.root, self.sock):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self._user,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        opts = f"-c listen_addresses='' -k {self.sock} -p {PG_PORT} -c max_connections=50"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate`` = like a crash: no checkpoint, WAL replay on start), start."""
        self.stop(mode)
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@/{db}?host={self.sock}&port={PG_PORT}"

    async def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import asyncpg

        name = "t_" + secrets.token_hex(6)
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def cleanup(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
