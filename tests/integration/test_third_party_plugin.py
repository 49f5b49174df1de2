"""Third-party plugins installed as real distributions (dist-info with entry points on
sys.path, exactly what pip leaves behind) are found, used, listed and blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from warpgate import NODE_TEST_CONF, PluginError, dict_child
from warpgate.node.node import Node
from warpgate.plugin.manager import refresh_entry_points

DEMO_PLUGIN = """
from warpgate import TraversalMethodInfo, hookimpl

class CarrierPigeon:
    def __init__(self, node):
        self.node = node
        self.started = False
        self.closed = False

    async def start(self):
        self.started = True

    async def aclose(self):
        self.closed = True

@hookimpl
def warpgate_register_traversal_methods():
    return [TraversalMethodInfo(name="carrier-pigeon", factory=CarrierPigeon, cost=5,
                                description="test method")]

@hookimpl
async def warpgate_start_maintenance_tasks(node):
    node.demo_maintenance = True
    return "pigeon-maintenance"
"""

Installer = Callable[..., Path]


@pytest.fixture
def install_dist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_entry_points: None
) -> Installer:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        eps = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[warpgate]\n{eps}\n")
        refresh_entry_points()
        return site

    return install


async def test_entry_point_plugin_overrides_a_phase_and_adds_a_method(
    install_dist: Installer,
) -> None:
    install_dist("warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"})
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        record = node.plugins.records["pigeon"]
        assert (record.distribution, record.version, record.status) == (
            "warpgate-plugin-pigeon",
            "1.0",
            "active",
        )
        await node.start()
        assert node.phase_results["start_maintenance_tasks"] == "pigeon-maintenance"
        assert node.demo_maintenance is True  # type: ignore[attr-defined]
        pigeon = node.traversal_methods["carrier-pigeon"]
        assert pigeon.started and pigeon.node is node
    assert pigeon.closed, "providers are closed with the node"


async def test_stack_selection_and_blocking(install_dist: Installer) -> None:
    install_dist("warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"})
    conf = dict_child({"plugins": {"traversal": ["nope"]}}, NODE_TEST_CONF)
    with pytest.raises(PluginError, match="'nope' not installed; installed: .*carrier-pigeon"):
        await Node(ip="127.0.0.1", port=0, conf=conf).start()
    blocked = dict_child({"plugins": {"disable": ["warpgate-plugin-pigeon"]}}, NODE_TEST_CONF)
    async with Node(ip="127.0.0.1", port=0, conf=blocked) as node:
        await node.start()
        assert node.plugins.records["pigeon"].status == "blocked"
        assert "carrier-pigeon" not in node.traversal_methods
        assert node.phase_results["start_maintenance_tasks"] == "ok"


async def test_allowlist_env_limits_third_party_plugins(
    install_dist: Installer, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist("warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"})
    monkeypatch.setenv("WARPGATE_PLUGINS", "something-else")
    assert Node(conf=NODE_TEST_CONF).plugins.records["pigeon"].status == "blocked"
    monkeypatch.setenv("WARPGATE_PLUGINS", "pigeon")
    assert Node(conf=NODE_TEST_CONF).plugins.records["pigeon"].status == "active"


async def test_env_selects_the_traversal_stack(
    install_dist: Installer, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_dist("warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"})
    monkeypatch.setenv("WARPGATE_TRAVERSAL", "")
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        assert node.traversal_methods == {}


async def test_broken_plugin_nobody_asked_for_is_a_warning(
    install_dist: Installer, caplog: pytest.LogCaptureFixture
) -> None:
    install_dist(
        "warpgate-plugin-broken",
        {"wg_broken": "raise ImportError('missing dependency: libfoo')"},
        {"broken": "wg_broken"},
    )
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        assert node.plugins.records["broken"].status == "failed"
    assert "'broken' from warpgate-plugin-broken 1.0 failed to load" in caplog.text
    conf = dict_child({"plugins": {"traversal": ["broken"]}}, NODE_TEST_CONF)
    with pytest.raises(PluginError, match="failed to load.*libfoo"):
        await Node(ip="127.0.0.1", port=0, conf=conf).start()


async def test_two_distributions_with_one_provider_name(install_dist: Installer) -> None:
    install_dist("warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"})
    install_dist(
        "warpgate-plugin-pigeon-two", {"wg_pigeon2": DEMO_PLUGIN}, {"pigeon2": "wg_pigeon2"}
    )
    with pytest.raises(
        PluginError, match="warpgate-plugin-pigeon 1.0.*warpgate-plugin-pigeon-two 1.0"
    ):
        await Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF).start()


def test_cli_lists_the_installed_plugin(install_dist: Installer) -> None:
    site = install_dist(
        "warpgate-plugin-pigeon", {"wg_pigeon": DEMO_PLUGIN}, {"pigeon": "wg_pigeon"}
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-m", "warpgate", "plugins", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["pigeon"]["distribution"] == "warpgate-plugin-pigeon"
    assert rows["pigeon"]["roles"] == {"traversal": ["carrier-pigeon"]}
    assert "warpgate_start_maintenance_tasks" in rows["pigeon"]["hooks"]
    assert rows["listen"]["builtin"] and rows["listen"]["status"] == "active"
    check = subprocess.run(
        [sys.executable, "-m", "warpgate", "plugins", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
