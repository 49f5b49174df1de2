"""``warpgate lab``: build, inspect, use and remove NAT labs from the shell.

    warpgate lab up two-nat --nat-a full-cone --nat-b symmetric
    warpgate lab status [--json]
    warpgate lab exec a -- python3 -c 'print("hello from behind a NAT")'
    warpgate lab down

``add_parser`` plugs this into the main ``warpgate`` CLI; ``python -m warpgate.lab.cli``
runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

from warpgate.errors import WarpgateError

log = logging.getLogger(__name__)

#: Longest a `lab exec` command may run before it is killed.
EXEC_TIMEOUT = 3600.0


def _parse_assignments(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise WarpgateError(f"--{what} expects ROUTER=VALUE, got {item!r}")
        out[name] = value
    return out


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    from warpgate.lab import Lab, preset

    topo = preset(args.topology)
    modes = _parse_assignments(args.mode, "mode")
    for attr, router in (("nat_a", "nat_a"), ("nat_b", "nat_b")):
        if getattr(args, attr):
            modes[router] = getattr(args, attr)
    topo = topo.with_modes(modes)
    losses = {k: float(v) for k, v in _parse_assignments(args.loss, "loss").items()}
    topo = topo.with_loss(losses)
    delays = {k: float(v) for k, v in _parse_assignments(args.delay, "delay").items()}
    jitters = {k: float(v) for k, v in _parse_assignments(args.jitter, "jitter").items()}
    if set(jitters) - set(delays):
        raise WarpgateError("--jitter ROUTER=MS needs a --delay for the same router")
    topo = topo.with_delay({k: (d, jitters.get(k, 0.0)) for k, d in delays.items()})
    topo = topo.with_hairpin(args.hairpin)
    topo = topo.with_tcp_reset(args.tcp_reset)
    # SIGTERM as well as Ctrl-C must tear a half-built lab down.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        started = time.monotonic()
        lab = Lab(topo, servers=not args.no_servers).up()
        lab.detach()  # leave it running; `lab down` stops it by recorded PIDs
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"lab {lab.prefix} up in {time.monotonic() - started:.2f}s")
    _print_status(lab.status(probe=not args.no_probe))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from warpgate.lab.state import cleanup_all
    from warpgate.lab.system import check_platform

    check_platform()
    removed = cleanup_all(args.prefix)
    print("removed " + (", ".join(removed) if removed else "nothing (no lab found)"))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from warpgate.lab import Lab
    from warpgate.lab.system import check_platform, netns_exec_argv

    check_platform()
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise WarpgateError("lab exec: give a command after the host, e.g. `a -- ip addr`")
    lab = Lab.attach(args.prefix)
    try:
        proc = subprocess.run(netns_exec_argv(lab.netns(args.host), argv), timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"lab exec: timed out after {args.timeout}s", file=sys.stderr)
        return 124
    return proc.returncode


def cmd_status(args: argparse.Namespace) -> int:
    from warpgate.lab import Lab
    from warpgate.lab.system import check_platform

    check_platform()
    lab = Lab.attach(args.prefix)
    status = lab.status(probe=not args.no_probe)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    ok = all(h.get("probe", {}).get("ok", True) for h in status["hosts"].values())
    return 0 if ok else 1


def _print_status(status: dict[str, Any]) -> None:
    print(f"lab {status['prefix']} (internet: {status['inet']})")
    for name, r in status["routers"].items():
        behind = f" behind {r['parent']}" if r["parent"] else ""
        loss = f", loss {r['loss']:.1%}" if r["loss"] else ""
        if r.get("delay_ms"):
            loss += f", delay {r['delay_ms']:g}±{r['jitter_ms']:g} ms"
        upnp = ", UPnP" if r["upnp"] else ""
        upnp += ", hairpin" if r.get("hairpin") else ""
        upnp += ", TCP reset" if r.get("tcp_reset") else ""
        print(
            f"  router {name:<8} {r['mode']:<19} wan {r['wan_address']:<15} "
            f"lan {r['lan']}{behind}{loss}{upnp}"
        )
    for name, h in status["hosts"].items():
        exp = h["expected"]
        hp = {True: "+hairpin", False: "", None: ""}[exp.get("hairpin")]
        expect = f"{exp['mapping']}/{exp['filtering']}{hp}"
        line = f"  host   {name:<8} {h['address']:<15} expect {expect:<17}"
        probe = h.get("probe")
        if probe:
            mark = "ok" if probe["ok"] else "MISMATCH"
            ext = probe["external"]
            ext_s = f" via {ext[0]}:{ext[1]}" if ext else ""
            seen = f"{probe['mapping']}/{probe['filtering']}"
            seen += "+hairpin" if probe.get("hairpin") else ""
            line += f" probe {seen:<17}{ext_s} [{mark}]"
        print(line)
    for role, info in status["servers"].items():
        print(f"  server {role:<11} {info.get('host')}:{info.get('port')} pid {info.get('pid')}")
    dead = [n for n, p in status["processes"].items() if not p["running"]]
    if dead:
        print(f"  NOT RUNNING: {', '.join(dead)}")


def _handle(func: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        from warpgate.lab.errors import LabUnavailable

        # Servers deliberately outlive `lab up`; don't warn about children not waited for.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            return int(func(args))
        except LabUnavailable as exc:
            print(f"warpgate lab: {exc}", file=sys.stderr)
            return 2
        except WarpgateError as exc:
            print(f"warpgate lab: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("warpgate lab: interrupted", file=sys.stderr)
            return 130

    return handler


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``lab`` and its sub-commands on the main CLI's sub-parsers."""
    from warpgate.lab.topology import PRESETS, NatMode

    modes = [m.value for m in NatMode]
    lab = subparsers.add_parser(
        "lab",
        help="real NATs in network namespaces (Linux, root)",
        description="Build and use a NAT lab: network namespaces, real NATs, real servers.",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", help="build a topology and start its servers")
    up.add_argument("topology", choices=sorted(PRESETS), help="preset topology")
    up.add_argument("--nat-a", choices=modes, help="mode of router nat_a")
    up.add_argument("--nat-b", choices=modes, help="mode of router nat_b")
    up.add_argument(
        "--mode", action="append", default=[], metavar="ROUTER=MODE", help="any router's mode"
    )
    up.add_argument(
        "--loss",
        action="append",
        default=[],
        metavar="ROUTER=FRACTION",
        help="packet loss each way on a router's WAN link, e.g. nat_a=0.02",
    )
    up.add_argument(
        "--delay",
        action="append",
        default=[],
        metavar="ROUTER=MS",
        help="added latency each way on a router's WAN link (NFQUEUE shim)",
    )
    up.add_argument(
        "--jitter", action="append", default=[], metavar="ROUTER=MS", help="± jitter on it"
    )
    up.add_argument(
        "--hairpin",
        action="append",
        default=[],
        metavar="ROUTER",
        help="switch hairpinning on (full-cone, address- or port-restricted routers)",
    )
    up.add_argument(
        "--tcp-reset",
        action="append",
        default=[],
        metavar="ROUTER",
        help="answer unsolicited inbound TCP with a reset instead of dropping it",
    )
    up.add_argument("--no-servers", action="store_true", help="NATs only, no servers")
    up.add_argument("--no-probe", action="store_true", help="skip the NAT probe")
    up.set_defaults(func=_handle(cmd_up))

    down = sub.add_parser("down", help="remove every lab (or --prefix one) and its processes")
    down.add_argument("--prefix", help="only the lab with this prefix (wgl…)")
    down.set_defaults(func=_handle(cmd_down))

    ex = sub.add_parser("exec", help="run a command inside a lab host: exec HOST -- CMD...")
    ex.add_argument("host", help="host or router name, or inet")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    ex.add_argument("--prefix", help="lab prefix (default: the newest lab)")
    ex.add_argument("--timeout", type=float, default=EXEC_TIMEOUT, help="seconds")
    ex.set_defaults(func=_handle(cmd_exec))

    st = sub.add_parser("status", help="topology, servers and live NAT probe verdicts")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--prefix", help="lab prefix (default: the newest lab)")
    st.add_argument("--no-probe", action="store_true", help="skip the NAT probe")
    st.set_defaults(func=_handle(cmd_status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpgate")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
