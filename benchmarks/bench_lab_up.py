"""How long building a two-NAT lab with all servers takes (target: under 5 s).

Run as root on Linux:  python benchmarks/bench_lab_up.py [--runs N]

Prints the time of each phase for every run and the median, next to a baseline measured
in the same process (one empty namespace with a veth pair created and deleted: the
machine's speed at the cheapest possible step) and the ratio; no assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warpgate.lab import Lab, two_nat
from warpgate.lab.state import new_prefix
from warpgate.lab.system import ip_batch, run


def baseline() -> float:
    name = f"{new_prefix()}-bench"
    t0 = time.perf_counter()
    ip_batch([f"netns add {name}"])
    try:
        ip_batch(["link add x0 type veth peer name x1", "link set x0 up"], netns=name)
    finally:
        run(["ip", "netns", "delete", name])
    return time.perf_counter() - t0


def one_run() -> dict[str, float]:
    t0 = time.perf_counter()
    lab = Lab(two_nat("full-cone", "symmetric"))
    lab.up()
    t1 = time.perf_counter()
    try:
        status = lab.status()
        t2 = time.perf_counter()
        assert all(h["probe"]["ok"] for h in status["hosts"].values()), status
    finally:
        lab.down()
    t3 = time.perf_counter()
    return {"up": t1 - t0, "probe": t2 - t1, "down": t3 - t2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        r = one_run()
        results.append(r)
        print(
            f"run {i + 1}: up (namespaces, NATs, mosquitto, coturn, chrony, miniupnpd) "
            f"{r['up']:.3f} s, probe of 3 hosts {r['probe']:.3f} s, down {r['down']:.3f} s"
        )
    base = statistics.median(baseline() for _ in range(args.runs))
    print(f"baseline (one namespace + veth, created and deleted): median {base * 1000:.1f} ms")
    up = statistics.median(r["up"] for r in results)
    print(f"lab up / baseline: {up / base:.0f}x  (target: up < 5 s)")
    for phase in ("up", "probe", "down"):
        values = [r[phase] for r in results]
        print(
            f"{phase:>5}: median {statistics.median(values):.3f} s, "
            f"min {min(values):.3f} s, max {max(values):.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
