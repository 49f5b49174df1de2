"""The PNP name server crashes under load and is restarted: no acknowledged name is lost.

The server runs as an operator runs it (``warpgate serve pnp``, SQLite store) in its own
process on 127.0.0.1; concurrent clients send signed registrations and updates; the
server is SIGKILLed mid-load (a crash, not a clean stop) and started again on the same
port and database while the clients go on.  Afterwards every name must hold the last
value the server acknowledged for it -- or a later one whose acknowledgement the crash
swallowed, since a write can be durable before its answer leaves.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tests.pnp.conftest import exchange
from warpgate.sansio.pnp import Op, Status, encode_request, make_get, make_signed

NAMES = 40
WORKERS = 16


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(db: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warpgate",
            "serve",
            "pnp",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
            "--pnp-rate",
            "1000000",
            "--pnp-burst",
            "1000000",
            "--names-per-ip",
            "1000000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pnp server exited with {proc.wait()}")
        if line.startswith("serving"):
            return proc
    proc.kill()
    raise RuntimeError("pnp server did not start in 30 s")


def stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


async def test_pnp_server_crash_under_load_loses_no_acknowledged_name(tmp_path: Path) -> None:
    db, port = tmp_path / "names.db", free_port()
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(NAMES)]
    acked: dict[int, tuple[int, bytes]] = {}  # name -> (attempt sequence, value)
    attempted: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(NAMES)}
    counters = {"seq": 0, "ok": 0, "lost": 0}
    last_ms = [0]
    running = asyncio.Event()
    running.set()

    async def worker(w: int) -> None:
        while running.is_set():
            i = secrets.randbelow(NAMES)
            counters["seq"] += 1
            seq = counters["seq"]
            value = f"w{w}-{seq}".encode()
            last_ms[0] = max(int(time.time() * 1000), last_ms[0] + 1)  # newer every time
            request = make_signed(
                Op.PUT,
                f"load-{i}",
                key=keys[i],
                request_id=secrets.randbits(32),
                timestamp_ms=last_ms[0],
                nonce=secrets.token_bytes(16),
                ttl=3600,
                value=value,
            )
            attempted[i].append((seq, value))
            try:
                resp = await exchange(port, encode_request(request), timeout=0.5)
            except TimeoutError:
                counters["lost"] += 1  # the server was down: not acknowledged
                continue
            if resp.status == Status.OK:
                counters["ok"] += 1
                if seq > acked.get(i, (0, b""))[0]:
                    acked[i] = (seq, value)

    server = start_server(db, port)
    try:
        workers = [asyncio.create_task(worker(w)) for w in range(WORKERS)]
        await asyncio.sleep(1.5)
        before_crash = counters["ok"]
        stop(server, signal.SIGKILL)  # a crash mid-load (the process this test started)
        await asyncio.sleep(0.5)
        server = start_server(db, port)
        await asyncio.sleep(1.5)
        running.clear()
        await asyncio.gather(*workers)
        print(f"pnp crash under load: {counters}, {len(acked)} names checked")  # -s shows it
        assert before_crash > 50 and counters["ok"] > before_crash, counters
        assert counters["lost"] > 0, "the crash should have cost some answers"
        for i, (seq, value) in acked.items():
            resp = await exchange(port, encode_request(make_get(f"load-{i}", i)), timeout=3)
            assert resp.status == Status.OK, (i, resp)
            later = {v for s, v in attempted[i] if s >= seq}
            assert resp.value in later, (i, value, resp.value)
    finally:
        stop(server, signal.SIGINT)
