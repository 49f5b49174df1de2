"""Run every benchmark and write the results table (Markdown and JSON).

    python -m benchmarks [--quick] [--only NAME[,NAME]] [--skip NAME] [--tries N]
    python benchmarks/run_all.py ...                      (the same)

Writes ``benchmarks/results/results.json`` (every measurement, the machine, package and
server versions), ``results.md`` (the table) and ``nat_matrix.json`` (every try of the
NAT matrix), and publishes the table in ``docs/benchmarks.md`` between its markers.
Sections run with ``--only`` replace their part of an existing results file; the others
are kept.  Lab sections need root on Linux and are skipped (with the reason) elsewhere.
``--quick`` makes every section small (a smoke run: minutes, not a measurement to quote).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import machine_info, publish_in_docs, render
from benchmarks.sections import SECTIONS, Context, Skipped

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS_PAGE = HERE.parent / "docs" / "benchmarks.md"

log = logging.getLogger("benchmarks")


def _names(values: list[str] | None) -> list[str]:
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(
            f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return names


def run_sections(names: list[str], ctx: Context) -> dict[str, dict[str, Any]]:
    """Run the named sections in order; a failing section is recorded, never fatal."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        fn, _needs_lab = SECTIONS[name]
        ctx.progress(f"== {name}")
        begin = time.perf_counter()
        entry: dict[str, Any] = {"quick": ctx.quick}
        try:
            got = fn(ctx)
            entry.update(status="ok", **got)
        except Skipped as exc:
            entry.update(status="skipped", error=str(exc), rows=[])
        except Exception as exc:  # one broken benchmark must not lose the others
            log.error("section %s failed:\n%s", name, traceback.format_exc())
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], rows=[])
        entry["seconds"] = time.perf_counter() - begin
        entry["generated"] = _now()
        entry["rows"] = [r if isinstance(r, dict) else r.as_dict() for r in entry["rows"]]
        ctx.progress(f"== {name}: {entry['status']} in {entry['seconds']:.0f} s")
        out[name] = entry
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_results(
    sections: dict[str, dict[str, Any]],
    *,
    out_dir: Path,
    quick: bool,
    command: str,
    seconds: float,
    merge: bool,
) -> dict[str, Any]:
    """results.json (+ nat_matrix.json with every try) and results.md in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    previous: dict[str, Any] = {}
    if merge and path.exists():
        try:
            previous = json.loads(path.read_text()).get("sections", {})
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    merged = {**previous, **sections}
    matrix = sections.get("nat_matrix", {}).get("matrix")
    if matrix:
        (out_dir / "nat_matrix.json").write_text(json.dumps(matrix, indent=1, default=str))
        # results.json keeps the summaries; every try stays in nat_matrix.json.
        slim = {
            **matrix,
            "passes": {
                name: {
                    **p,
                    "cells": [{k: v for k, v in c.items() if k != "raw"} for c in p["cells"]],
                }
                for name, p in matrix["passes"].items()
            },
        }
        merged["nat_matrix"] = {**sections["nat_matrix"], "matrix": slim}
    results = {
        "generated": _now(),
        "command": command,
        "quick": quick,
        "seconds": seconds,
        "machine": machine_info(),
        "sections": {name: merged[name] for name in SECTIONS if name in merged},
    }
    path.write_text(json.dumps(results, indent=1, default=str))
    (out_dir / "results.md").write_text("# Benchmark results\n\n" + render(results))
    return results


def publish_only(out_dir: Path, *, docs: bool) -> int:
    """Render an existing results.json again (after a run elsewhere, or a format change)."""
    path = out_dir / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    (out_dir / "results.md").write_text("# Benchmark results\n\n" + render(results))
    print(f"wrote {out_dir / 'results.md'}")
    if docs and publish_in_docs(DOCS_PAGE, render(results)):
        print(f"published in {DOCS_PAGE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sections, in order: " + ", ".join(SECTIONS),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", action="append", help="run only these sections (comma list)")
    parser.add_argument("--skip", action="append", help="leave these sections out")
    parser.add_argument("--tries", type=int, help="NAT matrix tries per cell (default 5, quick 2)")
    parser.add_argument("--transports", default="udp,tcp", help="warpgate transports in the matrix")
    parser.add_argument("--modes", help="NAT modes of the matrix (comma list; default all five)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="matrix pass 2: one-way delay")
    parser.add_argument("--loss", type=float, default=0.01, help="matrix pass 2: loss fraction")
    parser.add_argument("--ordered", action="store_true", help="matrix: both directions")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--no-docs", action="store_true", help=f"do not update {DOCS_PAGE.name}")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="run nothing: render results.md and the docs page from --out's results.json",
    )
    args = parser.parse_args(argv)
    if args.publish:
        return publish_only(args.out, docs=not args.no_docs)
    if args.list:
        for name, (fn, needs_lab) in SECTIONS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:<12} {'(lab) ' if needs_lab else ''}{doc[0] if doc else ''}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Many in-flight publishes are the point of the signal rate test.
    logging.getLogger("warpgate_plugins.mqtt.transport.paho").setLevel(logging.ERROR)
    only, skip = _names(args.only), _names(args.skip)
    names = [n for n in (only or list(SECTIONS)) if n not in skip]
    ctx = Context(
        quick=args.quick,
        progress=lambda line: print(line, flush=True),
        tries=args.tries,
        transports=[t.strip() for t in args.transports.split(",") if t.strip()],
        modes=[m.strip() for m in args.modes.split(",")] if args.modes else None,
        delay_ms=args.delay_ms,
        loss=args.loss,
        ordered=args.ordered,
    )
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        old = os.environ.get("WARPGATE_HOME")
        os.environ["WARPGATE_HOME"] = home  # never touch the user's keystore
        try:
            sections = run_sections(names, ctx)
        finally:
            if old is None:
                os.environ.pop("WARPGATE_HOME", None)
            else:
                os.environ["WARPGATE_HOME"] = old
    seconds = time.perf_counter() - begin
    results = write_results(
        sections,
        out_dir=args.out,
        quick=args.quick,
        command=command.strip(),
        seconds=seconds,
        merge=bool(only),
    )
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} ({seconds:.0f} s)")
    if not args.no_docs:
        if publish_in_docs(DOCS_PAGE, render(results)):
            print(f"published in {DOCS_PAGE}")
    failed = [n for n, s in sections.items() if s["status"] == "failed"]
    if failed:
        print(f"failed sections: {', '.join(failed)} (see above; results.json has the error)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
