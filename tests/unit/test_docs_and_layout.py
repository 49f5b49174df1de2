"""Docs and layout stay true to the code: every hook documented with its signature,
every built-in declared as an entry point, every conf key documented, sans-IO modules
free of I/O imports."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from warpgate.node.node_defs import NODE_CONF
from warpgate.plugin import docs as hookdocs
from warpgate.plugin.manager import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


def test_hook_reference_is_generated_from_the_current_specs() -> None:
    committed = (ROOT / "docs" / "hooks.md").read_text()
    assert committed == hookdocs.render(), (
        "docs/hooks.md is stale: run python -m warpgate.plugin.docs > docs/hooks.md"
    )


@pytest.mark.parametrize("hook", hookdocs.hook_names())
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert f"### `{hook}`" in text
    assert hookdocs.signature_of(hook) in text


def test_every_builtin_plugin_module_is_an_entry_point() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(pyproject["project"]["entry-points"]["warpgate"].values())
    modules = {
        f"warpgate_plugins.{p.stem}"
        for p in (ROOT / "warpgate_plugins").glob("*.py")
        if not p.stem.startswith("_")
    }
    modules |= {
        f"warpgate_plugins.{p.parent.name}"
        for p in (ROOT / "warpgate_plugins").glob("*/__init__.py")
    }
    assert modules == declared


def test_every_conf_key_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    keys = set(NODE_CONF) | set(make_plugin_manager().conf_defaults())
    keys |= {f"plugins.{k}" for k in NODE_CONF["plugins"]}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"undocumented conf keys in docs/configuration.md: {missing}"


def test_sansio_modules_do_no_io() -> None:
    forbidden = {"asyncio", "socket", "selectors", "ssl", "threading", "subprocess"}
    for path in (ROOT / "warpgate" / "sansio").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            bad = forbidden.intersection(names)
            assert not bad, f"{path.name} imports {bad}: sans-IO code must not do I/O"
