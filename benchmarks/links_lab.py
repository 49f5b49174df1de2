"""Link throughput and message rate through the NAT lab, against raw asyncio sockets.

Host ``a`` sits behind a port-restricted NAT, host ``pub`` on the fake internet (no
added delay: the path is veth pairs, a bridge and nftables NAT, i.e. the kernel's
forwarding cost).  Each case echoes ``count`` messages of ``size`` bytes from ``a`` to
``pub`` and back (a sender task and a receiver run at once):

* baseline: asyncio streams with a 4-byte length prefix, ``a`` -> ``pub`` over TCP;
* warpgate: an ``auto_connect(methods=["direct"])`` TCP link, encryption on and off.

Run as root on Linux:  python benchmarks/links_lab.py [--mb 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_link_throughput import (
    length_prefixed_echo,
    timed_echoes,
    timed_link_echoes,
)
from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child

PORT_TIMEOUT = 30.0


async def raw_echo_server(
    ip: str, port_out: concurrent.futures.Future[int], done: concurrent.futures.Future[bool]
) -> None:
    server = await asyncio.start_server(length_prefixed_echo, ip, 0)
    port_out.set_result(server.sockets[0].getsockname()[1])
    try:
        await asyncio.wait_for(asyncio.wrap_future(done), 600)
    finally:
        server.close()


async def raw_client(
    ip: str, port_in: concurrent.futures.Future[int], size: int, count: int
) -> float:
    port = await asyncio.wait_for(asyncio.wrap_future(port_in), PORT_TIMEOUT)
    reader, writer = await asyncio.open_connection(ip, port)
    elapsed = await timed_echoes(reader, writer, size, count)
    writer.close()
    return elapsed


def _conf(name: str, encryption: bool) -> dict[str, Any]:
    return dict_child({"identity_name": name, "link_encryption": encryption}, NODE_TEST_CONF)


async def wg_echo_server(
    encryption: bool,
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
) -> None:
    async with Node(port=0, conf=_conf("lablink-pub", encryption)) as node:
        await node.start()
        address_out.set_result(node.address())
        link = await node.accept(timeout=PORT_TIMEOUT)

        async def echo() -> None:
            async for msg in link:
                await link.send(msg)

        task = asyncio.create_task(echo())
        try:
            await asyncio.wait_for(asyncio.wrap_future(done), 600)
        finally:
            task.cancel()


async def wg_client(
    encryption: bool, address_in: concurrent.futures.Future[bytes], size: int, count: int
) -> float:
    async with Node(port=0, conf=_conf("lablink-a", encryption)) as node:
        await node.start()
        address = await asyncio.wait_for(asyncio.wrap_future(address_in), PORT_TIMEOUT)
        link, _ = await auto_connect(node, address, methods=["direct"], timeout=10)
        elapsed = await timed_link_echoes(link, size, count, timeout=30)
        await link.close("done")
        return elapsed


async def one_round(lab: Any, case: str, size: int, count: int) -> float:
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    try:
        if case == "raw":
            port: concurrent.futures.Future[int] = concurrent.futures.Future()
            ip = lab.address("pub")
            _, elapsed = await asyncio.gather(
                lab.arun("pub", raw_echo_server, ip, port, done, timeout=600),
                _then_done(lab.arun("a", raw_client, ip, port, size, count, timeout=600), done),
            )
        else:
            encryption = case == "encrypted"
            address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
            _, elapsed = await asyncio.gather(
                lab.arun("pub", wg_echo_server, encryption, address, done, timeout=600),
                _then_done(
                    lab.arun("a", wg_client, encryption, address, size, count, timeout=600), done
                ),
            )
    finally:
        if not done.done():
            done.set_result(True)
    return float(elapsed)


async def _then_done(coro: Any, done: concurrent.futures.Future[bool]) -> Any:
    try:
        return await coro
    finally:
        if not done.done():
            done.set_result(True)


CASES = ("raw", "encrypted", "plain")


def measure(mb: int, rounds: int, small_count: int = 20_000) -> list[dict[str, Any]]:
    """Best-of-``rounds`` rates per case, for 64 KiB (MB/s) and 64 B (messages/s)."""
    from warpgate.lab import Lab, two_nat

    out = []
    with Lab(two_nat("port-restricted", "open", upnp=False), servers=False) as lab:
        for size in (65536, 64):
            count = max(mb * 1024 * 1024 // size, 50) if size > 1024 else small_count
            times: dict[str, list[float]] = {c: [] for c in CASES}
            for _ in range(rounds):  # interleaved: noise hits every case alike
                for case in CASES:
                    times[case].append(asyncio.run(one_round(lab, case, size, count)))
            for case in CASES:
                best = min(times[case])
                rate = count * size / best / 1e6 if size > 1024 else count / best
                out.append(
                    {
                        "size": size,
                        "count": count,
                        "case": case,
                        "rate": rate,
                        "unit": "MB/s" if size > 1024 else "msg/s",
                    }
                )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=32, help="MB per 64 KiB case")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        for row in measure(args.mb, args.rounds):
            print(f"{row['size']:>6} B  {row['case']:<10} {row['rate']:12,.1f} {row['unit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
