"""For docs that name the tests behind their claims (docs/fuzzing.md, docs/security.md):
which tests a file defines, and which named tests do not exist."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `test_name` (a test of the doc's own folder) or `tests/path.py::test_name`
_NAMED = re.compile(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+)`")


def defined_tests(path: Path) -> set[str]:
    """The test functions ``path`` defines."""
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))


def missing_named_tests(chunks: Iterable[str], home: Path) -> list[str]:
    """The tests named in ``chunks`` of a doc that do not exist.  A bare name must be
    defined in a ``test_*.py`` of ``home``; ``tests/x.py::name`` in that file, unless the
    file does not exist yet and its chunk says the work is "pending"."""
    here = set().union(*(defined_tests(p) for p in home.glob("test_*.py")))
    missing = []
    for chunk in chunks:
        for path, name in _NAMED.findall(chunk):
            if not path:
                ok = name in here
            elif (ROOT / path).exists():
                ok = name in defined_tests(ROOT / path)
            else:
                ok = "pending" in chunk  # work in progress elsewhere, and the doc says so
            if not ok:
                missing.append(f"{path}::{name}" if path else name)
    return missing
