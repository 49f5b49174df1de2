"""``warpgate nat``: what kind of NAT is this machine behind (a netcheck)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from warpgate.errors import UnavailableError
from warpgate.node.node import Node
from warpgate.node.node_defs import NODE_TEST_CONF
from warpgate.stun.nat import NatReport

_MAPPING = {
    "none": "none (no NAT)",
    "EIM": "endpoint-independent (EIM)",
    "ADM": "address-dependent (ADM)",
    "APDM": "address and port-dependent (APDM)",
    "dependent": "endpoint-dependent (ADM or APDM)",
    "blocked": "UDP blocked",
    "unknown": "unknown",
}
_FILTERING = {
    "none": "none (no firewall)",
    "EIF": "endpoint-independent (EIF)",
    "ADF": "address-dependent (ADF)",
    "APDF": "address and port-dependent (APDF)",
    "blocked": "UDP blocked",
    "unknown": "unknown",
}


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "nat",
        help="classify the NAT in front of each interface (STUN, RFC 5780)",
        description=(
            "Start a node with STUN on (clock, UPnP and signalling off unless asked) and "
            "print, per IPv4 interface, the external address, the NAT's mapping and "
            "filtering behaviour (RFC 4787), its classic name and its port allocation."
        ),
    )
    parser.add_argument(
        "--stun",
        action="append",
        metavar="HOST:PORT",
        help="STUN server to use instead of the configured ones (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: any)")
    parser.add_argument(
        "--ip", action="append", default=None, help="test only this local address (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds for the STUN tests (stun_timeout)"
    )
    parser.add_argument("--clock", action="store_true", help="also measure the clock offset (NTP)")
    parser.add_argument("--upnp", action="store_true", help="also try UPnP port mapping")
    parser.add_argument("--name", default=None, help="identity name in the keystore")
    parser.set_defaults(func=cmd_nat)


def cmd_nat(args: argparse.Namespace) -> int:
    # The command prints the outcome itself: the STUN modules' warnings (one per
    # interface, repeating the error) only with -v.
    quiet = [] if getattr(args, "verbose", 0) else ["warpgate.stun", "warpgate_plugins.stun"]
    saved = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return asyncio.run(_run(args))
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _conf(args: argparse.Namespace) -> dict[str, Any]:
    conf: dict[str, Any] = dict(NODE_TEST_CONF)
    conf["enable_stun_clients"] = True
    conf["init_clock_skew"] = bool(args.clock)
    conf["enable_upnp"] = bool(args.upnp)
    if args.stun:
        conf["stun_servers"] = list(args.stun)
    if args.timeout is not None:
        conf["stun_timeout"] = args.timeout
    if args.name:
        conf["identity_name"] = args.name
    return conf


async def _run(args: argparse.Namespace) -> int:
    async with Node(ip=args.ip, port=args.port, conf=_conf(args)) as node:
        await node.start()
        reports = list(node.nat_reports.values())
        discovery = node.stun_clients.get("nat")
        servers = [f"{h}:{p}" for h, p in getattr(discovery, "servers", [])]
        if not reports:
            if servers:
                raise UnavailableError(
                    "no IPv4 interface to test (loopback is tested only against STUN "
                    "servers on loopback)"
                )
            why = "; ".join(f"{k}: {v}" for k, v in getattr(discovery, "failures", {}).items())
            raise UnavailableError(f"no usable STUN server ({why or 'none configured'})")
        if all(r.external is None for r in reports):
            errors = "; ".join(e for r in reports for e in r.errors[:2])
            raise UnavailableError(
                f"no STUN server answered ({', '.join(servers)}): {errors or 'no answer'}"
            )
        clock = _clock(node)
        port_mapping = node.phase_results.get("start_background_port_forwarding")
        if args.json:
            print(
                json.dumps(
                    {
                        "servers": servers,
                        "interfaces": [r.as_dict() for r in reports],
                        "clock": clock,
                        "port_mapping": port_mapping,
                    },
                    indent=2,
                )
            )
        else:
            for report in reports:
                _print_report(report)
            if clock is not None:
                print(
                    f"clock offset      {clock['offset'] * 1000:+.1f} ms "
                    f"(± {clock['uncertainty'] * 1000:.1f} ms, {clock['source']})"
                )
            else:
                print("clock offset      not measured (--clock)")
            print(f"port mapping      {port_mapping or 'unknown'}")
    return 0


def _clock(node: Node) -> dict[str, Any] | None:
    clock = node.clock
    if clock is None or not node.conf["init_clock_skew"]:
        return None
    return {
        "offset": float(getattr(clock, "offset", 0.0)),
        "uncertainty": float(getattr(clock, "uncertainty", 0.0)),
        "source": str(getattr(clock, "source", type(clock).__name__)),
    }


def _fmt(addr: tuple[str, int] | None) -> str:
    if addr is None:
        return "unknown"
    host, port = addr
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else f"{host} (port unknown)"


def _print_report(report: NatReport) -> None:
    allocation = report.port_allocation.name.lower()
    if report.port_delta:
        allocation += f" (delta {report.port_delta:+d})"
    print(f"interface         {_fmt(report.local)}")
    print(f"  external        {_fmt(report.external)}")
    print(f"  mapping         {_MAPPING.get(report.mapping.value, report.mapping.value)}")
    print(f"  filtering       {_FILTERING.get(report.filtering.value, report.filtering.value)}")
    print(f"  NAT type        {report.nat_type.name.lower().replace('_', '-')}")
    print(f"  port allocation {allocation}")
    if report.server is not None:
        print(
            f"  server          {_fmt(report.server)}" + (" (RFC 5780)" if report.rfc5780 else "")
        )
    if report.nat_type.name == "UNKNOWN" and report.errors:
        print(f"  why unknown     {report.errors[0]}")
