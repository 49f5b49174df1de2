"""1,000 concurrent inbound links on one node: memory per idle link.

Opens N links from a client node to a server node in the same process, then measures
the Python heap (tracemalloc) and the process RSS before and after.  Both sides live in
this process, so the per-link figures cover one link end on each node; the figure per
server-side link is about half.  Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import tempfile
import time
import tracemalloc

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count * 2 + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    server_conf = dict_child({"identity_name": "many-server"}, NODE_TEST_CONF)
    client_conf = dict_child({"identity_name": "many-client"}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=server_conf) as server,
        Node(ip="127.0.0.1", port=0, conf=client_conf) as client,
    ):
        await server.start()
        await client.start()
        address = server.address()
        await auto_connect(client, address)  # warm-up
        await server.accept(5)
        gc.collect()
        tracemalloc.start()
        heap0, rss0 = tracemalloc.get_traced_memory()[0], rss_kib()
        inbound: list = []

        async def acceptor() -> None:
            while True:
                inbound.append(await server.accept())

        accepting = asyncio.create_task(acceptor())
        begin = time.perf_counter()
        links = []
        for start in range(0, count, 100):
            batch = await asyncio.gather(
                *(auto_connect(client, address) for _ in range(min(100, count - start)))
            )
            links += [link for link, _ in batch]
        for _ in range(100):
            if len(inbound) >= len(links):
                break
            await asyncio.sleep(0.05)
        accepting.cancel()
        elapsed = time.perf_counter() - begin
        await asyncio.sleep(0.5)
        gc.collect()
        heap1, rss1 = tracemalloc.get_traced_memory()[0], rss_kib()
        tracemalloc.stop()
        # The links work: one message over the last of them.
        await links[-1].send(b"still alive")
        assert await inbound[-1].recv(5) == b"still alive"
        n = len(links)
        print(f"{n} links opened in {elapsed:.2f} s ({n / elapsed:.0f} links/s)")
        print(f"python heap: {(heap1 - heap0) / n / 1024:.1f} KiB per link (both ends)")
        print(f"process RSS: {(rss1 - rss0) / n:.1f} KiB per link (both ends)")
        print(f"server-side links open: {len(server.links)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--links", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        asyncio.run(main(args.links))
