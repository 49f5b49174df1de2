"""``warpgate lab up/status/exec/down`` end to end (through ``python -m``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from warpgate.lab.state import process_start_time
from warpgate.lab.system import list_netns
from warpgate.testing.pytest_plugin import require_lab

pytestmark = pytest.mark.lab


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warpgate.lab.cli", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_up_status_exec_down() -> None:
    require_lab()
    up = _cli("up", "two-nat", "--nat-a", "full-cone", "--nat-b", "symmetric")
    match = re.search(r"lab (wgl[0-9a-f]{6}) up", up.stdout)
    assert match, up.stdout + up.stderr
    prefix = match.group(1)
    try:
        assert up.returncode == 0, up.stderr
        assert "[MISMATCH]" not in up.stdout

        status = _cli("status", "--json", "--prefix", prefix)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["routers"]["nat_a"]["mode"] == "full-cone"
        assert data["hosts"]["a"]["probe"]["mapping"] == "EIM"
        assert data["hosts"]["b"]["probe"]["mapping"] == "APDM"
        assert set(data["servers"]) == {"mqtt", "stun", "ntp", "upnp:nat_a"}
        assert all(p["running"] for p in data["processes"].values())

        ex = _cli("exec", "--prefix", prefix, "a", "--", "ip", "-4", "-o", "addr")
        assert ex.returncode == 0
        assert data["hosts"]["a"]["address"] in ex.stdout
        assert _cli("exec", "--prefix", prefix, "a", "--", "false").returncode == 1
    finally:
        down = _cli("down", "--prefix", prefix)
    assert down.returncode == 0
    assert prefix in down.stdout
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]


def test_cli_errors_are_clear() -> None:
    require_lab(servers=False)
    bad = _cli("up", "two-nat", "--mode", "nat_q=open", "--no-servers")
    assert bad.returncode == 1
    assert "nat_q" in bad.stderr
    missing = _cli("status", "--prefix", "wgl000000")
    assert missing.returncode == 1
    assert "no running lab" in missing.stderr


def test_cli_link_options_and_down_stops_the_delay_shim() -> None:
    require_lab(servers=False)
    up = _cli(
        "up",
        "same-lan",
        "--no-servers",
        "--mode",
        "nat_a=full-cone",
        "--hairpin",
        "nat_a",
        "--loss",
        "nat_a=0.01",
        "--delay",
        "nat_a=10",
        "--jitter",
        "nat_a=2",
    )
    match = re.search(r"lab (wgl[0-9a-f]{6}) up", up.stdout)
    assert match, up.stdout + up.stderr
    prefix = match.group(1)
    try:
        assert "delay 10±2 ms" in up.stdout and "hairpin" in up.stdout
        data = json.loads(_cli("status", "--json", "--no-probe", "--prefix", prefix).stdout)
        router = data["routers"]["nat_a"]
        assert (router["loss"], router["delay_ms"], router["jitter_ms"]) == (0.01, 10, 2)
        assert router["hairpin"] is True
        shim = data["processes"]["delay:nat_a"]
        assert shim["running"]
    finally:
        _cli("down", "--prefix", prefix)
    assert process_start_time(shim["pid"]) is None
    assert not [ns for ns in list_netns() if ns.startswith(prefix)]
