"""Shared by the punch lab tests and the punch benchmark: two nodes in two lab hosts,
each classifying its NAT against the lab's coturn, signalling through the in-process
transport; one accepts, the other auto_connects."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from typing import Any

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.connect import ConnectError

TIMEOUT = 20.0


def node_conf(name: str, stun: str, **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["memory"]},
            "enable_stun_clients": True,
            "stun_servers": [stun],
            "stun_timeout": 2.0,
            "stun_cache_ttl": 0,
            **extra,
        },
        NODE_TEST_CONF,
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def serve(
    name: str,
    stun: str,
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    rounds: int,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """Accept ``rounds`` links, echo one message on each; stay up until ``done``."""
    seen = []
    async with Node(port=0, conf=node_conf(name, stun, **extra)) as node:
        await node.start()
        address_out.set_result(node.address())
        for _ in range(rounds):
            try:
                link = await node.accept(timeout=TIMEOUT)
            except TimeoutError:
                break
            msg = await link.recv(timeout=TIMEOUT)
            await link.send(b"echo:" + msg)
            seen.append({"path": str(link.path), "method": link.path.method})
        await asyncio.wrap_future(done)
    return seen


async def dial(
    name: str,
    stun: str,
    address_in: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    tries: list[dict[str, Any]],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """One auto_connect per entry of ``tries`` (its kwargs), one echo each; a failure is
    recorded, not raised."""
    results = []
    try:
        async with Node(port=0, conf=node_conf(name, stun, **extra)) as node:
            await node.start()
            address = await asyncio.wrap_future(address_in)
            for kwargs in tries:
                begin = time.perf_counter()
                try:
                    link, method = await auto_connect(node, address, **kwargs)
                    await link.send(b"hi")
                    echo = await link.recv(timeout=TIMEOUT)
                    took = time.perf_counter() - begin
                    results.append(
                        {
                            "ok": echo == b"echo:hi",
                            "method": method,
                            "path": str(link.path),
                            "seconds": took,
                            "trace": [a.describe() for a in link.trace],
                        }
                    )
                    await link.close("done")
                except ConnectError as exc:
                    results.append(
                        {
                            "ok": False,
                            "method": None,
                            "error": str(exc),
                            "seconds": time.perf_counter() - begin,
                        }
                    )
    finally:
        if not done.done():
            done.set_result(True)
    return results


async def run_pair(
    lab: Any,
    tries: list[dict[str, Any]],
    *,
    server_host: str = "b",
    client_host: str = "a",
    server_extra: dict[str, Any] | None = None,
    client_extra: dict[str, Any] | None = None,
    accepts: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    limit = 60 + 25 * len(tries)
    served, dialled = await asyncio.gather(
        lab.arun(
            server_host,
            serve,
            f"srv-{server_host}",
            stun,
            address,
            done,
            len(tries) if accepts is None else accepts,
            server_extra or {},
            timeout=limit,
        ),
        lab.arun(
            client_host,
            dial,
            f"cli-{client_host}",
            stun,
            address,
            done,
            tries,
            client_extra or {},
            timeout=limit,
        ),
    )
    return served, dialled
