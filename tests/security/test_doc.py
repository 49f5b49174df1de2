"""docs/security.md names only tests that exist: every claim keeps a test behind it."""

from __future__ import annotations

import re

from tests.doc_tests import ROOT, defined_tests, missing_named_tests

DOC = (ROOT / "docs" / "security.md").read_text()


def test_every_test_named_in_the_security_doc_exists() -> None:
    paragraphs = re.split(r"\n\s*\n|\n(?=\|)|\n(?=- )", DOC)
    missing = missing_named_tests(paragraphs, ROOT / "tests" / "security")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_security_test_is_named_in_the_doc() -> None:
    for path in (ROOT / "tests" / "security").glob("test_*.py"):
        if path.name == "test_doc.py":
            continue
        for name in defined_tests(path):
            assert f"`{name}`" in DOC, f"{path.name}::{name} backs no claim in docs/security.md"
