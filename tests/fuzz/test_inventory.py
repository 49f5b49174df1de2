"""docs/fuzzing.md names every sans-IO module and only fuzz tests that exist."""

from __future__ import annotations

import re

from tests.doc_tests import ROOT, missing_named_tests

DOC = (ROOT / "docs" / "fuzzing.md").read_text()


def test_every_sansio_module_is_in_the_fuzzing_inventory() -> None:
    modules = sorted(
        p.name for p in (ROOT / "warpgate" / "sansio").glob("*.py") if p.stem != "__init__"
    )
    missing = [m for m in modules if f"warpgate/sansio/{m}" not in DOC]
    assert not missing, f"add these parsers to docs/fuzzing.md (and fuzz them): {missing}"


def test_every_fuzz_test_named_in_the_doc_exists() -> None:
    missing = missing_named_tests(DOC.splitlines(), ROOT / "tests" / "fuzz")
    assert not missing, f"docs/fuzzing.md names tests that do not exist: {missing}"


def test_every_test_file_named_in_the_doc_fuzzes() -> None:
    for line in DOC.splitlines():
        for path in re.findall(r"`(tests/[\w/]*test_\w+\.py)`", line):
            if (ROOT / path).exists():
                assert "@given" in (ROOT / path).read_text(), f"{path} has no hypothesis test"
            else:
                assert "pending" in line, f"docs/fuzzing.md names a missing file {path}"
