"""Link throughput and message rate against a plain asyncio stream, on loopback.

Each case echoes N messages (a writer task sends them all while a reader collects the
echoes), so both directions carry the full load:

* baseline: asyncio streams with a 4-byte length prefix per message (no security);
* warpgate link, encryption on (the default) and off (``link_encryption=False``).

Target (issue 4): 64 KiB messages with encryption on >= 70% of the baseline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child


async def length_prefixed_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The baseline's server side: echo 4-byte-length-prefixed messages until EOF."""
    try:
        while True:
            n = int.from_bytes(await reader.readexactly(4), "big")
            data = await reader.readexactly(n)
            writer.write(n.to_bytes(4, "big") + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def timed_echoes(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int, count: int
) -> float:
    """The baseline's client side: seconds to send ``count`` length-prefixed messages of
    ``size`` bytes while reading their echoes."""
    payload = os.urandom(size)

    async def send() -> None:
        for _ in range(count):
            writer.write(size.to_bytes(4, "big") + payload)
            await writer.drain()

    begin = time.perf_counter()
    sender = asyncio.create_task(send())
    for _ in range(count):
        n = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(n)
    await sender
    return time.perf_counter() - begin


async def timed_link_echoes(
    link: Any, size: int, count: int, timeout: float | None = None
) -> float:
    """The link's client side: seconds to send ``count`` messages of ``size`` bytes while
    reading their echoes (each within ``timeout`` seconds, if given)."""
    payload = os.urandom(size)

    async def send() -> None:
        for _ in range(count):
            await link.send(payload)

    begin = time.perf_counter()
    sender = asyncio.create_task(send())
    for _ in range(count):
        await link.recv(timeout=timeout)
    await sender
    return time.perf_counter() - begin


async def plain_round(size: int, count: int) -> float:
    server = await asyncio.start_server(length_prefixed_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    elapsed = await timed_echoes(reader, writer, size, count)
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return elapsed


async def link_round(size: int, count: int, encryption: bool) -> float:
    extra = {"link_encryption": encryption}
    conf_a = dict_child({"identity_name": "tp-a", **extra}, NODE_TEST_CONF)
    conf_b = dict_child({"identity_name": "tp-b", **extra}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf_a) as a,
        Node(ip="127.0.0.1", port=0, conf=conf_b) as b,
    ):
        await a.start()
        await b.start()
        link, _ = await auto_connect(a, b.address())
        inbound = await b.accept(5)

        async def echo() -> None:
            async for msg in inbound:
                await inbound.send(msg)

        echo_task = asyncio.create_task(echo())
        elapsed = await timed_link_echoes(link, size, count)
        echo_task.cancel()
        return elapsed


async def main(total_mb: int, rounds: int) -> None:
    for size in (65536, 64):
        count = max(total_mb * 1024 * 1024 // size, 200) if size > 1024 else 20000
        # Interleaved rounds, best of each: a noisy neighbour hits all cases alike.
        times: dict[str, list[float]] = {"base": [], "enc": [], "plain": []}
        for _ in range(rounds):
            times["base"].append(await plain_round(size, count))
            times["enc"].append(await link_round(size, count, True))
            times["plain"].append(await link_round(size, count, False))
        base, enc, plain = (min(times[k]) for k in ("base", "enc", "plain"))
        unit = "MB/s" if size > 1024 else "msg/s"

        def rate(t: float, size: int = size, count: int = count) -> float:
            return count * size / t / 1e6 if size > 1024 else count / t

        print(f"{size}-byte messages, {count} echoed each way (best of {rounds}):")
        print(f"  baseline asyncio stream : {rate(base):10.1f} {unit}")
        print(
            f"  link, encrypted         : {rate(enc):10.1f} {unit}  ({base / enc:.0%} of baseline)"
        )
        print(
            f"  link, encryption off    : {rate(plain):10.1f} {unit}  "
            f"({base / plain:.0%} of baseline)"
        )
    print("target: 64 KiB encrypted >= 70% of baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=128, help="MB per 64 KiB case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        asyncio.run(main(args.mb, args.rounds))
