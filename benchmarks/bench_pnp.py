"""PNP name server throughput: signed PUTs and GETs per second from a concurrent client.

The server runs as a user would run it, ``warpgate serve pnp`` in its own process (rate
limit and quota raised so that they do not throttle one benchmarking client), on:

* SQLite in a temporary directory (the default store);
* PostgreSQL in a throwaway cluster (``initdb`` + ``pg_ctl``, unix socket only), when
  the server binaries and asyncpg are installed.

Baseline, measured in the same run: a minimal asyncio UDP echo server in its own
process, driven by the same client -- what one Python process answering datagrams can
do on this machine, with no decoding, verification or storage.

The client keeps ``--concurrency`` requests in flight over one UDP socket.  Each worker
owns one name and alternates a signed PUT (a fresh timestamp and nonce, signed before the
timed run: the client is the load generator, not what is measured) with a GET of a name
another worker owns.  Every answer is checked: a PUT must be OK, a GET OK.

Target (issue 7): >= 2,000 signed GET+PUT operations/s on SQLite on a 2-core machine.

    python benchmarks/bench_pnp.py [--ops 20000] [--concurrency 64] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warpgate.sansio.pnp import (
    Op,
    Status,
    decode_response,
    encode_request,
    make_get,
    make_signed,
)

ECHO_SERVER = """
import asyncio, sys
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(data, addr)
async def main():
    t, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", 0))
    print(t.get_extra_info("sockname")[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Client(asyncio.DatagramProtocol):
    """Many requests in flight on one socket, matched by request id (bytes 2..6)."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        rid = data[3:7] if len(data) > 7 and data[1] == 0x80 else data[2:6]
        fut = self.waiting.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    async def ask(self, packet: bytes, rid: bytes, timeout: float = 2.0) -> bytes:
        assert self.transport is not None
        for _ in range(3):  # loopback drops a datagram only when a buffer is full
            fut = asyncio.get_running_loop().create_future()
            self.waiting[rid] = fut
            self.transport.sendto(packet)
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.waiting.pop(rid, None)
        raise TimeoutError("no answer after 3 tries")


async def drive(port: int, workloads: list[list[tuple[bytes, bytes]]]) -> tuple[float, int]:
    """Run every worker's packet list; return (seconds, packets answered)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4 << 20)
        bad: list[str] = []

        async def worker(packets: list[tuple[bytes, bytes]]) -> int:
            for packet, rid in packets:
                answer = await client.ask(packet, rid)
                if answer[1] == 0x80:  # a PNP response (the echo returns the request)
                    resp = decode_response(answer)
                    if resp.status != Status.OK:
                        bad.append(f"{resp.status.name}: {resp.message}")
            return len(packets)

        start = time.perf_counter()
        counts = await asyncio.gather(*(worker(w) for w in workloads))
        elapsed = time.perf_counter() - start
        if bad:
            raise RuntimeError(f"{len(bad)} requests refused, first: {bad[0]}")
        return elapsed, sum(counts)
    finally:
        transport.close()


def make_workloads(
    keys: list[ec.EllipticCurvePrivateKey], ops: int, offset_ms: int = 0
) -> list[list[tuple[bytes, bytes]]]:
    """Per worker: PUT own name, GET a neighbour's name, PUT, GET, ... (signed now)."""
    concurrency = len(keys)
    per = max(2, ops // concurrency)
    now = int(time.time() * 1000) + offset_ms
    workloads = []
    for w, key in enumerate(keys):
        name, other = f"bench-{w}", f"bench-{(w + 1) % concurrency}"
        packets = []
        for i in range(per):
            rid = secrets.randbits(32)
            if i % 2 == 0:
                req = make_signed(
                    Op.PUT,
                    name,
                    key=key,
                    request_id=rid,
                    timestamp_ms=now + i,
                    nonce=secrets.token_bytes(16),
                    ttl=3600,
                    value=secrets.token_bytes(120),  # about the size of a node address
                )
            else:
                req = make_get(other, rid)
            packets.append((encode_request(req), rid.to_bytes(4, "big")))
        workloads.append(packets)
    return workloads


def new_keys(n: int) -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(n)]


class Served:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warpgate", "serve", "pnp", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line.startswith("serving"):
                break
        start = lines.index("client conf:") + 1
        conf = json.loads("\n".join(lines[start:-1]))
        self.port = int(conf["pnp_servers"][0].rsplit(":", 1)[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_args(db: str) -> list[str]:
    return [
        "--listen",
        "127.0.0.1:0",
        "--db",
        db,
        "--pnp-rate",
        "1000000",
        "--pnp-burst",
        "1000000",
        "--names-per-ip",
        "1000000",
    ]


async def measure_pnp(port: int, ops: int, concurrency: int) -> float:
    keys = new_keys(concurrency)
    # one PUT per name first, so that every GET of the timed run finds its name
    await drive(port, [w[:1] for w in make_workloads(keys, 2 * concurrency)])
    workloads = make_workloads(keys, ops, offset_ms=1000)
    elapsed, done = await drive(port, workloads)
    return done / elapsed


async def measure_echo(ops: int, concurrency: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_SERVER, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        port = int(await proc.stdout.readline())
        # the same kind of packets the PNP run sends, echoed back unchanged
        elapsed, done = await drive(port, make_workloads(new_keys(concurrency), ops))
        return done / elapsed
    finally:
        proc.kill()
        await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs; {args.ops} operations (half signed PUTs, half GETs), "
          f"{args.concurrency} in flight")  # fmt: skip
    echo = await measure_echo(args.ops, args.concurrency)
    print(f"baseline UDP echo (Python asyncio, own process): {echo:10,.0f} packets/s")

    with tempfile.TemporaryDirectory() as tmp:
        served = Served(serve_args(str(Path(tmp) / "pnp.db")))
        try:
            rate = await measure_pnp(served.port, args.ops, args.concurrency)
        finally:
            served.stop()
    verdict = "meets" if rate >= 2000 else "BELOW"
    print(
        f"PNP on SQLite:     {rate:10,.0f} ops/s  = {rate / echo:.2f}x baseline "
        f"({verdict} the 2,000 ops/s target)"
    )

    if args.no_postgres:
        return
    try:
        from tests.pnp.pg_cluster import PgCluster, why_unavailable
    except ImportError as exc:
        print(f"PNP on PostgreSQL: skipped ({exc})")
        return
    reason = why_unavailable()
    if reason:
        print(f"PNP on PostgreSQL: skipped ({reason})")
        return
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        served = Served(serve_args(await cluster.new_database()))
        try:
            rate = await measure_pnp(served.port, args.ops, args.concurrency)
        finally:
            served.stop()
        print(f"PNP on PostgreSQL: {rate:10,.0f} ops/s  = {rate / echo:.2f}x baseline")
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
