"""A node that answers every message of every link with ``b"echo:" + message``: the far
end of connect tests and benchmarks in the NAT lab."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from warpgate.node.node import Node

MAX_LINKS = 100  # links one echo node accepts (bounded, like every loop in tests)


async def run_echo_node(
    conf: dict[str, Any],
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    *,
    timeout: float,
) -> None:
    """Start a fresh node with ``conf``, publish its address in ``address_out``, echo
    until ``done`` is set (or ``timeout`` seconds), then close it and every task."""
    async with Node(port=0, conf=conf) as node:
        await node.start()
        address_out.set_result(node.address())
        tasks: list[asyncio.Task[None]] = []

        async def echo(link: Any) -> None:
            async for msg in link:
                await link.send(b"echo:" + msg)

        async def accept_all() -> None:
            for _ in range(MAX_LINKS):
                tasks.append(asyncio.create_task(echo(await node.accept())))

        acceptor = asyncio.create_task(accept_all())
        try:
            await asyncio.wait_for(asyncio.wrap_future(done), timeout)
        except TimeoutError:
            pass
        finally:
            for task in (acceptor, *tasks):
                task.cancel()
            await asyncio.gather(acceptor, *tasks, return_exceptions=True)
