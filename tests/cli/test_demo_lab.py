"""``warpgate demo --lab``: the same demo behind real NATs (root on Linux)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import interrupt, run_cli, spawn_cli
from warpgate.testing.pytest_plugin import lab_unavailable_reason

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_demo_across_real_nats_punches_and_relays(tmp_path: Path) -> None:
    reason = lab_unavailable_reason(servers=True, upnp=False)
    if reason:
        pytest.skip(reason)
    result = run_cli(
        ["demo", "--lab", "--json", "--nat-a", "full-cone", "--nat-b", "port-restricted"],
        tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {(r["method"], r["transport"]): r for r in report["results"]}
    assert set(report["nodes"]) == {"alice.p2p", "bob.p2p"}
    # Between two NATs nothing dials in directly; punching and the relay get through.
    assert rows[("direct", "udp")]["result"] == "failed"
    for key in (("udp_punch", "udp"), ("turn", "udp")):
        if key[0] in {m for m, _ in rows}:
            assert rows[key]["result"] == "ok", rows[key]
    assert rows[("turn", "udp")]["path"].endswith("(relayed)")
    # The lab is gone: no namespace of its prefix is left.
    prefix = next(line.split()[1] for line in report["infra"] if line.startswith("lab "))
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in names


def test_demo_lab_ctrl_c_tears_the_lab_down(tmp_path: Path) -> None:
    reason = lab_unavailable_reason(servers=True, upnp=False)
    if reason:
        pytest.skip(reason)
    proc = spawn_cli(["demo", "--lab"], tmp_path)
    assert proc.stdout is not None
    prefix = ""
    for _ in range(50):  # bounded: the header is a handful of lines
        line = proc.stdout.readline().decode()
        if line.strip().startswith("lab "):
            prefix = line.split()[1]
        if line.startswith("method") or not line:
            break
    assert prefix, "the demo did not say which lab it built"
    code, err = interrupt(proc, timeout=60)  # mid-table: nodes, servers and NATs are up
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("warpgate: interrupted")
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in names
