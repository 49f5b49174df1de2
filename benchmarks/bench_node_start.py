"""Node start-up cost against the cheapest possible server start-up.

Baseline: open and close one asyncio TCP server and one UDP endpoint on loopback.
Measured: ``Node(conf=NODE_TEST_CONF).start()`` then ``close()`` (loopback-only and on
every interface).  Prints medians and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from warpgate import NODE_TEST_CONF, Node


async def baseline() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(10):  # the TCP port may be taken for UDP by someone else: try another
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", port)
            )
        except OSError:
            server.close()
            await server.wait_closed()
            continue
        transport.close()
        server.close()
        await server.wait_closed()
        return
    raise OSError("no loopback port free for both TCP and UDP in 10 tries")


async def node_loopback() -> None:
    node = Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF)
    await node.start()
    await node.close()


PAIRS = {"n": 1}


async def node_all_interfaces() -> None:
    node = Node(port=0, conf=NODE_TEST_CONF)
    await node.start()
    PAIRS["n"] = len(node.listeners)
    await node.close()


async def measure(fn: Callable[[], Awaitable[None]], runs: int) -> list[float]:
    await fn()  # warm-up: imports, key creation, caches
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - begin) * 1000)
    return times


async def main(runs: int) -> None:
    base = statistics.median(await measure(baseline, runs))
    print(f"runs per case: {runs}")
    print(f"baseline (asyncio TCP server + UDP endpoint): median {base:.2f} ms")
    cases = (("node, loopback only", node_loopback), ("node, all interfaces", node_all_interfaces))
    for name, fn in cases:
        times = await measure(fn, runs)
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        pairs = PAIRS["n"] if fn is node_all_interfaces else 1
        print(
            f"{name} ({pairs} TCP+UDP pair{'s' if pairs > 1 else ''}): median {med:.2f} ms, "
            f"p90 {p90:.2f} ms, {med / base:.1f}x one baseline pair, "
            f"{med / (base * pairs):.1f}x {pairs} (targets: <= 30 ms, <= 10x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs per case (>= 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home  # never touch the user's keystore
        asyncio.run(main(max(args.runs, 20)))
