"""Hole punching across the NAT lab: success, direct share and time to first byte per
pair of NAT modes, against a baseline of the same lab run.

Run as root on Linux:

    python benchmarks/bench_punch.py [--tries 10] [--modes open,symmetric] [--delay-ms 25]
        [--cells port-restricted:symmetric] [--json out.json]

For every unordered pair of the lab's NAT modes (15 cells; ``--modes`` narrows them) one
``two-nat`` lab is built (no UPnP; ``--delay-ms`` adds that one-way delay on both WAN
links, each way) and, in it, ``--tries`` tries, each with fresh nodes in both hosts and
the requester alternating between them.  Each try calls ``auto_connect(...,
transport="udp")`` with the default methods (direct, udp_punch, turn compete as in real
use; signalling through the lab's mosquitto, STUN and TURN from its coturn) and is timed
from the call to the first echoed message.

The baseline, measured in the same lab before the tries:

* **signal RTT**: a ping answered by the peer through the signal transport (MQTT via
  the lab's broker), median of 5;
* **WAN RTT** between the two hosts: a UDP echo from each host to a server in the
  public host ``pub``; the hosts' path crosses both WAN links, so its round trip is the
  sum of the two (``pub``'s own link adds no delay), median of 10 each;
* **handshake**: a direct UDP ``auto_connect`` from host ``a`` to a node in ``pub``
  (a link handshake over ``a``'s WAN link), median of 3, moved to the longer path by
  adding the difference of the round trips.

Targets (issue 8): 100 % success and a direct path on every punchable pair (all but
symmetric <-> symmetric); >= 95 % for symmetric <-> cone (birthday probing on
symmetric <-> port-restricted) within 20 s; median time to first byte on punched tries
<= signal RTT + 4 WAN RTT + handshake.  Nothing is asserted; ``--json`` keeps the raw
results.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import json
import secrets
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab.punch_helpers import MATRIX_MODES, matrix_conf, matrix_try
from warpgate import Node, auto_connect
from warpgate.lab import Host, Lab, Router, Topology, parse_mode

UNPUNCHABLE = {("symmetric", "symmetric")}
BIRTHDAY = {("port-restricted", "symmetric"), ("symmetric", "port-restricted")}
PING = b"\x01\x7fpunch-bench-ping"  # a signal message type no method uses
PONG = b"\x01\x7fpunch-bench-pong"


def topology(mode_a: str, mode_b: str, delay_ms: float) -> Topology:
    return Topology(
        routers=(
            Router("nat_a", parse_mode(mode_a), delay_ms=delay_ms),
            Router("nat_b", parse_mode(mode_b), delay_ms=delay_ms),
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b"), Host("pub")),
    )


# ------------------------------------------------------------------ baseline


def udp_echo_server(ready: concurrent.futures.Future[int], stop: float) -> None:
    """In ``pub``: echo UDP datagrams for ``stop`` seconds at most (or until 'bye')."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        s.settimeout(0.2)
        ready.set_result(s.getsockname()[1])
        deadline = time.monotonic() + stop
        while time.monotonic() < deadline:
            try:
                data, addr = s.recvfrom(2048)
            except TimeoutError:
                continue
            if data == b"bye":
                return
            s.sendto(data, addr)


def udp_rtt(server: tuple[str, int], count: int) -> float:
    """Median round trip of ``count`` echoes (seconds); lost ones are skipped."""
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for i in range(count):
            token = secrets.token_bytes(8) + bytes([i])
            begin = time.perf_counter()
            s.sendto(token, server)
            try:
                while s.recvfrom(2048)[0] != token:
                    pass
            except TimeoutError:
                continue
            samples.append(time.perf_counter() - begin)
    return statistics.median(samples) if samples else float("nan")


async def signal_ponger(
    lab: Lab, key_out: concurrent.futures.Future[bytes], stop: concurrent.futures.Future[bool]
) -> None:
    async with Node(port=0, conf=matrix_conf(lab, "sig-b")) as node:
        await node.start()
        transport = next(iter(node.signal_transports.values()))
        tasks: set[asyncio.Task[None]] = set()

        def on_signal(sender: bytes, payload: bytes) -> None:
            if payload == PING:
                task = asyncio.create_task(transport.send(sender, PONG))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        transport.add_handler(on_signal)
        key_out.set_result(node.public_key)
        await asyncio.wait_for(asyncio.wrap_future(stop), 60)


async def signal_pinger(
    lab: Lab,
    key_in: concurrent.futures.Future[bytes],
    stop: concurrent.futures.Future[bool],
    count: int,
) -> float:
    try:
        async with Node(port=0, conf=matrix_conf(lab, "sig-a")) as node:
            await node.start()
            transport = next(iter(node.signal_transports.values()))
            pong: asyncio.Queue[None] = asyncio.Queue()
            transport.add_handler(lambda _s, p: pong.put_nowait(None) if p == PONG else None)
            peer = await asyncio.wrap_future(key_in)
            samples = []
            for _ in range(count + 1):  # the first one also sets up the broker route
                begin = time.perf_counter()
                await transport.send(peer, PING)
                await asyncio.wait_for(pong.get(), 10)
                samples.append(time.perf_counter() - begin)
            return statistics.median(samples[1:])
    finally:
        stop.set_result(True)


async def handshake_to_pub(lab: Lab, count: int) -> float:
    """Median time of a direct UDP auto_connect from ``a`` to a node in ``pub``."""
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop: concurrent.futures.Future[bool] = concurrent.futures.Future()

    async def serve() -> None:
        async with Node(port=0, conf=matrix_conf(lab, "hs-pub")) as node:
            await node.start()
            address.set_result(node.address())
            await asyncio.wait_for(asyncio.wrap_future(stop), 60)

    async def dial() -> float:
        try:
            async with Node(port=0, conf=matrix_conf(lab, "hs-a")) as node:
                await node.start()
                peer = await asyncio.wrap_future(address)
                samples = []
                for _ in range(count):
                    begin = time.perf_counter()
                    link, _ = await auto_connect(
                        node, peer, transport="udp", methods=["direct"], timeout=10
                    )
                    samples.append(time.perf_counter() - begin)
                    await link.close("done")
                return statistics.median(samples)
        finally:
            stop.set_result(True)

    _, took = await asyncio.gather(
        lab.arun("pub", serve, timeout=90), lab.arun("a", dial, timeout=90)
    )
    return took


async def baseline(lab: Lab) -> dict[str, float]:
    ready: concurrent.futures.Future[int] = concurrent.futures.Future()
    echo = asyncio.ensure_future(asyncio.to_thread(lab.call, "pub", udp_echo_server, ready, 120))
    port = await asyncio.wrap_future(ready)
    server = (lab.address("pub"), port)
    rtt_a = await asyncio.to_thread(lab.call, "a", udp_rtt, server, 10)
    rtt_b = await asyncio.to_thread(lab.call, "b", udp_rtt, server, 10)
    with lab.socket("pub") as s:
        s.sendto(b"bye", ("127.0.0.1", port))
    await echo
    key: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop: concurrent.futures.Future[bool] = concurrent.futures.Future()
    _, signal_rtt = await asyncio.gather(
        lab.arun("b", signal_ponger, lab, key, stop, timeout=90),
        lab.arun("a", signal_pinger, lab, key, stop, 5, timeout=90),
    )
    hs_pub = await handshake_to_pub(lab, 3)
    wan = rtt_a + rtt_b
    handshake = hs_pub + (wan - rtt_a)
    return {
        "signal_rtt": signal_rtt,
        "wan_rtt": wan,
        "rtt_a_pub": rtt_a,
        "rtt_b_pub": rtt_b,
        "handshake_pub": hs_pub,
        "handshake": handshake,
        "target": signal_rtt + 4 * wan + handshake,
    }


# ------------------------------------------------------------------ cells


async def run_cell(cell: tuple[str, str], tries: int, delay_ms: float) -> dict[str, Any]:
    lab = Lab(topology(cell[0], cell[1], delay_ms), servers=True).up()
    try:
        base = await baseline(lab)
        results = []
        for i in range(tries):
            requester, responder = ("a", "b") if i % 2 == 0 else ("b", "a")
            result = await matrix_try(lab, requester, responder, kwargs={"transport": "udp"})
            if result.get("ok"):
                result.pop("trace", None)  # kept for failures only
            results.append(result)
    finally:
        lab.down()
    return {"cell": list(cell), "baseline": base, "tries": results}


def summarise(cell: dict[str, Any]) -> dict[str, Any]:
    tries = cell["tries"]
    ok = [t for t in tries if t["ok"]]
    punched = [t["seconds"] for t in ok if t["method"] == "udp_punch"]
    median = statistics.median(punched) if punched else None
    pair = tuple(cell["cell"])
    return {
        "cell": " <-> ".join(pair),
        "success": len(ok) / len(tries),
        "direct": sum(t["kind"] == "direct" for t in ok) / len(tries),
        "methods": dict(sorted(_count(t["method"] for t in ok).items())),
        "median_all_ms": statistics.median(t["seconds"] for t in ok) * 1000 if ok else None,
        "max_ms": max(t["seconds"] for t in ok) * 1000 if ok else None,
        "median_punched_ms": median * 1000 if median is not None else None,
        "target_ms": cell["baseline"]["target"] * 1000,
        "ratio": median / cell["baseline"]["target"] if median is not None else None,
        "punchable": pair not in UNPUNCHABLE,
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MATRIX_MODES))
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--cells", default="", help="only these pairs, e.g. port-restricted:symmetric,open:open"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    modes = [m for m in MATRIX_MODES if m in args.modes.split(",")]
    cells = list(itertools.combinations_with_replacement(modes, 2))
    if args.cells:
        wanted = {tuple(sorted(c.split(":"))) for c in args.cells.split(",")}
        cells = [c for c in cells if tuple(sorted(c)) in wanted]
    began = time.monotonic()
    raw, rows = [], []
    for cell in cells:
        result = await run_cell(cell, args.tries, args.delay_ms)
        raw.append(result)
        row = summarise(result)
        rows.append(row)
        b = result["baseline"]
        print(
            f"{row['cell']:>40}  ok {row['success']:4.0%}  direct {row['direct']:4.0%}  "
            f"{row['methods']}  first byte median {_fmt(row['median_all_ms'])} ms "
            f"(max {_fmt(row['max_ms'])}), punched {_fmt(row['median_punched_ms'])} ms vs "
            f"target {row['target_ms']:.0f} ms = signal {b['signal_rtt'] * 1000:.1f} + "
            f"4 x WAN {b['wan_rtt'] * 1000:.1f} + handshake {b['handshake'] * 1000:.1f} "
            f"-> {_fmt(row['ratio'], '.2f')}x",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"delay_ms": args.delay_ms, "cells": raw}, indent=1))
    punchable = [r for r in rows if r["punchable"]]
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    print(
        f"punchable cells at 100 % direct: "
        f"{sum(r['direct'] == 1.0 for r in punchable)}/{len(punchable)}; success "
        f"{sum(r['success'] == 1.0 for r in rows)}/{len(rows)} cells at 100 %; worst punched "
        f"median / target {_fmt(max(ratios) if ratios else None, '.2f')}x; "
        f"{args.tries} tries per cell, delay {args.delay_ms:g} ms, "
        f"{time.monotonic() - began:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
