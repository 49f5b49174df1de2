"""Shared fixtures: every test gets its own warpgate home (keystore) and a clean
plugin environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warpgate.plugin.manager import ENV_ALLOW, ENV_DISABLE, ENV_STACK, refresh_entry_points


@pytest.fixture(autouse=True)
def warpgate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "warpgate-home"
    monkeypatch.setenv("WARPGATE_HOME", str(home))
    for name in (ENV_ALLOW, ENV_DISABLE, *ENV_STACK.values()):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def fresh_entry_points() -> Iterator[None]:
    """Rescan entry points before and after a test that installs a distribution."""
    refresh_entry_points()
    yield
    refresh_entry_points()
