"""The pytest plugin skips where the lab cannot run, but never silently in CI."""

from __future__ import annotations

import pytest

from warpgate.lab import system
from warpgate.testing import pytest_plugin
from warpgate.testing.pytest_plugin import lab_unavailable_reason, require_lab


@pytest.fixture
def linux_non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytest_plugin.sys, "platform", "linux")
    monkeypatch.setattr(pytest_plugin.os, "geteuid", lambda: 1000)


def test_not_root_skips_outside_ci(linux_non_root, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("WARPGATE_LAB_REQUIRED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_lab()


@pytest.mark.parametrize("var", ["CI", "WARPGATE_LAB_REQUIRED"])
def test_not_root_fails_in_ci(linux_non_root, monkeypatch, var: str) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(var, "true")
    with pytest.raises(pytest.fail.Exception, match="lab required"):
        require_lab()


def test_missing_package_is_named(monkeypatch) -> None:
    monkeypatch.setattr(pytest_plugin.sys, "platform", "linux")
    monkeypatch.setattr(pytest_plugin.os, "geteuid", lambda: 0)
    real_which = system.shutil.which

    def which(name: str, path: str | None = None) -> str | None:
        return None if name == "turnserver" else real_which(name, path=path)

    monkeypatch.setattr(system.shutil, "which", which)
    reason = lab_unavailable_reason()
    assert reason is not None and "coturn" in reason
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="coturn"):
        require_lab()
    # A lab without servers does not need coturn.
    if system.shutil.which("ip") or real_which("ip", path="/usr/sbin:/sbin"):
        assert lab_unavailable_reason(servers=False) is None


def test_non_linux_always_skips(monkeypatch) -> None:
    monkeypatch.setattr(pytest_plugin.sys, "platform", "darwin")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="needs Linux"):
        require_lab()


def test_lab_fixtures_get_the_lab_marker(request) -> None:
    # This test uses no lab fixture: it must not be marked (and so runs everywhere).
    assert request.node.get_closest_marker("lab") is None


def test_lab_refuses_clearly_off_linux(monkeypatch) -> None:
    from warpgate.lab import Lab, LabUnavailable, two_nat

    monkeypatch.setattr(system.sys, "platform", "darwin")
    with pytest.raises(LabUnavailable, match="needs Linux"):
        Lab(two_nat()).up()


def test_lab_refuses_clearly_without_root(monkeypatch) -> None:
    from warpgate.lab import Lab, LabUnavailable, two_nat

    monkeypatch.setattr(system.sys, "platform", "linux")
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(LabUnavailable, match="needs root"):
        Lab(two_nat()).up()
