"""docs/security.md names only tests that exist: every claim keeps a test behind it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()


def _defined(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))


def test_every_test_named_in_the_security_doc_exists() -> None:
    here = set().union(*(_defined(p) for p in (ROOT / "tests" / "security").glob("test_*.py")))
    missing = []
    for paragraph in re.split(r"\n\s*\n|\n(?=\|)|\n(?=- )", DOC):
        pending = "pending" in paragraph
        for path, name in re.findall(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+)`", paragraph):
            if not path:
                ok = name in here
            elif (ROOT / path).exists():
                ok = name in _defined(ROOT / path)
            else:
                ok = pending  # work in progress elsewhere, and the doc says so
            if not ok:
                missing.append(f"{path}::{name}" if path else name)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_security_test_is_named_in_the_doc() -> None:
    for path in (ROOT / "tests" / "security").glob("test_*.py"):
        if path.name == "test_doc.py":
            continue
        for name in _defined(path):
            assert f"`{name}`" in DOC, f"{path.name}::{name} backs no claim in docs/security.md"
