"""``warpgate demo``: run as a subprocess, offline, leaving nothing behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import interrupt, lines, run_cli, spawn_cli
from warpgate.cli import main
from warpgate.demo.runner import run_demo
from warpgate.demo.table import LiveTable
from warpgate.plugin.manager import make_plugin_manager


def _coturn_pids(tmp_path: Path) -> set[int]:
    """coturn processes whose files are under ``tmp_path`` (the CLI's TMPDIR)."""
    pids = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(tmp_path).encode() in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _installed_methods() -> dict[str, tuple[str, ...]]:
    pm = make_plugin_manager()
    return {
        name: tuple(getattr(info, "transports", ("tcp",)))
        for name, info in pm.providers("traversal").items()
    }


def test_demo_json_runs_every_installed_method_by_name(tmp_path: Path) -> None:
    result = run_cli(["demo", "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert set(report["nodes"]) == {"alice.p2p", "bob.p2p"}  # registered and resolved by PNP
    rows = {(r["method"], r["transport"]): r for r in report["results"]}
    # Every installed method and transport has a row, so new plugins appear by themselves.
    for method, transports in _installed_methods().items():
        for transport in transports:
            assert (method, transport) in rows, (method, transport)
    for key in (("direct", "tcp"), ("direct", "udp"), ("reverse", "tcp")):
        row = rows[key]
        assert row["result"] == "ok", row
        assert row["path"].startswith("127.0.0.1:")
        assert row["detail"] == f"bob got: hello bob, alice here via {key[0]}/{key[1]}"
    if shutil.which("turnserver") or shutil.which("turnserver", path="/usr/bin:/usr/sbin"):
        turn = rows[("turn", "udp")]  # the private coturn on loopback relays
        assert turn["result"] == "ok" and turn["path"].endswith("(relayed)"), turn
    assert any("MQTT broker" in line and "mqtt://127.0.0.1:" in line for line in report["infra"])
    # The user's keystore was never touched: keys live in a temporary directory.
    assert not (tmp_path / "wghome").exists()


def test_demo_table_and_summary_on_a_pipe(tmp_path: Path) -> None:
    result = run_cli(["demo"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # no escape codes when stdout is not a terminal
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split() == ["method", "transport", "result", "time", "path"]
    assert any(line.split()[:3] == ["direct", "tcp", "ok"] for line in lines(out))
    assert lines(out)[-1].startswith("summary: ")
    assert "bob -> alice: bob got: hello bob" in out
    assert "error:" not in result.stderr


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_demo_ctrl_c_stops_cleanly(tmp_path: Path, delay: float) -> None:
    proc = spawn_cli(["demo"], tmp_path)
    assert proc.stdout is not None
    proc.stdout.readline()  # the program is running (not still importing Python modules)
    time.sleep(delay)  # infrastructure, nodes, the table: any moment must be safe
    code, err = interrupt(proc)
    assert not _coturn_pids(tmp_path)  # a relay it was starting was stopped too
    # Either it finished first (0) or it was interrupted: one line, non-zero.
    if code != 0:
        assert code == 130
        assert len(lines(err)) == 1 and "interrupted" in err


def test_demo_lab_needs_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["demo", "--lab"]) == 2
    err = capsys.readouterr().err
    assert len(lines(err)) == 1 and "root" in err and "try:" in err


def test_live_table_redraws_on_a_terminal_and_prints_once_elsewhere() -> None:
    live = io.StringIO()
    table = LiveTable(("method", "result"), live, live=True)
    row = table.add("direct", "running")
    table.update(row, "direct", "ok")
    assert "\x1b[2F" in live.getvalue() and live.getvalue().count("running") == 1
    plain = io.StringIO()
    table = LiveTable(("method", "result"), plain, live=False)
    row = table.add("direct", "running")
    assert "direct" not in plain.getvalue()  # not final yet: nothing printed
    table.update(row, "direct", "ok")
    assert plain.getvalue().split("\n")[1].split() == ["direct", "ok"]
    assert "running" not in plain.getvalue()


async def test_demo_in_process_contacts_nothing_outside_loopback() -> None:
    """In-process, under the test network guard (only loopback and lab addresses
    resolve), and without an MQTT broker, as after a plain ``pip install warpgate``."""
    out = io.StringIO()
    report = await run_demo(out, live=False, mqtt=False)
    rows = {(r.method, r.transport): r for r in report.results}
    assert rows[("direct", "tcp")].result == "ok"
    assert rows[("reverse", "tcp")].result == "ok"  # signalled in-process instead of MQTT
    assert any("in-process signalling" in line for line in report.infra)
    assert out.getvalue().rstrip().splitlines()[-1].startswith("summary: ")


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="--lab needs root")
def test_demo_lab_bad_nat_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--lab", "--nat-a", "bogus"]) == 2
    err = capsys.readouterr().err
    assert len(lines(err)) == 1 and "unknown NAT mode 'bogus'" in err and "try:" in err
