"""docs/fuzzing.md names every sans-IO module and only fuzz tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "fuzzing.md").read_text()


def _defined(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))


def test_every_sansio_module_is_in_the_fuzzing_inventory() -> None:
    modules = sorted(
        p.name for p in (ROOT / "warpgate" / "sansio").glob("*.py") if p.stem != "__init__"
    )
    missing = [m for m in modules if f"warpgate/sansio/{m}" not in DOC]
    assert not missing, f"add these parsers to docs/fuzzing.md (and fuzz them): {missing}"


def test_every_fuzz_test_named_in_the_doc_exists() -> None:
    here = set().union(*(_defined(p) for p in (ROOT / "tests" / "fuzz").glob("test_*.py")))
    missing = []
    for line in DOC.splitlines():
        for path, name in re.findall(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+)`", line):
            if not path:
                ok = name in here
            elif (ROOT / path).exists():
                ok = name in _defined(ROOT / path)
            else:
                ok = "pending" in line
            if not ok:
                missing.append(f"{path}::{name}" if path else name)
    assert not missing, f"docs/fuzzing.md names tests that do not exist: {missing}"


def test_every_test_file_named_in_the_doc_fuzzes() -> None:
    for line in DOC.splitlines():
        for path in re.findall(r"`(tests/[\w/]*test_\w+\.py)`", line):
            if (ROOT / path).exists():
                assert "@given" in (ROOT / path).read_text(), f"{path} has no hypothesis test"
            else:
                assert "pending" in line, f"docs/fuzzing.md names a missing file {path}"
