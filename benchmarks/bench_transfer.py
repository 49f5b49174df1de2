"""``warpgate send`` / ``warpgate receive`` end to end vs the same job without warpgate.

Measured: the time from starting ``warpgate send FILE ADDRFILE`` until the receiver has
written, verified (SHA-256) and renamed the file and both processes have exited; the
receiver (``warpgate receive --address-file``) is already waiting.  Both run on
loopback with ``--offline`` (no servers), as two processes, as a user runs them.

Baseline, measured alongside: two Python processes doing the same work over a plain
asyncio TCP connection (the sender hashes the file first, streams it; the receiver
writes and hashes it, checks the hash) -- no keys, no handshake, no encryption, no node
start-up.  The ratio says what the authenticated, encrypted link and the node cost
for a file transfer.

    python benchmarks/bench_transfer.py [--mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RECEIVER = textwrap.dedent(
    """
    import asyncio, hashlib, json, sys
    from pathlib import Path

    async def main(port_file, out):
        done = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            header = json.loads(await reader.readline())
            digest, left = hashlib.sha256(), header["size"]
            with open(out, "wb") as f:
                while left:
                    chunk = await reader.read(min(1 << 18, left))
                    if not chunk:
                        break
                    f.write(chunk)
                    digest.update(chunk)
                    left -= len(chunk)
            ok = digest.hexdigest() == header["sha256"]
            writer.write(b"ok\\n" if ok else b"bad\\n")
            await writer.drain()
            writer.close()
            done.set_result(ok)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        ok = await done
        server.close()
        sys.exit(0 if ok else 1)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)

SENDER = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, sys

    async def main(path, port):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        header = {"size": os.path.getsize(path), "sha256": digest.hexdigest()}
        writer.write(json.dumps(header).encode() + b"\\n")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 18):
                writer.write(chunk)
                await writer.drain()
        answer = await reader.readline()
        writer.close()
        sys.exit(0 if answer == b"ok\\n" else 1)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the receiver did not start: {proc.communicate()}")
        time.sleep(0.02)


def _finish(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{proc.args!r} failed: {err.decode(errors='replace')[-500:]}")


def run_warpgate(work: Path, src: Path, env: dict[str, str]) -> float:
    addr, inbox = work / "r.addr", work / "inbox"
    inbox.mkdir()
    common = ["--offline", "--ip", "127.0.0.1", "--quiet"]
    where = ["--address-file", str(addr), "-o", str(inbox)]
    receiver = subprocess.Popen(
        [sys.executable, "-m", "warpgate", "receive", *where, *common],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    _wait_for(addr, receiver)
    begin = time.perf_counter()
    sender = subprocess.Popen(
        [sys.executable, "-m", "warpgate", "send", str(src), str(addr), *common],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    _finish(sender, receiver)
    took = time.perf_counter() - begin
    assert (inbox / src.name).stat().st_size == src.stat().st_size
    return took


def run_baseline(work: Path, src: Path, env: dict[str, str]) -> float:
    port_file, out = work / "port", work / "out.bin"
    receiver = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port_file), str(out)],
        env=env,
        stderr=subprocess.PIPE,
    )
    _wait_for(port_file, receiver)
    begin = time.perf_counter()
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(src), port_file.read_text()],
        env=env,
        stderr=subprocess.PIPE,
    )
    _finish(sender, receiver)
    took = time.perf_counter() - begin
    assert out.stat().st_size == src.stat().st_size
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="file size in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        root = Path(tmp)
        src = root / "payload.bin"
        with src.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        env = dict(os.environ, WARPGATE_HOME=str(root / "home"))
        wg, base = [], []
        for run in range(args.runs):
            for name, fn, into in (
                ("baseline", run_baseline, base),
                ("warpgate", run_warpgate, wg),
            ):
                work = root / f"{name}-{run}"
                work.mkdir()
                into.append(fn(work, src, env))
        size = args.mib * (1 << 20)
        w, b = statistics.median(wg), statistics.median(base)
        print(f"file: {args.mib} MiB of random bytes, {args.runs} runs each, medians")
        print(f"baseline (plain TCP, sha256 both ends): {b:.2f} s  ({size / b / 2**20:.0f} MiB/s)")
        print(f"warpgate send/receive (encrypted link): {w:.2f} s  ({size / w / 2**20:.0f} MiB/s)")
        print(f"ratio warpgate/baseline: {w / b:.2f}x")


if __name__ == "__main__":
    main()
