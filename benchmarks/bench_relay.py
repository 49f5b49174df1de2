"""Relay (TURN) connect time and relayed throughput, in the NAT lab.

Run as root on Linux:  python benchmarks/bench_relay.py [--runs N] [--delay-ms MS]

One ``two-nat`` lab (both NATs symmetric, ``--delay-ms`` added each way on both WAN
links, the lab's coturn as TURN server), measured in the same run:

* **connect**: ``auto_connect(methods=["turn"], transport="udp")`` from host ``a`` to
  host ``b`` (symmetric <-> symmetric: only the relay works), N times.  Baseline: the
  allocation time of the same attempt plus 3 relayed round trips (the median
  ``link.ping()`` over the relayed link).  Target (issue 9): connect <= baseline.
* **throughput**: 1,100-byte messages a -> pub over a UDP link, direct vs through the
  relay; goodput is what the receiver got per second (first to last message).  Target:
  relayed >= 50% of direct.
* **relay-first upgrade** (a second lab, both NATs port-restricted, same delay): how
  long a relay-first link takes to exist and then to send on the proven direct path
  (information; no target).

The lab is always torn down; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from warpgate import Node, auto_connect
from warpgate.lab import Lab, two_nat
from warpgate.testing.turn_conf import turn_conf

MESSAGE = 1100
DONE = b"done"
FIRST = b"first"


def conf(lab: Lab, name: str, relay_first: bool = False) -> dict[str, Any]:
    # The relayed throughput must stay relayed (a -> pub could upgrade to direct).
    return turn_conf(lab, name, turn_relay_first=relay_first, turn_upgrade=relay_first)


async def responder(
    lab: Lab, name: str, address_out: concurrent.futures.Future[bytes], links: int
) -> list[dict[str, Any]]:
    """Accept ``links`` links one after another; count what each carries until DONE."""
    reports = []
    async with Node(port=0, conf=conf(lab, name)) as node:
        await node.start()
        address_out.set_result(node.address())
        for _ in range(links):
            link = await node.accept(timeout=60)
            got = 0
            first = last = 0.0
            while True:
                try:
                    msg = await link.recv(timeout=3)
                except (TimeoutError, ConnectionError):
                    break
                if msg == DONE:
                    break
                if msg == FIRST:
                    await link.send(FIRST)  # echo the first byte at once
                    continue
                now = time.perf_counter()
                first = first or now
                last = now
                got += len(msg)
            reports.append(
                {"bytes": got, "seconds": max(last - first, 1e-9), "kind": link.path.kind}
            )
            await link.send(b"ok")
    return reports


async def connector(
    lab: Lab,
    name: str,
    address_in: concurrent.futures.Future[bytes],
    plan: list[tuple[str, int]],
    relay_first: bool,
) -> list[dict[str, Any]]:
    """For each (method, messages): connect, ping 5 times, send the messages, DONE."""
    out = []
    async with Node(port=0, conf=conf(lab, name, relay_first)) as node:
        await node.start()
        if relay_first:  # let the warm allocation come up, as it would in a running app
            await asyncio.sleep(0.5)
        address = await asyncio.wrap_future(address_in)
        for method, messages in plan:
            begin = time.perf_counter()
            link, _ = await auto_connect(
                node, address, methods=[method], transport="udp", timeout=20
            )
            took = time.perf_counter() - begin
            timing = dict(node.traversal_methods["turn"].last_timing) if method == "turn" else {}
            await link.send(FIRST)
            while await link.recv(timeout=5) != FIRST:
                pass
            echoed = time.perf_counter() - begin
            rtts = [await link.ping(timeout=5) for _ in range(5)]
            payload = b"x" * MESSAGE
            for i in range(messages):
                await link.send(payload)
                if i % 16 == 15:
                    await asyncio.sleep(0)  # let the loop breathe, as an application would
            for _ in range(3):
                await link.send(DONE)
            try:
                await link.recv(timeout=8)
            except (TimeoutError, ConnectionError):
                pass
            await link.close()
            rtt = statistics.median(rtts)
            # The first byte arrived half an echo round trip before its echo came back.
            first_byte = echoed - rtt / 2
            out.append(
                {"method": method, "connect": took, "rtt": rtt, "first_byte": first_byte, **timing}
            )
    return out


def run_pair(
    lab: Lab, server: str, client: str, plan: list[tuple[str, int]], relay_first: bool = False
) -> tuple[Any, Any]:
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(
            lab.arun(server, responder, lab, f"srv-{server}", address, len(plan), timeout=600),
            lab.arun(
                client, connector, lab, f"cli-{client}", address, plan, relay_first, timeout=600
            ),
        )

    return asyncio.run(both())


async def upgrade_responder(
    lab: Lab, address_out: concurrent.futures.Future[bytes], runs: int
) -> None:
    async with Node(port=0, conf=conf(lab, "up-b", relay_first=True)) as node:
        await node.start()
        address_out.set_result(node.address())
        for _ in range(runs):
            link = await node.accept(timeout=60)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await link.recv(timeout=30)  # until the dialler closes


async def upgrade_dialler(
    lab: Lab, address_in: concurrent.futures.Future[bytes], runs: int
) -> list[dict[str, float]]:
    """Relay-first connects; how long until this end sends on the proven direct path."""
    out = []
    async with Node(port=0, conf=conf(lab, "up-a", relay_first=True)) as node:
        await node.start()
        await asyncio.sleep(0.5)  # the warm allocation
        address = await asyncio.wrap_future(address_in)
        for _ in range(runs):
            begin = time.perf_counter()
            link, _ = await auto_connect(node, address, methods=["turn"], transport="udp")
            connected = time.perf_counter() - begin
            for _ in range(1000):  # bounded: 10 s
                if link.path.kind == "direct":
                    break
                await asyncio.sleep(0.01)
            direct = time.perf_counter() - begin if link.path.kind == "direct" else float("nan")
            rtt_direct = statistics.median([await link.ping(timeout=5) for _ in range(5)])
            await link.close()
            out.append({"connect": connected, "direct": direct, "rtt_direct": rtt_direct})
            await asyncio.sleep(0.5)  # the next warm allocation
    return out


def run_upgrades(delay_ms: float, runs: int) -> list[dict[str, float]]:
    topology = two_nat("port-restricted", "port-restricted").with_delay(
        {"nat_a": (delay_ms, 0.0), "nat_b": (delay_ms, 0.0)}
    )
    with Lab(topology) as lab:
        address: concurrent.futures.Future[bytes] = concurrent.futures.Future()

        async def both() -> list[dict[str, float]]:
            _, res = await asyncio.gather(
                lab.arun("b", upgrade_responder, lab, address, runs, timeout=300),
                lab.arun("a", upgrade_dialler, lab, address, runs, timeout=300),
            )
            return res

        return asyncio.run(both())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay per WAN link")
    parser.add_argument("--messages", type=int, default=5000, help="messages per throughput run")
    args = parser.parse_args()
    topology = two_nat("symmetric", "symmetric").with_delay(
        {"nat_a": (args.delay_ms, 0.0), "nat_b": (args.delay_ms, 0.0)}
    )
    t0 = time.perf_counter()
    with Lab(topology) as lab:
        up = time.perf_counter() - t0
        print(f"lab up in {up:.1f} s; symmetric <-> symmetric, {args.delay_ms:g} ms each way")
        _served, connects = run_pair(lab, "b", "a", [("turn", 20)] * args.runs)
        _served, firsts = run_pair(lab, "b", "a", [("turn", 20)] * args.runs, relay_first=True)
        served, _ = run_pair(
            lab, "pub", "a", [("direct", args.messages), ("turn", args.messages)] * 2
        )

    print("\nconnect a -> b through the relay (ms):")
    ratios = []
    for i, c in enumerate(connects):
        baseline = c["allocate"] + 3 * c["rtt"]
        ratios.append(c["connect"] / baseline)
        print(
            f"  run {i + 1}: connect {c['connect'] * 1000:6.1f}  "
            f"allocation {c['allocate'] * 1000:6.1f}  relayed RTT {c['rtt'] * 1000:6.1f}  "
            f"baseline {baseline * 1000:6.1f}  ratio {ratios[-1]:.2f}"
        )
    connect = statistics.median(c["connect"] for c in connects)
    base = statistics.median(c["allocate"] + 3 * c["rtt"] for c in connects)
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= 1.0 else "MISSED"
    print(
        f"median connect {connect * 1000:.1f} ms vs allocation + 3 relayed RTT "
        f"{base * 1000:.1f} ms: {ratio:.2f}x (target <= 1.0x: {verdict})"
    )

    for label, runs in (("cold allocation", connects), ("relay-first, warm allocation", firsts)):
        first = statistics.median(c["first_byte"] for c in runs)
        target = statistics.median(3 * c["rtt"] for c in runs)
        verdict = "met" if first <= target else "MISSED"
        alloc = statistics.median(c["allocate"] for c in runs)
        print(
            f"first byte, {label} (median; allocation {alloc * 1000:.1f} ms): "
            f"{first * 1000:.1f} ms vs 1 relayed RTT + the handshake's 2 = "
            f"{target * 1000:.1f} ms: {first / target:.2f}x (target <= 1.0x: {verdict})"
        )

    print(f"\nthroughput a -> pub, {args.messages} x {MESSAGE} B messages over a UDP link:")
    rates: dict[str, list[float]] = {"direct": [], "relay": []}
    for s in served:
        rate = s["bytes"] / s["seconds"] / 1e6
        rates[s["kind"]].append(rate)
        share = s["bytes"] / (args.messages * MESSAGE)
        print(f"  {s['kind']:<6} {rate:7.2f} MB/s  ({share:.0%} delivered)")
    direct, relay = statistics.median(rates["direct"]), statistics.median(rates["relay"])
    share = relay / direct
    verdict = "met" if share >= 0.5 else "MISSED"
    print(f"relayed / direct goodput: {share:.0%} (target >= 50%: {verdict})")
    upgrades = run_upgrades(args.delay_ms, min(args.runs, 5))
    print("\nrelay-first upgrade, port-restricted <-> port-restricted (second lab):")
    for u in upgrades:
        print(
            f"  relayed link in {u['connect'] * 1000:6.1f} ms, sending direct after "
            f"{u['direct'] * 1000:6.1f} ms; direct RTT {u['rtt_direct'] * 1000:5.1f} ms"
        )
    connect = statistics.median(u["connect"] for u in upgrades)
    direct = statistics.median(u["direct"] for u in upgrades)
    print(
        f"median: relayed link after {connect * 1000:.1f} ms, direct after {direct * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
