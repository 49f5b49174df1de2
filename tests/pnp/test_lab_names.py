"""Names through real NATs (the lab): a node behind a NAT registers its nickname on a PNP
server on the public side, and a public node connects to it by that name.

The PNP server sees the registration come from the NAT's WAN address, which is what its
per-address quota counts.  The nodes share this process (each in its host's network
namespace, on its own loop), so the in-process signal transport carries the reverse
connect request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.demo.lab import serve_pnp

pytestmark = pytest.mark.lab

TIMEOUT = 20.0


def conf(name: str, server: str, **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "identity_name": name,
            "enable_nickname": True,
            "pnp_servers": [server],
            "sig_pipe_no": 1,
            "plugins": {"signal": ["memory"], "name_service": ["pnp"]},
            **extra,
        },
        NODE_TEST_CONF,
    )


async def alice(
    server: str, ready: concurrent.futures.Future[str], done: concurrent.futures.Future[None]
) -> str:
    async with Node(port=0, conf=conf("alice", server)) as node:
        await node.start()
        ready.set_result(node.phase_results["setup_nickname_service"])
        link = await node.accept(timeout=TIMEOUT)
        msg = await link.recv(timeout=TIMEOUT)
        await link.send(b"echo:" + msg)
        await asyncio.wrap_future(done)
        return str(link.path)


async def bob(server: str, ready: concurrent.futures.Future[str]) -> dict[str, Any]:
    async with Node(port=0, conf=conf("bob", server, enable_nickname=False)) as node:
        await node.start()
        name = await asyncio.wrap_future(ready)
        link, method = await auto_connect(node, name, timeout=TIMEOUT)
        await link.send(b"hi alice")
        echo = await link.recv(timeout=TIMEOUT)
        await link.close()
        return {"name": name, "method": method, "echo": echo.decode()}


async def test_connect_by_name_across_a_nat(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(("port-restricted", "open"), servers=False)
    db = tmp_path / "names.db"
    port: concurrent.futures.Future[int] = concurrent.futures.Future()
    stop: concurrent.futures.Future[None] = concurrent.futures.Future()
    server_task = asyncio.ensure_future(
        lab.arun("pub", serve_pnp, lab.address("pub"), 0, db, port, stop, timeout=90)
    )
    try:
        bound: int = await asyncio.wait_for(asyncio.wrap_future(port), 30)  # type: ignore[arg-type]
        server = f"{lab.address('pub')}:{bound}"
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        alice_task = asyncio.ensure_future(lab.arun("a", alice, server, ready, done, timeout=60))
        try:
            report = await lab.arun("pub", bob, server, ready, timeout=60)
        finally:
            done.set_result(None)
            path = await alice_task
        assert report["name"] == "alice.p2p"
        assert report["echo"] == "echo:hi alice"
        assert report["method"] == "reverse"  # alice is behind the NAT: she dialled out
        assert lab.address("pub") in path
    finally:
        if not stop.done():
            stop.set_result(None)
        await server_task
    # the server counted alice's name against the NAT's public address
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, client FROM pnp_names").fetchall()
    assert rows == [("alice", lab.wan_address("nat_a"))]
