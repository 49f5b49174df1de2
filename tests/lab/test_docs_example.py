"""docs/lab.md's complete test file runs as written, in a fresh pytest, as a plugin
author's project would run it (fixtures from the warpgate pytest plugin)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from warpgate.testing.pytest_plugin import require_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "lab.md"


def _example(name: str) -> str:
    text = DOC.read_text()
    block = re.search(
        rf"<!-- example-start: {re.escape(name)} -->\s*```python\n(.*?)```\s*<!-- example-end -->",
        text,
        re.S,
    )
    assert block, f"example {name} not found in {DOC}"
    return block.group(1)


def _plugin_installed() -> bool:
    return any(ep.name == "warpgate" for ep in importlib.metadata.entry_points(group="pytest11"))


def test_hole_punching_example_from_docs(tmp_path: Path) -> None:
    require_lab()
    (tmp_path / "test_hole_punching.py").write_text(_example("test_hole_punching.py"))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    if not _plugin_installed():  # a plain checkout: load the plugin by module name
        argv[4:4] = ["-p", "warpgate.testing.pytest_plugin"]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=110, env=env, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "10 passed" in proc.stdout


def test_python_api_tour_from_docs(tmp_path: Path) -> None:
    require_lab()
    script = tmp_path / "lab_tour.py"
    script.write_text(_example("lab_tour.py"))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "'ok': True" in lines[0]
    assert lines[2] == "10.1.0.2"
    assert lines[-1] == "HTTP/1.0 200 OK"
