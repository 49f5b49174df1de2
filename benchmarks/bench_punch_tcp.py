"""TCP hole punching: the two ways of synchronising the simultaneous open, measured.

``punch_tcp_schedule="rtt"`` (DCUtR style: the requester starts half a measured signal
round trip after sending sync; the peer starts when sync arrives) against ``"ntp"``
(both start at a time on their NTP clocks, sync sent one signal round trip ahead), on
port-restricted <-> port-restricted with ``--delay-ms`` (25) one-way delay on each WAN
link, signalling through the lab's mosquitto (so the signal path crosses the delayed
links), NTP from the lab's chrony.  ``tcp_punch`` alone, ``--tries`` (12) per schedule,
fresh ports each try.

Two router variants: ``drop`` (the lab's default: unsolicited inbound TCP is dropped,
as most home routers do) and ``reset`` (``Router(tcp_reset=True)``: the router's stack
answers it with a reset, like a bare Linux masquerade box), where the open only
succeeds if both SYNs cross the WAN within one one-way delay of each other, so it
shows how tight each schedule really is.

Reported per variant and schedule: successes, and the median and max time from
``auto_connect`` to the echo of a first message.  The baseline is the lab's own WAN
round trip a <-> b (4 delayed hops), so results read as multiples of it.

    python -m benchmarks.bench_punch_tcp [--tries 12] [--delay-ms 25] [--timeout 10]
        [--json out.json] [--matrix]

``--matrix``: ``tcp_punch`` alone with the default schedule on every TCP-punchable pair
of NAT modes (open, full cone, address-restricted, port-restricted: 10 cells),
``--tries`` per cell, the requester alternating between the hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab.punch_helpers import run_pair
from warpgate.lab import Host, Lab, Router, Topology
from warpgate.lab.topology import NatMode

BROKER = "mqtt://198.51.100.1:1883"
PUNCHABLE = ("open", "full-cone", "address-restricted", "port-restricted")


def topology(
    delay_ms: float, reset: bool, modes: tuple[str, str] = ("port-restricted",) * 2
) -> Topology:
    return Topology(
        routers=tuple(
            Router(name, NatMode(mode), delay_ms=delay_ms, tcp_reset=reset)
            for name, mode in zip(("nat_a", "nat_b"), modes, strict=True)
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b"), Host("pub")),
    )


def conf(lab: Lab, schedule: str) -> dict[str, Any]:
    ntp = lab.servers["ntp"]
    return {
        "plugins": {"signal": ["mqtt"]},
        "mqtt_brokers": [BROKER],
        "mqtt_connect_timeout": 5.0,
        "punch_tcp_schedule": schedule,
        "init_clock_skew": True,
        "ntp_servers": [f"{ntp['host']}:{ntp['port']}"],
    }


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["seconds"] for r in results if r["ok"]]
    return {
        "tries": len(results),
        "ok": len(ok),
        "median_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "max_ms": round(max(ok) * 1000, 1) if ok else None,
        "errors": sorted({r.get("error", "")[:160] for r in results if not r["ok"]}),
    }


async def run(tries: int, delay_ms: float, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"tries": tries, "delay_ms": delay_ms, "wan_rtt_ms": 4 * delay_ms}
    for variant in ("drop", "reset"):
        with Lab(topology(delay_ms, variant == "reset"), servers=True) as lab:
            for schedule in ("rtt", "ntp"):
                extra = conf(lab, schedule)
                attempt = {"transport": "tcp", "methods": ["tcp_punch"], "timeout": timeout}
                _served, dialled = await run_pair(
                    lab, [attempt] * tries, server_extra=extra, client_extra=extra
                )
                out[f"{variant}/{schedule}"] = summary(dialled)
                print(variant, schedule, out[f"{variant}/{schedule}"], flush=True)
    return out


async def run_matrix(tries: int, delay_ms: float, timeout: float) -> dict[str, Any]:
    """``tcp_punch`` alone on every TCP-punchable pair of NAT modes, default schedule,
    the requester alternating between the hosts."""
    out: dict[str, Any] = {"tries": tries, "delay_ms": delay_ms, "wan_rtt_ms": 4 * delay_ms}
    for cell in itertools.combinations_with_replacement(PUNCHABLE, 2):
        with Lab(topology(delay_ms, False, cell), servers=True) as lab:
            extra = conf(lab, "rtt")
            attempt = {"transport": "tcp", "methods": ["tcp_punch"], "timeout": timeout}
            half = [attempt] * ((tries + 1) // 2)
            _s, forward = await run_pair(lab, half, server_extra=extra, client_extra=extra)
            _s, backward = await run_pair(
                lab,
                [attempt] * (tries // 2),
                server_host="a",
                client_host="b",
                server_extra=extra,
                client_extra=extra,
            )
            out["--".join(cell)] = summary(forward + backward)
            print(cell, out["--".join(cell)], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tries", type=int, default=12)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="per try, seconds")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--matrix", action="store_true", help="every TCP-punchable pair of NAT modes instead"
    )
    args = parser.parse_args()
    bench = run_matrix if args.matrix else run
    result = asyncio.run(bench(args.tries, args.delay_ms, args.timeout))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
