from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from warpgate import (
    NameServiceInfo,
    PluginError,
    PluginValidationError,
    TraversalMethodInfo,
    WarpgateError,
    hookimpl,
)
from warpgate.plugin.manager import WarpgatePluginManager, make_plugin_manager


class SyncPhase:
    @hookimpl
    def warpgate_listen_on_ifs(self, node):  # wrong colour: the spec is async
        return True


class AsyncObserver:
    @hookimpl
    async def warpgate_node_started(self, node):  # wrong colour: the spec is sync
        return None


class Typo:
    @hookimpl
    async def warpgate_listen_on_if(self, node):
        return True


def test_sync_impl_of_async_spec_is_rejected_and_not_registered() -> None:
    pm = WarpgatePluginManager()
    plugin = SyncPhase()
    with pytest.raises(PluginValidationError, match="must be an 'async def'"):
        pm.register(plugin, name="syncphase")
    assert not pm.is_registered(plugin)


def test_async_impl_of_sync_spec_is_rejected() -> None:
    with pytest.raises(PluginValidationError, match="must be a plain 'def'"):
        WarpgatePluginManager().register(AsyncObserver(), name="obs")


def test_unknown_hook_is_rejected_with_a_suggestion() -> None:
    with pytest.raises(PluginValidationError, match="did you mean 'warpgate_listen_on_ifs'"):
        WarpgatePluginManager().register(Typo(), name="typo")


def _phase_plugin(label: str, result: object, calls: list[str], **opts: bool) -> object:
    class P:
        @hookimpl(**opts)
        async def warpgate_listen_on_ifs(self, node):
            calls.append(label)
            return result

    return P()


async def test_acall_runs_in_pluggy_order_and_stops_at_first_result() -> None:
    calls: list[str] = []
    pm = WarpgatePluginManager()
    pm.register(_phase_plugin("builtin", "B", calls, trylast=True), name="builtin")
    pm.register(_phase_plugin("normal", None, calls), name="normal")
    pm.register(_phase_plugin("first", None, calls, tryfirst=True), name="first")
    result = await pm.acall("warpgate_listen_on_ifs", timeout=1, node=None)
    assert result == "B"
    assert calls == ["first", "normal", "builtin"]

    calls.clear()
    pm.register(_phase_plugin("override", "O", calls), name="override")
    assert await pm.acall("warpgate_listen_on_ifs", timeout=1, node=None) == "O"
    assert calls == ["first", "override"], "the built-in must not run once overridden"


async def test_acall_timeout_names_the_plugin() -> None:
    class Slow:
        @hookimpl
        async def warpgate_listen_on_ifs(self, node):
            await asyncio.sleep(10)

    pm = WarpgatePluginManager()
    pm.register(Slow(), name="slowpoke")
    with pytest.raises(PluginError, match="'slowpoke'.*within 0.05 s") as info:
        await pm.acall("warpgate_listen_on_ifs", timeout=0.05, node=None)
    assert info.value.plugin == "slowpoke"


async def test_acall_wraps_foreign_errors_and_annotates_our_own() -> None:
    class Broken:
        @hookimpl
        async def warpgate_listen_on_ifs(self, node):
            raise KeyError("boom")

    class Clear:
        @hookimpl
        async def warpgate_build_node_address(self, node):
            raise WarpgateError("a clear problem")

    pm = WarpgatePluginManager()
    pm.register(Broken(), name="broken")
    pm.register(Clear(), name="clear")
    with pytest.raises(PluginError, match="'broken'.*KeyError") as info:
        await pm.acall("warpgate_listen_on_ifs", timeout=1, node=None)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(WarpgateError, match="a clear problem") as info2:
        await pm.acall("warpgate_build_node_address", timeout=1, node=None)
    assert any("'clear'" in note for note in info2.value.__notes__)


def _method(name: str) -> TraversalMethodInfo:
    return TraversalMethodInfo(name=name, factory=lambda node: SimpleNamespace(name=name))


def test_duplicate_provider_names_are_an_error_naming_both() -> None:
    class A:
        @hookimpl
        def warpgate_register_traversal_methods(self):
            return [_method("same")]

    class B:
        @hookimpl
        def warpgate_register_traversal_methods(self):
            return [_method("same")]

    pm = WarpgatePluginManager()
    pm.register(A(), name="plugin-a")
    pm.register(B(), name="plugin-b")
    with pytest.raises(PluginError, match="'same'.*'plugin-a'.*'plugin-b'"):
        pm.providers("traversal")


def test_registration_must_return_the_right_record_type() -> None:
    class Wrong:
        @hookimpl
        def warpgate_register_traversal_methods(self):
            return [NameServiceInfo(name="x", factory=dict)]

    pm = WarpgatePluginManager()
    pm.register(Wrong(), name="wrong")
    with pytest.raises(PluginValidationError, match="TraversalMethodInfo"):
        pm.providers("traversal")


def test_select_orders_by_conf_and_lists_installed_on_error() -> None:
    class Methods:
        @hookimpl
        def warpgate_register_traversal_methods(self):
            return [
                TraversalMethodInfo(name="slow", factory=dict, cost=50),
                TraversalMethodInfo(name="fast", factory=dict, cost=10),
            ]

    pm = WarpgatePluginManager()
    pm.register(Methods(), name="methods")
    assert [i.name for i in pm.select("traversal", None)] == ["fast", "slow"]
    assert [i.name for i in pm.select("traversal", ["slow", "fast"])] == ["slow", "fast"]
    with pytest.raises(PluginError, match="'warp' not installed; installed: slow, fast"):
        pm.select("traversal", ["warp"])


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x" * 41, "1abc"])
def test_provider_names_are_validated(name: str) -> None:
    with pytest.raises(PluginValidationError):
        TraversalMethodInfo(name=name, factory=dict)


def test_observer_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    class Bad:
        @hookimpl
        def warpgate_node_started(self, node):
            raise RuntimeError("observer bug")

    class Good:
        @hookimpl
        def warpgate_node_started(self, node):
            seen.append("good")

    pm = WarpgatePluginManager()
    pm.register(Good(), name="good")
    pm.register(Bad(), name="bad")
    with caplog.at_level(logging.ERROR):
        pm.notify("warpgate_node_started", node=None)
    assert seen == ["good"]
    assert "observer bug" in caplog.text


def test_builtins_load_from_entry_points_and_can_be_disabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pm = make_plugin_manager()
    assert pm.records["listen"].status == "active" and pm.records["listen"].builtin
    pm = make_plugin_manager(disable=["upnp"])
    assert pm.records["upnp"].status == "blocked"
    assert pm.get_plugin("upnp") is None
    monkeypatch.setenv("WARPGATE_DISABLE_PLUGINS", "stun, clock")
    pm = make_plugin_manager()
    assert pm.records["stun"].status == "blocked" and pm.records["clock"].status == "blocked"
    # The allowlist is for third-party plugins: built-ins stay.
    monkeypatch.delenv("WARPGATE_DISABLE_PLUGINS")
    monkeypatch.setenv("WARPGATE_PLUGINS", "")
    assert make_plugin_manager().records["listen"].status == "active"
