"""Every ```python block in docs/ runs, as a user would paste it.

Blocks fenced as ```py are fragments (shown, not run). A block whose first line is
``# needs: lab`` needs root on Linux and runs only there (it does in CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for n, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            found.append((f"{page.name}#{n}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_doc_block_runs(where: str, code: str, tmp_path: Path) -> None:
    if code.startswith("# needs: lab") and (sys.platform != "linux" or os.geteuid() != 0):
        pytest.skip("needs root on Linux (the NAT lab)")
    env = dict(os.environ, WARPGATE_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
