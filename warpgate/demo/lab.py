"""``warpgate demo --lab``: the demo across real NATs (Linux, root).

A ``two-nat`` lab with its real servers (mosquitto for signalling, coturn for STUN and
TURN), a PNP name server in the lab's ``inet`` namespace, ``bob`` in host ``b`` behind
one NAT and ``alice`` in host ``a`` behind another.  Alice connects to ``bob.p2p`` by
every installed traversal method, as the plain demo does on loopback: here direct dials
fail at the NATs and punching and relaying have real work to do.

Each node runs on its own event loop in a thread inside its host's namespace; the lab
and everything in it is torn down on exit, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from warpgate.config import dict_child
from warpgate.demo.runner import (
    DemoReport,
    MethodResult,
    _bob_answers,
    _run_methods,
    line_printer,
)
from warpgate.gate import Gate
from warpgate.node.node_defs import NODE_CONF
from warpgate.sansio.address import NodeAddress

PNP_PORT = 5300
STEP_TIMEOUT = 120.0


def lab_conf(server_ip: str, home: Path, lab_servers: dict[str, Any]) -> dict[str, Any]:
    """Conf for a node in the lab: the lab's servers, nothing outside it."""
    stun = lab_servers["stun"]
    stun_at = f"{stun['host']}:{stun['port']}"
    mqtt = lab_servers["mqtt"]
    from warpgate.lab.servers import TURN_PASSWORD, TURN_USER

    return dict_child(
        {
            "install_path": str(home),
            "pnp_servers": [f"{server_ip}:{PNP_PORT}"],
            "enable_nickname": True,
            "stun_servers": [stun_at],
            "enable_stun_clients": True,
            "stun_timeout": 2.0,
            # Each run's NATs are new: a cached mapping from an earlier lab would lie.
            "stun_cache_ttl": 0,
            "turn_servers": [stun_at],
            "turn_username": TURN_USER,
            "turn_password": TURN_PASSWORD,
            "mqtt_brokers": [f"mqtt://{mqtt['host']}:{mqtt['port']}"],
            "sig_pipe_no": 1,
            "plugins": {"signal": ["mqtt"]},
            "enable_upnp": False,
            "init_clock_skew": False,
        },
        NODE_CONF,
    )


async def serve_pnp(
    ip: str,
    port: int,
    db: Path,
    ready: concurrent.futures.Future[int],
    stop: concurrent.futures.Future[None],
) -> None:
    """A PNP server (SQLite ``db``) on ``ip:port`` (0: any free port) until ``stop`` is
    set; ``ready`` gets its port.  Run it in a lab host with ``lab.arun``."""
    from warpgate.pnp.server import PnpServer
    from warpgate.pnp.store import SqliteStore

    async with PnpServer(SqliteStore(db), host=ip, port=port) as server:
        ready.set_result(server.port)
        await asyncio.wrap_future(stop)


async def _bob(
    conf: dict[str, Any],
    nodes: dict[str, str],
    ready: concurrent.futures.Future[str],
    stop: concurrent.futures.Future[None],
) -> None:
    try:
        async with Gate("bob", conf, port=0) as bob:
            # Register again now that start() is over: the record made during start-up
            # was signed before the STUN results (the external address) were in.
            await bob.node.nickname("bob")
            bob.listen(_bob_answers)
            # By name; by address text if the name could not be registered.
            nodes[bob.full_name or "bob"] = bob.node.node_id
            ready.set_result(bob.full_name or NodeAddress.decode(bob.address()).to_text())
            await asyncio.wrap_future(stop)
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


async def _alice(
    conf: dict[str, Any],
    bob_ready: concurrent.futures.Future[str],
    stop: concurrent.futures.Future[None],
    out: TextIO,
    quiet: bool,
    nodes: dict[str, str],
) -> list[MethodResult]:
    target = await asyncio.wrap_future(bob_ready)
    async with Gate("alice", conf, port=0) as alice:
        await alice.node.nickname("alice")  # as for bob: the address with its NAT mapping
        nodes[alice.full_name or "alice"] = alice.node.node_id
        work = asyncio.ensure_future(_run_methods(alice, target, out, None, quiet))
        aborted = asyncio.wrap_future(stop)
        # Ctrl-C in the main thread sets ``stop``: give up at once rather than finish.
        either: list[asyncio.Future[Any]] = [work, aborted]  # two result types
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
        aborted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            return await work
        return []


async def run_lab_demo(lab: Any, out: TextIO, *, quiet: bool = False) -> DemoReport:
    from warpgate.lab.topology import SERVER_ADDRESS

    report = DemoReport()
    began = time.monotonic()
    say = line_printer(out, quiet)
    stop: concurrent.futures.Future[None] = concurrent.futures.Future()
    pnp_ready: concurrent.futures.Future[int] = concurrent.futures.Future()
    bob_ready: concurrent.futures.Future[str] = concurrent.futures.Future()
    with tempfile.TemporaryDirectory(prefix="warpgate-demo-lab-") as tmp:
        work = Path(tmp)
        report.infra = [
            f"lab              {lab.prefix} (network namespaces {lab.prefix}-*)",
            f"PNP name server  {SERVER_ADDRESS}:{PNP_PORT} (in the lab's internet)",
            *(f"{name:<16} {s['host']}:{s['port']}" for name, s in sorted(lab.servers.items())),
        ]
        for router in lab.topology.routers:
            report.infra.append(f"NAT {router.name:<12} {router.mode.value}")
        say("warpgate demo --lab: alice (host a) and bob (host b) behind real NATs")
        for line in report.infra:
            say("  " + line)
        say()
        pnp = asyncio.ensure_future(
            lab.arun(
                "inet",
                serve_pnp,
                SERVER_ADDRESS,
                PNP_PORT,
                work / "names.db",
                pnp_ready,
                stop,
                timeout=STEP_TIMEOUT * 3,
            )
        )
        bob = alice = None
        try:
            await asyncio.wrap_future(pnp_ready)
            conf_a = lab_conf(SERVER_ADDRESS, work / "alice", lab.servers)
            conf_b = lab_conf(SERVER_ADDRESS, work / "bob", lab.servers)
            bob = asyncio.ensure_future(
                lab.arun("b", _bob, conf_b, report.nodes, bob_ready, stop, timeout=STEP_TIMEOUT * 3)
            )
            alice = asyncio.ensure_future(
                lab.arun(
                    "a",
                    _alice,
                    conf_a,
                    bob_ready,
                    stop,
                    out,
                    quiet,
                    report.nodes,
                    timeout=STEP_TIMEOUT * 2,
                )
            )
            report.results = await alice
        finally:
            if not stop.done():
                stop.set_result(None)
            for task in (alice, bob, pnp):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
    report.finish(began)
    return report
