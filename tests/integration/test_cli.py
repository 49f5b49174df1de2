"""The ``warpgate`` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warpgate import __version__
from warpgate.cli import main
from warpgate.sansio.address import NodeAddress


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"warpgate {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "plugins" in capsys.readouterr().out


def test_plugins_list_json_names_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("interfaces", "identity", "listen", "address", "traversal"):
        assert rows[name]["status"] == "active" and rows[name]["distribution"] == "warpgate"
    assert rows["listen"]["hooks"] == ["warpgate_listen_on_ifs"]


def test_plugins_list_table_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    assert "plugin" in out.splitlines()[0] and "listen" in out
    assert main(["plugins", "hooks", "--json"]) == 0
    hooks = {h["name"]: h for h in json.loads(capsys.readouterr().out)}
    assert hooks["warpgate_listen_on_ifs"]["implemented_by"] == ["listen"]
    assert (
        hooks["warpgate_listen_on_ifs"]["firstresult"] and hooks["warpgate_listen_on_ifs"]["async"]
    )
    assert hooks["warpgate_node_started"]["kind"] == "observer"


def test_plugins_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_node_command_prints_address_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    addr_file = tmp_path / "addr.bin"
    env = dict(os.environ, WARPGATE_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "warpgate",
            "node",
            "--test-conf",
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--address-file",
            str(addr_file),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("serving"):
                break
        text = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("address:"))
        assert NodeAddress.from_text(text) == NodeAddress.decode(addr_file.read_bytes())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_node_command_reports_a_taken_port_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        env = dict(os.environ, WARPGATE_HOME=str(tmp_path / "home"))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "warpgate",
                "node",
                "--test-conf",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"warpgate: error: port {port} is already in use")
    )
