"""The sections of ``python -m benchmarks``: each runs one benchmark (calling the
``bench_*.py`` scripts' own functions, or the script itself when it only prints) and
returns measurement rows.  ``quick`` makes every section small enough for a smoke run.

A section is a function ``(ctx) -> dict`` with ``rows`` (a list of :class:`Row`) and
optionally ``raw`` (anything JSON-able) or ``matrix`` (the NAT matrix).
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.report import Row

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass
class Context:
    quick: bool
    progress: Callable[[str], None]
    tries: int | None = None  # NAT matrix tries per cell (None: 5, quick 2)
    transports: list[str] = field(default_factory=lambda: ["udp", "tcp"])
    modes: list[str] | None = None
    delay_ms: float = 25.0
    loss: float = 0.01
    ordered: bool = False  # NAT matrix: both directions of each pair


def lab_reason() -> str | None:
    """Why lab sections cannot run here (None: they can)."""
    from warpgate.testing.pytest_plugin import lab_unavailable_reason

    return lab_unavailable_reason(servers=True, upnp=True)


class Skipped(Exception):
    """A section that cannot run on this machine (the reason is the message)."""


def _need_lab() -> None:
    reason = lab_reason()
    if reason:
        raise Skipped(reason)


def run_script(name: str, args: list[str], timeout: float) -> str:
    """Run ``benchmarks/NAME`` in its own interpreter; its stdout (raises on failure)."""
    done = subprocess.run(
        [sys.executable, str(HERE / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{name} exited with {done.returncode}: {' / '.join(tail)}")
    return done.stdout


def _number(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found.group(1).replace(",", "")) if found else None


# ------------------------------------------------------------------ NAT matrix


def nat_matrix(ctx: Context) -> dict[str, Any]:
    """warpgate auto_connect vs aioice ICE on every pair of lab NAT modes, clean and impaired."""
    _need_lab()
    from benchmarks.nat_matrix import MODES, run_matrix

    tries = ctx.tries or (2 if ctx.quick else 5)
    matrix = run_matrix(
        modes=ctx.modes or MODES,
        tries=tries,
        transports=ctx.transports,
        delay_ms=ctx.delay_ms,
        loss=ctx.loss,
        ordered=ctx.ordered,
        progress=ctx.progress,
    )
    rows = []
    for pname, p in matrix["passes"].items():
        for c in p["cells"]:
            cell = f"{c['a']} ↔ {c['b']}, {pname}"
            ice = c["summary"]["ice"]
            for transport, g in c["goals"].items():
                wg = c["summary"][f"warpgate-{transport}"]
                rows.append(
                    Row(
                        "nat matrix",
                        f"{cell}: warpgate {transport} success",
                        g["success"]["value"],
                        "%",
                        g["success"]["baseline"],
                        "ICE",
                        target=g["success"]["target"],
                        met=g["success"]["met"],
                    )
                )
                rows.append(
                    Row(
                        "nat matrix",
                        f"{cell}: warpgate {transport} direct share",
                        g["direct"]["value"],
                        "%",
                        g["direct"]["baseline"],
                        "ICE",
                        target=g["direct"]["target"],
                        met=g["direct"]["met"],
                        note=", ".join(f"{k} {v}" for k, v in sorted(wg["methods"].items()))
                        + f"; direct at first byte {wg['direct_at_first_byte']:.0%}",
                    )
                )
                t = g["ttfb"]
                rows.append(
                    Row(
                        "nat matrix",
                        f"{cell}: warpgate {transport} median time to first byte",
                        None if t["value"] is None else t["value"] * 1000,
                        "ms",
                        None if t["baseline"] is None else t["baseline"] * 1000,
                        "ICE",
                        target=t["target"],
                        met=t["met"],
                        note=f"p95 {_p95(wg)} ms vs ICE {_p95(ice)} ms; ICE without "
                        f"gathering {_ms(ice['checks_median_s'])} ms",
                    )
                )
    return {"rows": rows, "matrix": matrix}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _p95(summary: dict[str, Any]) -> str:
    return "-" if summary["p95_s"] is None else f"{summary['p95_s'] * 1000:.0f}"


# ------------------------------------------------------------------ links


def links_loopback(ctx: Context) -> dict[str, Any]:
    """Link throughput and message rate on loopback vs asyncio streams (encryption on/off)."""
    from benchmarks import bench_link_throughput as b

    mb, rounds, small = (4, 1, 2000) if ctx.quick else (64, 3, 20_000)
    rows = []
    for size in (65536, 64):
        count = max(mb * 1024 * 1024 // size, 50) if size > 1024 else small
        times: dict[str, list[float]] = {"base": [], "enc": [], "plain": []}
        for _ in range(rounds):
            times["base"].append(asyncio.run(b.plain_round(size, count)))
            times["enc"].append(asyncio.run(b.link_round(size, count, True)))
            times["plain"].append(asyncio.run(b.link_round(size, count, False)))
        rows += _link_rows("links, loopback", size, count, {k: min(v) for k, v in times.items()})
    return {"rows": rows}


def _link_rows(section: str, size: int, count: int, best: dict[str, float]) -> list[Row]:
    big = size > 1024

    def rate(t: float) -> float:
        return count * size / t / 1e6 if big else count / t

    unit = "MB/s" if big else "msg/s"
    label = "64 KiB messages" if big else f"{size} B messages"
    base = rate(best["base"])
    target_enc = ">= 70% of raw" if big else ""
    enc = rate(best["enc"])
    return [
        Row(
            section,
            f"{label}, encrypted link",
            enc,
            unit,
            base,
            "raw asyncio stream",
            target=target_enc,
            met=(enc / base >= 0.7) if big else None,
        ),
        Row(
            section,
            f"{label}, encryption off",
            rate(best["plain"]),
            unit,
            base,
            "raw asyncio stream",
        ),
    ]


def links_lab(ctx: Context) -> dict[str, Any]:
    """The same through a lab NAT (host a -> pub) vs asyncio streams on the same path."""
    _need_lab()
    from benchmarks.links_lab import measure

    mb, rounds, small = (4, 1, 2000) if ctx.quick else (32, 3, 20_000)
    measured = measure(mb, rounds, small)
    rows = []
    for size in (65536, 64):
        by_case = {r["case"]: r for r in measured if r["size"] == size}
        count = by_case["raw"]["count"]
        # _link_rows wants times; convert rates back (time = work / rate).
        work = count * size / 1e6 if size > 1024 else count
        best = {
            "base": work / by_case["raw"]["rate"],
            "enc": work / by_case["encrypted"]["rate"],
            "plain": work / by_case["plain"]["rate"],
        }
        rows += _link_rows("links, through the lab (a → pub, NAT)", size, count, best)
    return {"rows": rows, "raw": measured}


def connect_loopback(ctx: Context) -> dict[str, Any]:
    """auto_connect + first echo on loopback vs asyncio connect + echo (bench_connect.py):
    a resumed link (the target), the first link between two nodes and TLS 1.3 beside it."""
    out = run_script("bench_connect.py", ["--runs", "10" if ctx.quick else "200"], 300)
    base = _number(r"baseline asyncio connect \+ echo: median ([\d.]+) ms", out)
    ours = _number(r"warpgate auto_connect \+ echo:\s+median ([\d.]+) ms", out)
    first = _number(r"first link \(full handshake\):\s+median ([\d.]+) ms", out)
    tls = _number(r"reference, TLS 1.3 \(stdlib ssl\): median ([\d.]+) ms", out)
    ratio = None if not (base and ours) else ours / base
    baseline = "asyncio connect + echo"
    return {
        "rows": [
            Row(
                "connect, loopback",
                "auto_connect + first echo, link resumed",
                ours,
                "ms",
                base,
                baseline,
                target="<= 3x",
                met=None if ratio is None else ratio <= 3,
            ),
            Row(
                "connect, loopback",
                "auto_connect + first echo, first link (full handshake)",
                first,
                "ms",
                base,
                baseline,
            ),
            Row(
                "connect, loopback",
                "reference: TLS 1.3 connect + echo (stdlib ssl, server certificate only)",
                tls,
                "ms",
                base,
                baseline,
            ),
        ],
        "raw": out,
    }


# ------------------------------------------------------------------ start-up


def startup(ctx: Context) -> dict[str, Any]:
    """Node start + close with NODE_TEST_CONF vs an asyncio server (bench_node_start.py)."""
    from benchmarks import bench_node_start as b

    runs = 20 if ctx.quick else 50

    async def go() -> tuple[float, float]:
        base = statistics.median(await b.measure(b.baseline, runs))
        node = statistics.median(await b.measure(b.node_loopback, runs))
        return base, node

    base, node = asyncio.run(go())
    return {
        "rows": [
            Row(
                "start-up",
                "Node(NODE_TEST_CONF).start() + close(), loopback",
                node,
                "ms",
                base,
                "asyncio TCP server + UDP endpoint",
                target="<= 30 ms and <= 10x",
                met=node <= 30 and node / base <= 10,
            )
        ]
    }


async def _start_test_conf(stun: str) -> dict[str, Any]:
    """In a lab host: a node with NODE_TEST_CONF (nothing on the network but listening)."""
    from warpgate import NODE_TEST_CONF, Node

    node = Node(port=0, conf=NODE_TEST_CONF)
    try:
        begin = time.perf_counter()
        await node.start()
        return {"total": time.perf_counter() - begin, "times": dict(node.phase_times)}
    finally:
        await node.close()


def startup_lab(ctx: Context) -> dict[str, Any]:
    """start() in the lab, NODE_TEST_CONF and full conf, per phase (bench_startup_lab.py)."""
    _need_lab()
    from benchmarks import bench_startup_lab as b
    from warpgate.lab import Lab, two_nat

    runs = 3 if ctx.quick else 7
    delay = 25.0
    topology = two_nat("port-restricted", "open").with_delay({"nat_a": (delay, 0.0)})
    full: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    with Lab(topology) as lab:
        stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
        ntp = f"{lab.servers['ntp']['host']}:{lab.servers['ntp']['port']}"
        for i in range(runs):
            test.append(lab.run_async("a", _start_test_conf, stun, timeout=60))
            full.append(lab.run_async("a", b.start_once, stun, ntp, timeout=60))
            ctx.progress(
                f"start-up in the lab, run {i + 1}/{runs}: NODE_TEST_CONF "
                f"{test[-1]['total'] * 1000:.0f} ms, full conf {full[-1]['total'] * 1000:.0f} ms"
            )
    rows = []
    for label, runs_ in (("NODE_TEST_CONF", test), ("full conf (STUN, NTP, UPnP)", full)):
        names: list[str] = []
        for r in runs_:
            names += [k for k in r["times"] if k not in names]
        medians = {k: statistics.median(r["times"].get(k, 0.0) for r in runs_) for k in names}
        total = statistics.median(r["total"] for r in runs_)
        slowest = max(medians, key=lambda k: medians[k]) if medians else ""
        is_full = runs_ is full
        rows.append(
            Row(
                "start-up, lab (25 ms one-way WAN delay)",
                f"{label}: start() total",
                total * 1000,
                "ms",
                medians[slowest] * 1000 if slowest else None,
                f"slowest phase/job: {slowest}",
                target="<= 1.5x slowest" if is_full else "",
                met=(total / medians[slowest] <= 1.5) if is_full and slowest else None,
            )
        )
        for k, v in medians.items():
            if v * 1000 >= 0.5:  # the phases that cost anything
                rows.append(
                    Row(
                        "start-up, lab (25 ms one-way WAN delay)",
                        f"{label}: phase {k}",
                        v * 1000,
                        "ms",
                    )
                )
    return {"rows": rows, "raw": {"test_conf": test, "full_conf": full}}


# ------------------------------------------------------------------ scale


def scale_links(ctx: Context) -> dict[str, Any]:
    """Links per node: a full run opens links up to the file-descriptor limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Both ends live in one process (two descriptors per link), plus some headroom.
    n = 200 if ctx.quick else max(200, min(10_000, (hard - 300) // 2))
    out = run_script("bench_many_links.py", ["--links", str(n)], 900)
    rss = _number(r"process RSS: ([\d.]+) KiB per link", out)
    heap = _number(r"python heap: ([\d.]+) KiB per link", out)
    rate = _number(r"\(([\d.]+) links/s\)", out)
    mem_kib = _mem_available_kib()
    # One server-side link is one socket (one fd) and about half the both-ends memory.
    per_link = max((rss or heap or 0.0) / 2, 1e-6)
    by_fd = hard - 100
    by_mem = int(mem_kib / per_link) if mem_kib else None
    bound = min(x for x in (by_fd, by_mem) if x is not None)
    binding = "file descriptors" if bound == by_fd else "memory"
    return {
        "rows": [
            Row("scale", f"{n} links opened: links/s", rate, "links/s"),
            Row(
                "scale",
                "links held open by one node at once (measured)",
                _number(r"server-side links open: (\d+)", out),
                "links",
                note=f"{n} asked: both ends in one process, RLIMIT_NOFILE hard {hard:,}",
            ),
            Row("scale", "memory per link (both ends, RSS)", rss, "KiB", note=f"heap {heap} KiB"),
            Row(
                "scale",
                "links per node before a limit binds (estimate)",
                float(bound),
                "links",
                note=f"{binding} binds: RLIMIT_NOFILE hard {hard:,}, "
                f"{(mem_kib or 0) // 1024:,} MiB available ÷ {per_link:.1f} KiB per link",
            ),
        ],
        "raw": out,
    }


def _mem_available_kib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def pnp(ctx: Context) -> dict[str, Any]:
    """PNP server signed ops/s on SQLite and PostgreSQL vs a UDP echo (bench_pnp.py)."""
    from benchmarks import bench_pnp as b

    ops, conc = (2000, 32) if ctx.quick else (20_000, 64)

    async def go() -> dict[str, float | str]:
        out: dict[str, float | str] = {"echo": await b.measure_echo(ops, conc)}
        with tempfile.TemporaryDirectory() as tmp:
            served = b.Served(b.serve_args(str(Path(tmp) / "pnp.db")))
            try:
                out["sqlite"] = await b.measure_pnp(served.port, ops, conc)
            finally:
                served.stop()
        try:
            from tests.pnp.pg_cluster import PgCluster, why_unavailable
        except ImportError as exc:
            out["postgres_skipped"] = str(exc)
            return out
        reason = why_unavailable()
        if reason:
            out["postgres_skipped"] = reason
            return out
        cluster = PgCluster()
        try:
            cluster.init()
            cluster.start()
            served = b.Served(b.serve_args(await cluster.new_database()))
            try:
                out["postgres"] = await b.measure_pnp(served.port, ops, conc)
            finally:
                served.stop()
        finally:
            cluster.cleanup()
        return out

    got = asyncio.run(go())
    echo = float(got["echo"])
    rows = [
        Row(
            "scale, PNP server",
            "signed PUT+GET ops/s, SQLite",
            float(got["sqlite"]),
            "ops/s",
            echo,
            "Python UDP echo server",
            target=">= 2,000 ops/s",
            met=float(got["sqlite"]) >= 2000,
        )
    ]
    if "postgres" in got:
        rows.append(
            Row(
                "scale, PNP server",
                "signed PUT+GET ops/s, PostgreSQL",
                float(got["postgres"]),
                "ops/s",
                echo,
                "Python UDP echo server",
            )
        )
    else:
        rows.append(
            Row(
                "scale, PNP server",
                "signed PUT+GET ops/s, PostgreSQL",
                None,
                note=f"skipped: {got.get('postgres_skipped')}",
            )
        )
    return {"rows": rows, "raw": got}


def signal(ctx: Context) -> dict[str, Any]:
    """Signal round trip and messages/s through mosquitto vs aiomqtt (bench_signal.py)."""
    from benchmarks import bench_signal as b

    runs, count, window = (30, 500, 50) if ctx.quick else (200, 5000, 100)

    async def go() -> tuple[list[float], dict[str, Any]]:
        with tempfile.TemporaryDirectory() as work:
            proc, port = b.start_mosquitto(Path(work))
            try:
                base = await b.baseline(port, runs)
                ours = await b.signal_runs(f"mqtt://127.0.0.1:{port}", runs, count, window)
            finally:
                proc.terminate()
                proc.wait(5)
        return base, ours

    base, ours = asyncio.run(go())
    b_ms, s_ms = statistics.median(base) * 1000, statistics.median(ours["send"]) * 1000
    return {
        "rows": [
            Row(
                "scale, signalling (mosquitto)",
                "signal send() round trip",
                s_ms,
                "ms",
                b_ms,
                "bare aiomqtt round trip",
                target="<= 2x",
                met=s_ms / b_ms <= 2,
            ),
            Row(
                "scale, signalling (mosquitto)",
                f"sustained signal messages/s ({window} in flight)",
                ours["rate"],
                "msg/s",
                target=">= 1,000/s",
                met=ours["rate"] >= 1000,
                note=f"retransmits {ours['retransmits']}, failures {ours['failures']}",
            ),
        ]
    }


# ------------------------------------------------------------------ lab scripts


def relay(ctx: Context) -> dict[str, Any]:
    """TURN relay connect, first byte and goodput in the lab (bench_relay.py)."""
    _need_lab()
    args = ["--runs", "3", "--messages", "1000"] if ctx.quick else ["--runs", "7"]
    out = run_script("bench_relay.py", args, 600)
    connect = _number(r"median connect ([\d.]+) ms", out)
    base = _number(r"allocation \+ 3 relayed RTT ([\d.]+) ms", out)
    share = _number(r"relayed / direct goodput: ([\d.]+)%", out)
    firsts = [
        Row(
            "relay (TURN), lab",
            f"first byte over the relay, {label}",
            float(first),
            "ms",
            float(target),
            "1 relayed RTT + the handshake's 2",
            target="<= 1.0x",
            met=float(first) <= float(target),
        )
        for label, first, target in re.findall(
            r"first byte, (.+?) \(median;.*?\): ([\d.]+) ms vs .*? = ([\d.]+) ms", out
        )
    ]
    return {
        "rows": [
            *firsts,
            Row(
                "relay (TURN), lab",
                "relay connect, symmetric ↔ symmetric, 10 ms each way",
                connect,
                "ms",
                base,
                "allocation + 3 relayed RTT",
                target="<= 1.0x",
                met=None if not (connect and base) else connect / base <= 1.0,
            ),
            Row(
                "relay (TURN), lab",
                "relayed goodput as share of direct",
                None if share is None else share / 100,
                "%",
                target=">= 50%",
                met=None if share is None else share >= 50,
            ),
        ],
        "raw": out,
    }


def lab_up(ctx: Context) -> dict[str, Any]:
    """Building a two-NAT lab with every server (bench_lab_up.py)."""
    _need_lab()
    out = run_script("bench_lab_up.py", ["--runs", "2" if ctx.quick else "5"], 300)
    base = _number(
        r"baseline \(one namespace \+ veth, created and deleted\): median ([\d.]+) ms", out
    )
    up = _number(r"\n\s*up: median ([\d.]+) s", out)
    return {
        "rows": [
            Row(
                "lab",
                "two-NAT lab up with all servers",
                None if up is None else up * 1000,
                "ms",
                base,
                "one namespace + veth pair",
                target="< 5 s",
                met=None if up is None else up < 5,
            )
        ],
        "raw": out,
    }


#: Scripts the sections above already cover (by import or by running them).
COVERED = {
    "bench_connect.py",
    "bench_lab_up.py",
    "bench_link_throughput.py",
    "bench_many_links.py",
    "bench_node_start.py",
    "bench_pnp.py",
    "bench_relay.py",
    "bench_signal.py",
    "bench_startup_lab.py",
}


def other_scripts(ctx: Context) -> dict[str, Any]:
    """Every other bench_*.py (punching, load, ...), run as it is; output kept.

    Their output is kept in results.json.  Not run in --quick mode (their sizes are
    their own)."""
    scripts = sorted(p.name for p in HERE.glob("bench_*.py") if p.name not in COVERED)
    if ctx.quick:
        return {
            "rows": [Row("other scripts", s, None, note="not run with --quick") for s in scripts],
        }
    rows, raw = [], {}
    for script in scripts:
        ctx.progress(f"running {script} ...")
        begin = time.perf_counter()
        try:
            raw[script] = run_script(script, [], 900)
            status = "ran"
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raw[script] = str(exc)
            status = f"failed: {str(exc)[:120]}"
        took = time.perf_counter() - begin
        last = [ln for ln in raw[script].strip().splitlines() if ln.strip()][-1:] or [""]
        rows.append(Row("other scripts", script, took, "s", note=f"{status}; last line: {last[0]}"))
    return {"rows": rows, "raw": raw}


#: name -> (function, needs the lab); the order is the order of a full run.
SECTIONS: dict[str, tuple[Callable[[Context], dict[str, Any]], bool]] = {
    "nat_matrix": (nat_matrix, True),
    "links": (links_loopback, False),
    "links_lab": (links_lab, True),
    "connect": (connect_loopback, False),
    "startup": (startup, False),
    "startup_lab": (startup_lab, True),
    "scale_links": (scale_links, False),
    "pnp": (pnp, False),
    "signal": (signal, False),
    "relay": (relay, True),
    "lab_up": (lab_up, True),
    "other": (other_scripts, False),
}

__all__ = ["SECTIONS", "Context", "Skipped", "lab_reason", "os"]
