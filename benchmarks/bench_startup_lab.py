"""``Node.start()`` with STUN, NTP and UPnP on, behind a NAT with a slow WAN link.

Run as root on Linux:  python benchmarks/bench_startup_lab.py [--runs N] [--delay-ms MS]

Builds a ``two-nat`` lab (host ``a`` behind a port-restricted NAT whose WAN link adds
``--delay-ms`` each way; coturn, chrony and miniupnpd as the servers), starts and closes
a node in host ``a`` N times, and prints the median of every phase and background job
(``node.phase_times``), the median of the whole ``start()``, the slowest single phase
or job and the ratio total / slowest.  Target (issue 6): ratio <= 1.5, i.e. the slow
network work overlaps.  For reference it also prints the serial sum of the network
phases and jobs, what start() costs when nothing overlaps.  The lab is always torn
down; no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.lab import Lab, two_nat
from warpgate.stun.node_binding import CACHE

TARGET = 1.5
# The phases and background jobs that wait on the network; the rest is local work.
NETWORK = (
    "ntp (background)",
    "stun (background)",
    "port mapping (background)",
)


async def start_once(stun: str, ntp: str) -> dict[str, Any]:
    """Inside host ``a``: start a node with STUN, NTP and UPnP on, then close it."""
    CACHE.clear()  # every run measures the NAT again (reports are cached per process)
    conf = dict_child(
        {
            "enable_stun_clients": True,
            "init_clock_skew": True,
            "enable_upnp": True,
            "stun_servers": [stun],
            "ntp_servers": [ntp],
            "enable_nickname": False,
            "sig_pipe_no": 0,
        },
        NODE_TEST_CONF,
    )
    node = Node(port=0, conf=conf)
    try:
        begin = time.perf_counter()
        await node.start()
        total = time.perf_counter() - begin
        return {
            "total": total,
            "times": dict(node.phase_times),
            "results": {k: str(v) for k, v in node.phase_results.items()},
            "nat": {ip: r.nat_type.name.lower() for ip, r in node.nat_reports.items()},
            "mappings": len(node.port_mappings),
        }
    finally:
        await node.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one-way WAN delay")
    parser.add_argument("--nat", default="port-restricted", help="NAT mode of router nat_a")
    args = parser.parse_args()

    topology = two_nat(args.nat, "open").with_delay({"nat_a": (args.delay_ms, 0.0)})
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with Lab(topology) as lab:  # down() on exit, whatever happens
        print(
            f"lab up in {time.perf_counter() - t0:.1f} s; nat_a {args.nat}, "
            f"WAN delay {args.delay_ms:g} ms each way"
        )
        stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
        ntp = f"{lab.servers['ntp']['host']}:{lab.servers['ntp']['port']}"
        for i in range(args.runs):
            r = lab.run_async("a", start_once, stun, ntp, timeout=60)
            runs.append(r)
            net = "  ".join(f"{k} {r['times'].get(k, 0) * 1000:.0f}" for k in NETWORK)
            print(
                f"run {i + 1}: start() {r['total'] * 1000:.0f} ms  [{net} ms]  "
                f"NAT {', '.join(r['nat'].values()) or '-'}; "
                f"port mapping: {r['results'].get('start_background_port_forwarding')} -> "
                f"{r['results'].get('finalize_port_forwarding')}"
            )

    names: list[str] = []
    for r in runs:
        names += [k for k in r["times"] if k not in names]
    medians = {k: statistics.median(r["times"].get(k, 0.0) for r in runs) for k in names}
    total = statistics.median(r["total"] for r in runs)
    print(f"\nmedians over {len(runs)} runs:")
    for k, v in medians.items():
        print(f"  {k:<34} {v * 1000:8.1f} ms")
    slowest = max(medians, key=lambda k: medians[k])
    serial = sum(medians.get(k, 0.0) for k in NETWORK)
    ratio = total / medians[slowest]
    print(f"  {'start() total':<34} {total * 1000:8.1f} ms")
    print(f"slowest single phase/job: {slowest} {medians[slowest] * 1000:.1f} ms")
    print(
        f"serial sum of NTP + STUN + port mapping: {serial * 1000:.1f} ms "
        f"(start() would take about this much more than the local phases without overlap)"
    )
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"ratio total / slowest: {ratio:.2f}x  (target <= {TARGET}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
