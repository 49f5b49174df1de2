"""NAT matrix: warpgate ``auto_connect`` against an ICE stack (aioice), same lab, same run.

Run as root on Linux:

    python benchmarks/nat_matrix.py [--tries 5] [--modes open,symmetric] [--transports udp]

For every unordered pair of the lab's NAT modes (open, full-cone, address-restricted,
port-restricted, symmetric: 15 cells) one ``two-nat`` lab is built (no UPnP: ICE has no
port mapping, so the cells compare traversal alone) and, in that lab:

* **warpgate**: per try a fresh node in host ``b`` (accepting) and a fresh node in host
  ``a`` calling ``auto_connect`` with every installed traversal method (whatever
  ``warpgate plugins list`` shows: direct, reverse, udp_punch, tcp_punch, turn, ...),
  signalling through the lab's mosquitto, STUN and TURN from the lab's coturn, NTP from
  the lab's chrony.  Timed from the ``auto_connect`` call to the first echoed message
  (resent every 100 ms on UDP, which loses datagrams);
* **ICE**: one aioice session per try (see ``ice_baseline.py``), timed from gathering to
  the first echoed datagram.

Per cell and side: success rate, share of tries that ended on a direct path and on a
relay, median and p95 time to first byte (over successful tries).  A second pass repeats
everything with ``--delay-ms`` (default 25 ms each way, i.e. 50 ms RTT per WAN link) and
``--loss`` (default 1 %) on both WAN links.

Goals (issue 11), evaluated per cell: warpgate's direct share >= ICE's (strictly higher
where ICE relayed and a direct path exists, i.e. not symmetric <-> symmetric); median time
to first byte <= 0.5x ICE's; success rate >= ICE's.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ice_baseline import IceServers, ice_try
from warpgate import NODE_TEST_CONF, ConnectError, Node, auto_connect, dict_child
from warpgate.testing.echo_node import run_echo_node

MODES = ("open", "full-cone", "address-restricted", "port-restricted", "symmetric")
#: Deadline of one try, each side (auto_connect's own deadline is CONNECT_TIMEOUT).
TRY_TIMEOUT = 20.0
CONNECT_TIMEOUT = 10.0
RESEND = 0.1
#: Longest a link relayed at its first byte is watched for an upgrade to direct.
UPGRADE_WAIT = 2.0
#: Direct path impossible without port mapping: neither side can predict the other's.
UNPUNCHABLE = {("symmetric", "symmetric")}

Progress = Callable[[str], None]


# ------------------------------------------------------------------ warpgate side


def node_conf(lab: Any, name: str) -> dict[str, Any]:
    """Everything on, pointed at the lab's servers; UPnP off (ICE has none)."""
    stun = lab.servers["stun"]
    server = f"{stun['host']}:{stun['port']}"
    mqtt = lab.servers["mqtt"]
    ntp = lab.servers.get("ntp")
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["mqtt"]},
            "mqtt_brokers": [f"mqtt://{mqtt['host']}:{mqtt['port']}"],
            "enable_stun_clients": True,
            "stun_servers": [server],
            "stun_cache_ttl": 0,  # every try measures its own NAT, as a fresh node would
            "turn_servers": [server],
            "turn_username": stun["username"],
            "turn_password": stun["password"],
            "init_clock_skew": ntp is not None,
            "ntp_servers": [f"{ntp['host']}:{ntp['port']}"] if ntp else [],
            "enable_upnp": False,
            "enable_nickname": False,
            "connect_timeout": CONNECT_TIMEOUT,
        },
        NODE_TEST_CONF,
    )


async def wg_accept(
    lab: Any,
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
) -> dict[str, Any]:
    """Host ``b``: a fresh node that echoes every message of its links until ``done``."""
    await run_echo_node(node_conf(lab, "matrix-b"), address_out, done, timeout=TRY_TIMEOUT)
    return {}


async def wg_dial(
    lab: Any,
    address_in: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    transport: str,
) -> dict[str, Any]:
    """Host ``a``: a fresh node; auto_connect with every method, time the first echo."""
    out: dict[str, Any] = {"ok": False, "kind": None}
    try:
        async with Node(port=0, conf=node_conf(lab, "matrix-a")) as node:
            await node.start()
            address = await asyncio.wait_for(asyncio.wrap_future(address_in), TRY_TIMEOUT)
            out["methods"] = sorted(node.traversal_methods)
            begin = time.perf_counter()
            try:
                link, method = await auto_connect(node, address, transport=transport)  # type: ignore[arg-type]
                echo = await asyncio.wait_for(_first_echo(link), CONNECT_TIMEOUT)
                took = time.perf_counter() - begin
                first_kind = link.path.kind
                # A relayed UDP link may move to a direct path it proves later (turn's
                # upgrade): the share counts where the data ends up, within UPGRADE_WAIT.
                for _ in range(int(UPGRADE_WAIT / 0.05)):
                    if link.path.kind == "direct" or link.closed:
                        break
                    await asyncio.sleep(0.05)
                out.update(
                    ok=echo == b"echo:ping",
                    seconds=took,
                    method=method,
                    kind=link.path.kind,
                    kind_at_first_byte=first_kind,
                    upgraded_after=(
                        time.perf_counter() - begin if link.path.kind != first_kind else None
                    ),
                    path=str(link.path),
                    # Link.trace is typed list[object]; its items are connect Attempts.
                    trace=[str(getattr(a, "describe", a.__repr__)()) for a in link.trace],
                )
                await link.close("done")
            except (ConnectError, TimeoutError, ConnectionError) as exc:
                out.update(error=str(exc), seconds=time.perf_counter() - begin)
    finally:
        if not done.done():
            done.set_result(True)
    return out


async def _first_echo(link: Any) -> bytes:
    for _ in range(10_000):
        await link.send(b"ping")
        try:
            msg: bytes = await link.recv(timeout=RESEND)
            return msg
        except TimeoutError:
            continue
    raise TimeoutError("no echo")


async def wg_try(lab: Any, transport: str) -> dict[str, Any]:
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    limit = TRY_TIMEOUT + 30
    try:
        _served, dialled = await asyncio.gather(
            lab.arun("b", wg_accept, lab, address, done, timeout=limit),
            lab.arun("a", wg_dial, lab, address, done, transport, timeout=limit),
        )
    except Exception as exc:  # a node that could not start is a failed try, not a crash
        return {"ok": False, "kind": None, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = dialled
    return result


# ------------------------------------------------------------------ statistics


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (the maximum for fewer than 20 values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summarise(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, direct and relayed shares (of all tries), median and p95 seconds."""
    n = len(tries)
    ok = [t for t in tries if t.get("ok")]
    times = [t["seconds"] for t in ok]
    methods: dict[str, int] = {}
    for t in ok:
        key = t.get("method") or t.get("pair") or "?"
        methods[key] = methods.get(key, 0) + 1
    checks = [t["checks_seconds"] for t in ok if "checks_seconds" in t]
    return {
        "tries": n,
        # ICE only: the part after both candidate lists were known (no gathering)
        "checks_median_s": statistics.median(checks) if checks else None,
        "success": len(ok) / n if n else 0.0,
        "direct": sum(t.get("kind") == "direct" for t in ok) / n if n else 0.0,
        "relayed": sum(t.get("kind") == "relay" for t in ok) / n if n else 0.0,
        "direct_at_first_byte": (
            sum(t.get("kind_at_first_byte", t.get("kind")) == "direct" for t in ok) / n
            if n
            else 0.0
        ),
        "median_s": statistics.median(times) if times else None,
        "p95_s": p95(times) if times else None,
        "methods": methods,
        "errors": sorted(
            {str(t.get("error", "")).splitlines()[0] for t in tries if not t.get("ok")}
        ),
    }


def goals(cell: tuple[str, str], wg: dict[str, Any], ice: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals for one cell: each {'value', 'baseline', 'ratio', 'target', 'met'}."""
    strict = ice["direct"] < 1.0 and tuple(sorted(cell)) not in UNPUNCHABLE
    direct_met = wg["direct"] > ice["direct"] if strict else wg["direct"] >= ice["direct"]
    if strict and wg["direct"] == 1.0:
        direct_met = True  # cannot be higher than all
    out: dict[str, Any] = {
        "success": {
            "value": wg["success"],
            "baseline": ice["success"],
            "target": ">= ICE",
            "met": wg["success"] >= ice["success"],
        },
        "direct": {
            "value": wg["direct"],
            "baseline": ice["direct"],
            "target": "> ICE (ICE relayed)" if strict else ">= ICE",
            "met": direct_met,
        },
    }
    if wg["median_s"] is not None and ice["median_s"] is not None:
        ratio = wg["median_s"] / ice["median_s"]
        out["ttfb"] = {
            "value": wg["median_s"],
            "baseline": ice["median_s"],
            "ratio": ratio,
            "target": "<= 0.5x ICE",
            "met": ratio <= 0.5,
        }
    else:
        out["ttfb"] = {
            "value": wg["median_s"],
            "baseline": ice["median_s"],
            "target": "<= 0.5x ICE",
            "met": wg["median_s"] is not None,  # warpgate connected where ICE never did
        }
    return out


# ------------------------------------------------------------------ the matrix


def cells(modes: Iterable[str], *, ordered: bool = False) -> list[tuple[str, str]]:
    """Pairs (mode of a, mode of b); ``ordered`` adds the other direction of each pair
    (reverse connects and punching are not symmetric)."""
    modes = list(modes)
    if ordered:
        return list(itertools.product(modes, repeat=2))
    return list(itertools.combinations_with_replacement(modes, 2))


def run_cell(
    mode_a: str,
    mode_b: str,
    *,
    tries: int,
    transports: list[str],
    delay_ms: float = 0.0,
    loss: float = 0.0,
    ice: bool = True,
    progress: Progress = print,
) -> dict[str, Any]:
    from warpgate.lab import Lab, two_nat

    topo = two_nat(mode_a, mode_b, upnp=False)
    if delay_ms:
        topo = topo.with_delay({"nat_a": (delay_ms, 0.0), "nat_b": (delay_ms, 0.0)})
    if loss:
        topo = topo.with_loss({"nat_a": loss, "nat_b": loss})
    raw: dict[str, list[dict[str, Any]]] = {f"warpgate-{t}": [] for t in transports}
    if ice:
        raw["ice"] = []
    begin = time.perf_counter()
    with Lab(topo) as lab:
        servers = IceServers.from_lab(lab)
        # Interleaved: a noisy neighbour hits every side alike.
        for _ in range(tries):
            for t in transports:
                raw[f"warpgate-{t}"].append(asyncio.run(wg_try(lab, t)))
            if ice:
                raw["ice"].append(asyncio.run(ice_try(lab, servers, TRY_TIMEOUT)))
    summary = {side: summarise(results) for side, results in raw.items()}
    cell: dict[str, Any] = {
        "a": mode_a,
        "b": mode_b,
        "delay_ms": delay_ms,
        "loss": loss,
        "seconds": time.perf_counter() - begin,
        "summary": summary,
        "raw": raw,
        "methods": sorted(
            {m for r in raw.get(f"warpgate-{transports[0]}", []) for m in r.get("methods", [])}
        ),
    }
    if ice:
        cell["goals"] = {
            t: goals((mode_a, mode_b), summary[f"warpgate-{t}"], summary["ice"]) for t in transports
        }
    progress(describe_cell(cell))
    return cell


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f}"


def describe_cell(cell: dict[str, Any]) -> str:
    parts = []
    for side, s in cell["summary"].items():
        parts.append(
            f"{side} {s['success']:.0%} ok, {s['direct']:.0%} direct, "
            f"median {_ms(s['median_s'])} ms, p95 {_ms(s['p95_s'])} ms"
        )
    return f"{cell['a']} <-> {cell['b']} ({cell['seconds']:.0f} s): " + " | ".join(parts)


def run_matrix(
    *,
    modes: Iterable[str] = MODES,
    tries: int = 5,
    transports: list[str] | None = None,
    delay_ms: float = 25.0,
    loss: float = 0.01,
    passes: Iterable[str] = ("clean", "impaired"),
    ice: bool = True,
    ordered: bool = False,
    progress: Progress = print,
) -> dict[str, Any]:
    """Both passes over every cell; a JSON-able dict."""
    transports = transports or ["udp"]
    todo = cells(modes, ordered=ordered)
    out: dict[str, Any] = {
        "tries": tries,
        "transports": transports,
        "modes": list(modes),
        "passes": {},
    }
    for name in passes:
        d, lo = (delay_ms, loss) if name == "impaired" else (0.0, 0.0)
        progress(
            f"NAT matrix pass '{name}' ({len(todo)} cells x {tries} tries; "
            f"WAN delay {d:g} ms each way, loss {lo:.0%})"
        )
        results = []
        for i, (a, b) in enumerate(todo, start=1):
            progress(f"[{name} {i}/{len(todo)}] {a} <-> {b} ...")
            results.append(
                run_cell(
                    a,
                    b,
                    tries=tries,
                    transports=transports,
                    delay_ms=d,
                    loss=lo,
                    ice=ice,
                    progress=progress,
                )
            )
        out["passes"][name] = {"delay_ms": d, "loss": lo, "cells": results}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5, help="tries per cell and side")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated NAT modes")
    parser.add_argument("--transports", default="udp,tcp", help="warpgate transports")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way WAN delay, pass 2")
    parser.add_argument("--loss", type=float, default=0.01, help="WAN loss fraction, pass 2")
    parser.add_argument("--passes", default="clean,impaired")
    parser.add_argument("--ordered", action="store_true", help="both directions of each pair")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home  # never touch the user's keystore
        result = run_matrix(
            modes=[m.strip() for m in args.modes.split(",") if m.strip()],
            tries=args.tries,
            transports=[t.strip() for t in args.transports.split(",") if t.strip()],
            delay_ms=args.delay_ms,
            loss=args.loss,
            passes=[p.strip() for p in args.passes.split(",") if p.strip()],
            ordered=args.ordered,
            progress=lambda line: print(line, flush=True),
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
