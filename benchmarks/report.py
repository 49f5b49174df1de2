"""Results of ``python -m benchmarks``: machine information, measurement rows, and the
Markdown rendering that ``benchmarks/results/results.md`` and ``docs/benchmarks.md``
publish."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PYTHON_PACKAGES = ("warpgate", "cryptography", "aiomqtt", "aioice")
#: Debian package -> program whose version is asked when dpkg does not know it.
SERVER_PACKAGES = {"coturn": "turnserver", "mosquitto": "mosquitto"}
DOCS_START = "<!-- results-start -->"
DOCS_END = "<!-- results-end -->"


@dataclass
class Row:
    """One measurement: ``value`` against ``baseline`` measured in the same run."""

    section: str
    what: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _server_version(package: str, program: str) -> str | None:
    if shutil.which("dpkg-query"):
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        return None
    done = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=10, check=False)
    found = re.search(r"(\d+\.\d+\.\d+)", done.stdout + done.stderr)
    return found.group(1) if found else "installed"


def _memory_kib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mib": (_memory_kib() or 0) // 1024,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {name: _package_version(name) for name in PYTHON_PACKAGES},
        "servers": {pkg: _server_version(pkg, prog) for pkg, prog in SERVER_PACKAGES.items()},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------ rendering


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.0%}"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def rows_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| section | what | value | baseline (same run) | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = fmt(r["baseline"], r["unit"])
        if r["baseline_what"] and r["baseline"] is not None:
            base = f"{base} ({r['baseline_what']})"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        what = r["what"] + (f" - {r['note']}" if r["note"] else "")
        lines.append(
            f"| {r['section']} | {what} | {fmt(r['value'], r['unit'])} | {base} | {ratio} | "
            f"{r['target']} | {verdict(r['met'])} |"
        )
    return "\n".join(lines)


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f}"


def matrix_tables(matrix: dict[str, Any]) -> str:
    """One compact table per pass: a cell per row, each side's numbers side by side."""
    out = []
    for name, p in matrix.get("passes", {}).items():
        cells = p["cells"]
        if not cells:
            continue
        sides = list(cells[0]["summary"])
        header = "| cell | " + " | ".join(sides) + " | goals (per warpgate transport) |"
        out.append(
            f"#### Pass '{name}': WAN delay {p['delay_ms']:g} ms each way, loss {p['loss']:.0%}\n"
        )
        out.append(
            "Each side: success / direct share / median / p95 time to first echoed byte (ms).\n"
        )
        out.append(header)
        out.append("|---" * (len(sides) + 2) + "|")
        for c in cells:
            parts = []
            for side in sides:
                s = c["summary"][side]
                parts.append(
                    f"{s['success']:.0%} / {s['direct']:.0%} / {_ms(s['median_s'])} / "
                    f"{_ms(s['p95_s'])}"
                )
            goals = []
            for transport, g in c.get("goals", {}).items():
                missed = [k for k, v in g.items() if v["met"] is False]
                goals.append(
                    f"{transport}: " + ("all met" if not missed else "missed " + ", ".join(missed))
                )
            out.append(f"| {c['a']} ↔ {c['b']} | " + " | ".join(parts) + f" | {'; '.join(goals)} |")
        out.append("")
    return "\n".join(out)


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    pk = ", ".join(f"{k} {v or 'absent'}" for k, v in m["packages"].items())
    sv = ", ".join(f"{k} {v or 'absent'}" for k, v in m["servers"].items())
    lines = [
        f"Last written {results['generated']} by `{results['command']}` "
        f"({'quick' if results['quick'] else 'full'} run, {results['seconds']:.0f} s); "
        "each section below says when and how it ran.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']:,} MiB, Linux "
        f"{m['kernel']}, Python {m['python']}; {pk}; {sv}.",
        "",
    ]
    status = [
        f"`{name}` {s['status']} ({'quick' if s.get('quick') else 'full'}, "
        f"{s.get('generated', '?')}, {s.get('seconds', 0):.0f} s"
        + (f": {s['error']}" if s.get("error") else "")
        + ")"
        for name, s in results["sections"].items()
    ]
    lines += ["Sections: " + "; ".join(status) + ".", ""]
    rows = [r for s in results["sections"].values() for r in s.get("rows", [])]
    met = sum(r["met"] is True for r in rows)
    missed = sum(r["met"] is False for r in rows)
    lines += [f"Targets: {met} met, {missed} missed.", ""]
    matrix = results["sections"].get("nat_matrix", {}).get("matrix")
    if matrix:
        lines += ["### NAT matrix", "", matrix_tables(matrix), ""]
    lines += ["### Every measurement", "", rows_table(rows), ""]
    return "\n".join(lines)


def publish_in_docs(docs_page: Path, markdown: str) -> bool:
    """Replace the text between the results markers of ``docs_page``; False if absent."""
    if not docs_page.exists():
        return False
    text = docs_page.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        return False
    head, rest = text.split(DOCS_START, 1)
    _, tail = rest.split(DOCS_END, 1)
    docs_page.write_text(f"{head}{DOCS_START}\n\n{markdown}\n{DOCS_END}{tail}")
    return True
