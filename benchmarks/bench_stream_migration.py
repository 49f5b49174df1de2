"""What the relay-first stream wrapper costs once it runs on a direct TCP link, on loopback.

A relay-first TCP link (through a private coturn on 127.0.0.1) moves to a direct TCP
link; then N messages go one way over it -- through the wrapper, which numbers,
buffers until acknowledged and acknowledges every message so it can fall back to the
relay (``warpgate.turn.migrate``) -- and, as the baseline in the same run, over a plain
direct TCP link between the same two nodes.  Both nodes run in this one process, so
each side's work is counted.  Reported: MB/s of each and their ratio (no target; the
price of surviving a dead direct path).

    python benchmarks/bench_stream_migration.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.turn.coturn import Coturn, loopback_coturn

CASES = ((1100, 20000), (65536, 1500))  # (message size, count)


def _conf(name: str, server: Coturn) -> Any:
    return dict_child(
        {
            "identity_name": name,
            "turn_servers": [f"{server.host}:{server.port}"],
            "turn_username": server.username,
            "turn_password": server.password,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["memory"]},
        },
        NODE_TEST_CONF,
    )


async def _one_way(sender: Any, receiver: Any, size: int, count: int) -> float:
    payload = b"x" * size

    async def send() -> None:
        for _ in range(count):
            await sender.send(payload)

    async def receive() -> None:
        for _ in range(count):
            await receiver.recv(30)

    begin = time.perf_counter()
    await asyncio.gather(send(), receive())
    return size * count / (time.perf_counter() - begin) / 1e6


async def run(rounds: int) -> list[dict[str, float]]:
    results = []
    with loopback_coturn() as server:
        async with (
            Node(ip="127.0.0.1", port=0, conf=_conf("alice", server)) as a,
            Node(ip="127.0.0.1", port=0, conf=_conf("bob", server)) as b,
        ):
            await a.start()
            await b.start()
            wrapped, _ = await auto_connect(a, b.address(), methods=["turn"], timeout=10)
            wrapped_in = await b.accept(timeout=5)
            for _ in range(250):  # bounded: 5 s for the move to the direct link
                if wrapped.path.kind == "direct" == wrapped_in.path.kind:
                    break
                await asyncio.sleep(0.02)
            if wrapped.path.kind != "direct":
                raise SystemExit("the relay-first link did not move to direct")
            plain, _ = await auto_connect(
                a, b.address(), methods=["direct"], transport="tcp", timeout=10
            )
            plain_in = await b.accept(timeout=5)
            for size, count in CASES:
                for _ in range(rounds):
                    w = await _one_way(wrapped, wrapped_in, size, count)
                    p = await _one_way(plain, plain_in, size, count)
                    results.append({"size": size, "wrapped": w, "plain": p, "ratio": w / p})
                    print(
                        f"{size:>6} B: migrated stream link {w:8.1f} MB/s, plain direct "
                        f"TCP link {p:8.1f} MB/s, ratio {w / p:.2f}"
                    )
            await wrapped.close()
            await plain.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds))
    for size, _ in CASES:
        ratios = sorted(r["ratio"] for r in results if r["size"] == size)
        median = ratios[len(ratios) // 2]
        print(f"{size} B: ratio median {median:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
