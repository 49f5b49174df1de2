"""``warpgate demo``: two named nodes on this machine, every traversal method, a table.

Everything runs in this process on loopback: the embedded infrastructure (PNP names,
STUN, MQTT when installed), then ``alice`` and ``bob`` with keystores in a temporary
directory (the user's own keystore is never touched).  ``alice`` connects to
``bob.p2p`` once per installed traversal method and transport, each time with
``auto_connect(..., methods=[m])``, so a method added by a plugin shows up by itself.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from warpgate.config import dict_child
from warpgate.connect import ConnectError, auto_connect, resolve_destination
from warpgate.demo.infra import EmbeddedInfra
from warpgate.demo.table import LiveTable
from warpgate.errors import WarpgateError
from warpgate.gate import Gate
from warpgate.link.link import Link
from warpgate.node.node_defs import NODE_CONF
from warpgate.plugin.types import TraversalMethodInfo

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 8.0  # seconds per method; punching may need a few rounds
COLUMNS = ("method", "transport", "result", "time", "path")


@dataclass
class MethodResult:
    method: str
    transport: str
    result: str  # "ok", "failed" or "skipped"
    seconds: float | None = None
    path: str = ""
    detail: str = ""  # why it failed or was skipped
    rtt_ms: float | None = None

    def cells(self) -> tuple[str, ...]:
        took = f"{self.seconds * 1000:.1f} ms" if self.seconds is not None else "-"
        where = self.path or self.detail
        return (self.method, self.transport, self.result, took, where)


@dataclass
class DemoReport:
    infra: list[str] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)
    results: list[MethodResult] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def worked(self) -> list[MethodResult]:
        return [r for r in self.results if r.result == "ok"]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = bool(self.worked)
        return data

    def finish(self, began: float) -> None:
        """Record the messages of the first method that worked, and the total time
        since ``began`` (``time.monotonic()``)."""
        first = next(iter(self.worked), None)
        if first is not None:
            self.messages = [
                f"alice -> bob: {hello(first.method, first.transport)}",
                f"bob -> alice: {first.detail}",
            ]
        self.seconds = time.monotonic() - began


def hello(method: str, transport: str) -> str:
    """What alice sends bob over the link each method made."""
    return f"hello bob, alice here via {method}/{transport}"


def line_printer(out: TextIO, quiet: bool) -> Callable[..., None]:
    """``say(text="")``: a line on ``out`` at once, or nothing when ``quiet``."""

    def say(text: str = "") -> None:
        if not quiet:
            out.write(text + "\n")
            out.flush()

    return say


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    failed = [a for a in getattr(exc, "attempts", []) if a.error]
    if failed:  # what the attempt itself ran into says more than "could not connect"
        text = f"{failed[0].candidate.describe()}: {failed[0].error}"
    return text if len(text) <= 90 else text[:87] + "..."


def _path_text(link: Link) -> str:
    p = link.path
    kind = "relayed" if p.relayed else "direct"
    return f"{p.local[0]}:{p.local[1]} -> {p.remote[0]}:{p.remote[1]} ({kind})"


async def _bob_answers(link: Link) -> None:
    async for msg in link:
        await link.send(b"bob got: " + msg)


async def _try(alice: Gate, target: str, method: str, transport: str) -> MethodResult:
    began = time.monotonic()
    try:
        link, _ = await auto_connect(
            alice.node,
            target,
            methods=[method],
            transport=transport,  # type: ignore[arg-type]
            timeout=ATTEMPT_TIMEOUT,
        )
    except (ConnectError, WarpgateError, OSError) as exc:
        took = time.monotonic() - began
        return MethodResult(method, transport, "failed", took, detail=_short(exc))
    took = time.monotonic() - began
    # The path as connected: a relayed link may later move to a direct path by itself.
    path = _path_text(link)
    try:
        sent = time.monotonic()
        await link.send(hello(method, transport).encode())
        reply = await link.recv(timeout=ATTEMPT_TIMEOUT)
        rtt = (time.monotonic() - sent) * 1000
        result = MethodResult(method, transport, "ok", took, path, rtt_ms=rtt)
        result.detail = reply.decode(errors="replace")
        return result
    except (WarpgateError, OSError, TimeoutError) as exc:
        return MethodResult(method, transport, "failed", took, detail=f"no echo: {_short(exc)}")
    finally:
        await link.close()


async def run_demo(
    out: TextIO, *, live: bool | None = None, quiet: bool = False, mqtt: bool = True
) -> DemoReport:
    """Run the demo, drawing the table on ``out`` unless ``quiet``; return the report.
    ``mqtt=False`` signals in-process, as when ``amqtt`` is not installed."""
    report = DemoReport()
    began = time.monotonic()
    say = line_printer(out, quiet)
    with tempfile.TemporaryDirectory(prefix="warpgate-demo-") as tmp:
        workdir = Path(tmp)
        async with EmbeddedInfra(workdir / "infra", mqtt=mqtt) as infra:
            report.infra = infra.describe()
            say("warpgate demo: two nodes on this machine, every traversal method")
            for line in report.infra:
                say("  " + line)
            conf = dict_child(dict(infra.conf(), install_path=str(workdir / "home")), NODE_CONF)
            async with (
                Gate("alice", conf, ip="127.0.0.1", port=0) as alice,
                Gate("bob", conf, ip="127.0.0.1", port=0) as bob,
            ):
                for gate in (alice, bob):
                    report.nodes[gate.full_name or gate.name] = gate.node.node_id
                    say(f"  node {gate.full_name or gate.name:<10} id {gate.node.node_id[:16]}...")
                target = bob.full_name or bob.address()
                bob.listen(_bob_answers)
                say()
                report.results = await _run_methods(alice, target, out, live, quiet)
    report.finish(began)
    if not quiet:
        print_tail(report, out)
    return report


def print_tail(report: DemoReport, out: TextIO) -> None:
    """The messages exchanged and the one-line summary."""
    out.write("\n")
    for line in report.messages:
        out.write("  " + line + "\n")
    out.write(_summary(report) + "\n")
    out.flush()


async def _run_methods(
    alice: Gate, target: str | bytes, out: TextIO, live: bool | None, quiet: bool
) -> list[MethodResult]:
    node = alice.node
    # Every traversal record is a TraversalMethodInfo (the kernel checks at registration).
    infos = sorted(
        (
            i
            for i in node.plugins.providers("traversal").values()
            if isinstance(i, TraversalMethodInfo)
        ),
        key=lambda i: i.cost,
    )
    peer = await resolve_destination(node, target)
    widths = [max([len(i.name) for i in infos] + [6]), 9, 7, 9, 4]
    table = None if quiet else LiveTable(COLUMNS, out, live=live, widths=widths)
    results: list[MethodResult] = []
    for info in infos:
        transports = tuple(getattr(info, "transports", ("tcp",)))
        provider = node.traversal_methods.get(info.name)
        for transport in transports:
            if provider is None:
                res = MethodResult(info.name, transport, "skipped", detail="not started (conf)")
            elif not provider.candidates(peer, transport=transport):
                res = MethodResult(info.name, transport, "skipped", detail=_why_idle(info, node))
            else:
                row = None
                if table is not None:
                    row = table.add(info.name, transport, "running", "...", "")
                ticker = _tick(table, row, info.name, transport)
                try:
                    res = await _try(alice, target, info.name, transport)  # type: ignore[arg-type]
                finally:
                    if ticker is not None:
                        ticker.cancel()
                if table is not None and row is not None:
                    table.update(row, *res.cells())
                results.append(res)
                continue
            if table is not None:
                table.add(*res.cells(), final=True)
            results.append(res)
    return results


def _why_idle(info: object, node: object) -> str:
    """Why a method had nothing to try here, as far as its record and conf say."""
    kind = getattr(info, "kind", "")
    conf = getattr(node, "conf", {})
    if kind == "punch":
        return "nothing to punch: no NAT between the peers here (try --lab)"
    if getattr(info, "name", "") == "turn" and not conf.get("turn_servers"):
        return "no TURN server (install coturn, or set turn_servers)"
    return "nothing to try on this machine"


def _tick(
    table: LiveTable | None, row: int | None, method: str, transport: str
) -> asyncio.Task[None] | None:
    """On a terminal, count up the time of a running attempt (punching or a timeout
    can take seconds, and a frozen row looks like a hang)."""
    if table is None or row is None or not table.live:
        return None
    began = time.monotonic()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.2)
            took = f"{time.monotonic() - began:.1f} s"
            table.update(row, method, transport, "running", took, "", final=False)

    return asyncio.ensure_future(tick())


def _summary(report: DemoReport) -> str:
    tried = [r for r in report.results if r.result != "skipped"]
    worked = report.worked
    text = f"{len(worked)} of {len(tried)} ways worked"
    if worked:
        best = min(worked, key=lambda r: r.seconds or 0.0)
        text += f"; fastest {best.method}/{best.transport} in {(best.seconds or 0) * 1000:.1f} ms"
    return f"summary: {text}; {2 * len(worked)} messages exchanged; total {report.seconds:.1f} s"


__all__ = ["DemoReport", "MethodResult", "run_demo"]
