"""``warpgate demo``: two nodes on this machine, every traversal method, a live table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warpgate.demo.runner import DemoReport


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="two nodes on this machine, every traversal method, a table of results",
        description=(
            "Start the embedded infrastructure on loopback (PNP names, STUN, MQTT when "
            "warpgate[server] is installed), two nodes named alice and bob with "
            "throw-away keys, and connect alice to bob.p2p by every installed traversal "
            "method. Needs no network access and leaves nothing behind. With --lab "
            "(Linux, root) the nodes run behind real NATs in the lab instead."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--lab",
        action="store_true",
        help="run the nodes behind real NATs in network namespaces (Linux, root)",
    )
    parser.add_argument(
        "--nat-a", default="full-cone", help="--lab: NAT mode in front of alice (full-cone)"
    )
    parser.add_argument(
        "--nat-b", default="port-restricted", help="--lab: NAT mode in front of bob"
    )
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from warpgate.cli.peer_options import quiet_logs, run_command

    # The demo's output is its table; warnings (an inconclusive NAT test on loopback,
    # say) would only break it up.  -v brings them back.
    quiet_logs(args)
    if args.lab:
        if sys.platform != "linux" or os.geteuid() != 0:
            print(
                "warpgate demo: error: --lab needs Linux and root (network namespaces); "
                "try: sudo warpgate demo --lab, or warpgate demo without --lab",
                file=sys.stderr,
            )
            return 2
        return _run_lab(args)
    from warpgate.demo.runner import run_demo

    async def demo() -> int:
        return _finish(await run_demo(sys.stdout, quiet=args.json), args.json)

    return run_command(demo(), "demo")


def _finish(report: DemoReport, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    return 0 if report.worked else 1


def _run_lab(args: argparse.Namespace) -> int:
    from warpgate.demo.lab import run_lab_demo
    from warpgate.demo.runner import print_tail
    from warpgate.lab import Lab, LabError, two_nat

    try:
        topology = two_nat(args.nat_a, args.nat_b, upnp=False)
    except (ValueError, LabError) as exc:
        print(
            f"warpgate demo: error: {exc}; try: warpgate lab --help lists the NAT modes",
            file=sys.stderr,
        )
        return 2
    try:
        with Lab(topology, servers=True) as lab:
            report = asyncio.run(run_lab_demo(lab, sys.stdout, quiet=args.json))
    except LabError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"warpgate demo: error: the lab did not start: {first}; "
            "try: warpgate lab down, then again (docs/lab.md lists what it needs)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print_tail(report, sys.stdout)
    return _finish(report, args.json)
