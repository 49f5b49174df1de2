"""The benchmark harness (``python -m benchmarks``) runs end to end with tiny sizes, so it
cannot rot: sections, results files, the NAT matrix against aioice in a real lab, and the
goal arithmetic.  Speed is never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.nat_matrix import MODES, cells, goals, p95, summarise
from benchmarks.report import DOCS_END, DOCS_START, Row, publish_in_docs, rows_table

ROOT = Path(__file__).resolve().parents[2]


def run_harness(tmp_path: Path, *args: str, timeout: float = 300) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path), "--no-docs", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.md").read_text().startswith("# Benchmark results")
    return results


def test_local_sections_write_results_with_machine_and_versions(tmp_path: Path) -> None:
    results = run_harness(tmp_path, "--only", "links,startup,connect")
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["kernel"]
    assert set(machine["packages"]) == {"warpgate", "cryptography", "aiomqtt", "aioice"}
    assert set(machine["servers"]) == {"coturn", "mosquitto"}
    assert list(results["sections"]) == ["links", "connect", "startup"]
    for name, section in results["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["rows"], name
        for row in section["rows"]:
            assert row["value"] is not None and row["value"] > 0, row
    # a second --only run keeps the sections of the first
    again = run_harness(tmp_path, "--only", "startup")
    assert list(again["sections"]) == ["links", "connect", "startup"]
    # --publish renders the stored results again without running anything
    (tmp_path / "results.md").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--publish", "--out", str(tmp_path), "--no-docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| links, loopback |" in (tmp_path / "results.md").read_text()


def test_scale_sections_parse_their_scripts(tmp_path: Path) -> None:
    """pnp, signal and links per node: each row that has a number got one (a script
    whose output changed shows up here as a missing value)."""
    results = run_harness(tmp_path, "--only", "scale_links,pnp,signal")
    for name, section in results["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        for row in section["rows"]:
            if "skipped" not in row["note"]:
                assert row["value"] is not None and row["value"] > 0, row


@pytest.mark.lab
def test_lab_sections_parse_their_scripts(tmp_path: Path) -> None:
    from warpgate.testing.pytest_plugin import require_lab

    require_lab()
    results = run_harness(tmp_path, "--only", "links_lab,startup_lab,relay,lab_up")
    for name, section in results["sections"].items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert section["rows"], name
        for row in section["rows"]:
            assert row["value"] is not None and row["value"] > 0, row
    relay = [r["what"] for r in results["sections"]["relay"]["rows"]]
    assert any("relay connect" in w for w in relay) and any("goodput" in w for w in relay)


def test_unknown_section_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "unknown section(s) nope" in done.stderr


@pytest.mark.lab
def test_nat_matrix_runs_warpgate_and_ice_in_the_lab(tmp_path: Path) -> None:
    from warpgate.testing.pytest_plugin import require_lab

    require_lab()
    results = run_harness(
        tmp_path, "--only", "nat_matrix", "--modes", "port-restricted", "--tries", "1",
        "--transports", "udp", timeout=240,
    )  # fmt: skip
    section = results["sections"]["nat_matrix"]
    assert section["status"] == "ok", section.get("error")
    passes = section["matrix"]["passes"]
    assert list(passes) == ["clean", "impaired"]
    assert passes["impaired"]["delay_ms"] == 25.0 and passes["impaired"]["loss"] == 0.01
    for p in passes.values():
        (cell,) = p["cells"]
        assert (cell["a"], cell["b"]) == ("port-restricted", "port-restricted")
        assert set(cell["summary"]) == {"warpgate-udp", "ice"}
        assert "direct" in cell["methods"]  # the installed methods are picked up
        assert cell["summary"]["ice"]["success"] == 1.0  # ICE gets through this pair
        assert set(cell["goals"]["udp"]) == {"success", "direct", "ttfb"}
    raw = json.loads((tmp_path / "nat_matrix.json").read_text())
    tries = raw["passes"]["clean"]["cells"][0]["raw"]
    assert tries["ice"][0]["ok"] and tries["ice"][0]["pair"]
    rows = [r for r in section["rows"] if "median time to first byte" in r["what"]]
    assert len(rows) == 2 and all(r["target"] == "<= 0.5x ICE" for r in rows)
    assert "port-restricted" in (tmp_path / "results.md").read_text()


def test_summary_counts_failures_against_both_shares() -> None:
    tries = [
        {"ok": True, "seconds": 0.010, "kind": "direct", "method": "udp_punch"},
        {"ok": True, "seconds": 0.030, "kind": "relay", "method": "turn"},
        {"ok": False, "seconds": 10.0, "kind": None, "error": "no way\nmore"},
        {"ok": True, "seconds": 0.020, "kind": "direct", "method": "udp_punch"},
    ]
    s = summarise(tries)
    assert s["success"] == 0.75 and s["direct"] == 0.5 and s["relayed"] == 0.25
    assert s["median_s"] == 0.020 and s["p95_s"] == 0.030
    assert s["methods"] == {"udp_punch": 2, "turn": 1} and s["errors"] == ["no way"]
    assert p95([float(i) for i in range(1, 41)]) == 38.0


def _side(success: float, direct: float, median: float | None) -> dict:
    return {"success": success, "direct": direct, "median_s": median}


@pytest.mark.parametrize(
    ("cell", "wg", "ice", "met"),
    [
        # ICE relayed a punchable pair: warpgate must do strictly better
        (("full-cone", "port-restricted"), _side(1, 0.6, 0.01), _side(1, 0.6, 0.1), False),
        (("full-cone", "port-restricted"), _side(1, 0.8, 0.01), _side(1, 0.6, 0.1), True),
        # nobody can go direct between two symmetric NATs: equal is enough
        (("symmetric", "symmetric"), _side(1, 0.0, 0.01), _side(1, 0.0, 0.1), True),
        # all direct cannot be beaten
        (("open", "open"), _side(1, 1.0, 0.01), _side(1, 1.0, 0.1), True),
    ],
)
def test_direct_share_goal(cell: tuple[str, str], wg: dict, ice: dict, met: bool) -> None:
    assert goals(cell, wg, ice)["direct"]["met"] is met


def test_time_to_first_byte_goal_is_half_of_ice() -> None:
    ok = goals(("open", "open"), _side(1, 1, 0.05), _side(1, 1, 0.1))["ttfb"]
    assert ok["met"] and ok["ratio"] == 0.5
    assert not goals(("open", "open"), _side(1, 1, 0.06), _side(1, 1, 0.1))["ttfb"]["met"]
    # warpgate connected where ICE never did: met; never connected: missed
    assert goals(("open", "open"), _side(1, 1, 0.06), _side(0, 0, None))["ttfb"]["met"]
    assert not goals(("open", "open"), _side(0, 0, None), _side(1, 1, 0.1))["ttfb"]["met"]


def test_rows_render_and_publish_between_markers(tmp_path: Path) -> None:
    row = Row("links", "64 KiB", 350.0, "MB/s", 500.0, "asyncio", target=">= 70%", met=True)
    assert row.ratio == 0.7
    table = rows_table([row.as_dict()])
    assert "| links | 64 KiB | 350.0 MB/s | 500.0 MB/s (asyncio) | 0.70x | >= 70% | met |" in table
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{DOCS_START}\nold\n{DOCS_END}\nafter\n")
    assert publish_in_docs(page, "NEW TABLE")
    text = page.read_text()
    assert "old" not in text and "NEW TABLE" in text and text.endswith("after\n")
    assert not publish_in_docs(tmp_path / "missing.md", "x")


def test_matrix_cells_cover_every_pair() -> None:
    unordered = cells(MODES)
    assert len(unordered) == 15 and ("open", "symmetric") in unordered
    assert ("symmetric", "open") not in unordered
    ordered = cells(MODES, ordered=True)
    assert len(ordered) == 25 and ("symmetric", "open") in ordered
