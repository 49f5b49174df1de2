"""The README's promises: two set-up commands (the second is what CI runs), and its
Python runs as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_two_setup_commands_and_the_second_is_what_ci_runs() -> None:
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    block = re.search(r"```console\n(.*?)```", setup, re.S)
    assert block is not None
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    commands = [c for c in commands if c]
    assert len(commands) == 2
    assert commands[0].endswith("&& warpgate demo") and commands[0].startswith("pip install")
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"exec {commands[1]}" in ci  # .ci/run runs the same command (with pytest args)


def test_readme_python_runs(tmp_path: Path) -> None:
    for code in re.findall(r"```python\n(.*?)```", README, re.S):
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=dict(os.environ, WARPGATE_HOME=str(tmp_path / "home")),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
