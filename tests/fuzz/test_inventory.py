"""docs/fuzzing.md names every sans-IO module and only fuzz tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "fuzzing.md").read_text()


def test_every_sansio_module_is_in_the_fuzzing_inventory() -> None:
    modules = sorted(
        p.name for p in (ROOT / "warpgate" / "sansio").glob("*.py") if p.stem != "__init__"
    )
    missing = [m for m in modules if f"warpgate/sansio/{m}" not in DOC]
    assert not missing, f"add these parsers to docs/fuzzing.md (and fuzz them): {missing}"


def test_every_fuzz_test_named_in_the_doc_exists() -> None:
    defined = set()
    for path in (ROOT / "tests" / "fuzz").glob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    named = set(re.findall(r"`(test_\w+)`", DOC))
    assert named, "the inventory names no tests"
    assert not named - defined - {"test_replay"}, sorted(named - defined)
