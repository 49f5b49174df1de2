"""plugin-template/ bakes a working plugin of every kind: each is pip-installed next to
warpgate (a venv that sees this environment's packages), runs its own tests (the
conformance check, and the NAT lab when root), is listed by ``warpgate plugins list``,
and is ruff-clean by warpgate's own rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "plugin-template"
KINDS = ("traversal", "name_service", "signal", "phase")

cookiecutter = pytest.importorskip("cookiecutter.main")


def _slug(kind: str) -> str:
    return f"tpl-{kind.replace('_', '-')}"


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(directory with one project per kind, the venv's python)."""
    out = tmp_path_factory.mktemp("baked")
    for kind in KINDS:
        cookiecutter.cookiecutter(
            str(TEMPLATE),
            no_input=True,
            output_dir=str(out),
            extra_context={"plugin_name": _slug(kind), "kind": kind, "author": "CI"},
        )
    venv = out / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    projects = [str(out / f"warpgate-plugin-{_slug(k)}") for k in KINDS]
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", *projects],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return out, python


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, WARPGATE_HOME=str(tmp / "wghome"), PYTHONDONTWRITEBYTECODE="1")


@pytest.mark.parametrize("kind", KINDS)
def test_baked_plugin_passes_its_own_tests(
    baked: tuple[Path, Path], kind: str, tmp_path: Path
) -> None:
    out, python = baked
    project = out / f"warpgate-plugin-{_slug(kind)}"
    assert (project / ".github" / "workflows" / "ci.yml").is_file()
    assert (project / "README.md").read_text().startswith(f"# warpgate-plugin-{_slug(kind)}")
    package = project / f"warpgate_plugin_{_slug(kind).replace('-', '_')}"
    plugin = (package / "plugin.py").read_text()
    assert "@hookimpl" in plugin and "{{" not in plugin
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=project,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conformance" in (project / "tests" / "test_plugin.py").read_text()


def test_warpgate_lists_every_baked_plugin(baked: tuple[Path, Path], tmp_path: Path) -> None:
    _, python = baked
    result = subprocess.run(
        [str(python), "-m", "warpgate", "plugins", "list", "--json"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for kind in KINDS:
        row = rows[_slug(kind)]
        assert row["status"] == "active"
        assert row["distribution"] == f"warpgate-plugin-{_slug(kind)}"
        if kind != "phase":  # the other kinds provide a provider of their role
            assert row["roles"] == {kind: [_slug(kind)]}
        else:
            assert "warpgate_start_maintenance_tasks" in row["hooks"]
    check = subprocess.run(
        [str(python), "-m", "warpgate", "plugins", "check"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_baked_code_is_ruff_clean(baked: tuple[Path, Path]) -> None:
    """Lint each project with its own ruff settings (what its author will run)."""
    out, _ = baked
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed")
    for kind in KINDS:
        project = out / f"warpgate-plugin-{_slug(kind)}"
        for args in (["check", "."], ["format", "--check", "."]):
            result = subprocess.run(
                [ruff, *args], cwd=project, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, f"{kind}: {result.stdout}{result.stderr}"


def test_a_bad_plugin_name_is_refused(tmp_path: Path) -> None:
    from cookiecutter.exceptions import FailedHookException

    with pytest.raises(FailedHookException):
        cookiecutter.cookiecutter(
            str(TEMPLATE),
            no_input=True,
            output_dir=str(tmp_path),
            extra_context={"plugin_name": "9-Bad Name", "kind": "traversal"},
        )
    assert not any(tmp_path.iterdir())  # nothing half-written
