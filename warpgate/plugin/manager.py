"""Loads plugins, validates them, and builds the provider stack for each role.

Two switches are kept apart on purpose:

* *which plugins are loaded* -- every ``warpgate`` entry point, minus the ones disabled
  by conf (``plugins.disable``) or environment (``WARPGATE_DISABLE_PLUGINS``), with
  ``WARPGATE_PLUGINS`` as an allowlist for third-party entry points;
* *which provider fills each role* -- ``plugins.traversal``, ``plugins.name_service``
  and ``plugins.signal`` in conf (ordered names), overridable by environment.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import logging
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import importlib_metadata
import pluggy

from warpgate.errors import PluginError, PluginValidationError, WarpgateError
from warpgate.plugin import ENTRY_POINT_GROUP, PROJECT_NAME, spec
from warpgate.plugin.types import INFO_TYPES, ROLES, ProviderInfo, Role

log = logging.getLogger(__name__)

OWN_DISTRIBUTION = "warpgate"
Status = Literal["active", "blocked", "failed"]

_REGISTRATION_HOOKS: dict[Role, str] = {
    "traversal": "warpgate_register_traversal_methods",
    "name_service": "warpgate_register_name_services",
    "signal": "warpgate_register_signal_transports",
}

ENV_ALLOW = "WARPGATE_PLUGINS"
ENV_DISABLE = "WARPGATE_DISABLE_PLUGINS"
ENV_STACK: dict[Role, str] = {
    "traversal": "WARPGATE_TRAVERSAL",
    "name_service": "WARPGATE_NAME_SERVICES",
    "signal": "WARPGATE_SIGNAL_TRANSPORTS",
}


@dataclass(frozen=True)
class PluginRecord:
    """One plugin as the manager sees it, for listings and error messages."""

    name: str
    distribution: str
    version: str
    status: Status
    origin: Literal["entry-point", "in-process"]
    error: str = ""
    plugin: object | None = None

    @property
    def builtin(self) -> bool:
        return self.origin == "entry-point" and self.distribution == OWN_DISTRIBUTION

    def describe(self) -> str:
        return f"{self.name!r} (from {self.distribution} {self.version})".replace(" )", ")")


@dataclass(frozen=True)
class _EntryPoint:
    name: str
    value: str
    distribution: str
    version: str
    ep: importlib_metadata.EntryPoint


@functools.cache
def installed_entry_points() -> tuple[_EntryPoint, ...]:
    """The ``warpgate`` entry points of every installed distribution (cached).

    Scanning distributions costs milliseconds, so it is done once per process; call
    :func:`refresh_entry_points` after installing a plugin at run time.
    """
    found: dict[str, _EntryPoint] = {}
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        dist_name = dist.name if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        if ep.name in found and found[ep.name].distribution != dist_name:
            log.warning(
                "two distributions declare the warpgate plugin %r: %s and %s; using %s",
                ep.name,
                found[ep.name].distribution,
                dist_name,
                found[ep.name].distribution,
            )
            continue
        found.setdefault(ep.name, _EntryPoint(ep.name, ep.value, dist_name, version, ep))
    return tuple(sorted(found.values(), key=lambda e: e.name))


def refresh_entry_points() -> None:
    """Forget the cached entry-point scan and shared managers (after a plugin was
    installed at run time)."""
    installed_entry_points.cache_clear()
    _shared_managers.clear()


def env_list(name: str) -> list[str] | None:
    """A comma-separated environment variable as a list; ``None`` when unset."""
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


class WarpgatePluginManager(pluggy.PluginManager):
    """A pluggy manager that knows warpgate's loading policy and async hooks."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(spec)
        self.records: dict[str, PluginRecord] = {}
        self._providers: dict[Role, dict[str, ProviderInfo]] | None = None
        self.frozen = False  # set on managers shared between nodes
        self._conf_defaults: dict[str, Any] | None = None

    # -- registration --------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` and check every hook implementation it has.

        :raises PluginValidationError: unknown ``warpgate_*`` hook, or an implementation
            whose sync/async colour differs from its spec; nothing stays registered.
        """
        if self.frozen:
            raise PluginError(
                "this plugin manager is shared by every node with the same plugin "
                "settings and cannot change; pass Node(plugins=[...]) instead"
            )
        registered = super().register(plugin, name)
        if registered is None:
            return None
        try:
            self._validate(plugin, registered)
        except PluginValidationError:
            self.unregister(plugin)
            raise
        self._providers = None
        self._conf_defaults = None
        return registered

    def _validate(self, plugin: object, plugin_name: str) -> None:
        known = [n for n in dir(spec) if n.startswith("warpgate_")]
        for caller in self.get_hookcallers(plugin) or []:
            if caller.spec is None:
                hint = difflib.get_close_matches(caller.name, known, n=1)
                raise PluginValidationError(
                    f"plugin {plugin_name!r} implements unknown hook {caller.name!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else ""),
                    plugin=plugin_name,
                )
            spec_is_async = inspect.iscoroutinefunction(caller.spec.function)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                impl_is_async = inspect.iscoroutinefunction(impl.function)
                if impl_is_async != spec_is_async:
                    want = "an 'async def'" if spec_is_async else "a plain 'def'"
                    raise PluginValidationError(
                        f"plugin {plugin_name!r}: {caller.name} must be {want} function, "
                        "like its spec",
                        plugin=plugin_name,
                    )
                if spec_is_async and (impl.hookwrapper or impl.wrapper):
                    raise PluginValidationError(
                        f"plugin {plugin_name!r}: {caller.name} is async; async hooks "
                        "cannot have wrappers",
                        plugin=plugin_name,
                    )

    def load_plugins(
        self,
        *,
        disable: Iterable[str] = (),
        inline: Sequence[object] = (),
    ) -> None:
        """Load the installed entry points, then the in-process ``inline`` plugins.

        ``disable`` names entry points or distributions to block, on top of
        ``WARPGATE_DISABLE_PLUGINS``; ``WARPGATE_PLUGINS`` (when set) allows only the
        listed third-party entry points.  A plugin that fails to import or validate is
        recorded as ``failed`` with a warning -- it only becomes an error when a stack
        asks for something it would have provided.
        """
        blocked = set(disable) | set(env_list(ENV_DISABLE) or ())
        allow = env_list(ENV_ALLOW)
        for entry in installed_entry_points():
            third_party = entry.distribution != OWN_DISTRIBUTION
            if (
                entry.name in blocked
                or entry.distribution in blocked
                or (third_party and allow is not None and entry.name not in allow)
            ):
                self.set_blocked(entry.name)
                self._record(entry.name, entry.distribution, entry.version, "blocked")
                continue
            try:
                plugin = entry.ep.load()
                self.register(plugin, name=entry.name)
            except Exception as exc:  # a broken plugin must not take the node down
                log.warning(
                    "warpgate plugin %r from %s %s failed to load and is skipped: %s: %s",
                    entry.name,
                    entry.distribution,
                    entry.version,
                    type(exc).__name__,
                    exc,
                )
                self._record(
                    entry.name,
                    entry.distribution,
                    entry.version,
                    "failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
                continue
            self._record(entry.name, entry.distribution, entry.version, "active", plugin=plugin)
        for obj in inline:
            name = self.register(obj)
            if name is not None:
                self.records[name] = PluginRecord(
                    name, "(in-process)", "", "active", "in-process", plugin=obj
                )

    def _record(
        self,
        name: str,
        dist: str,
        version: str,
        status: Status,
        *,
        error: str = "",
        plugin: object | None = None,
    ) -> None:
        self.records[name] = PluginRecord(name, dist, version, status, "entry-point", error, plugin)

    def record_of(self, plugin_name: str) -> PluginRecord:
        return self.records.get(
            plugin_name,
            PluginRecord(plugin_name, "(in-process)", "", "active", "in-process"),
        )

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(c.name for c in self.get_hookcallers(plugin) or [])

    # -- providers ----------------------------------------------------------------

    def providers(self, role: Role) -> dict[str, ProviderInfo]:
        """Every provider registered for ``role``, by name, in registration order."""
        if self._providers is None:
            self._providers = {r: self._collect(r) for r in ROLES}
        return self._providers[role]

    def _collect(self, role: Role) -> dict[str, ProviderInfo]:
        caller = getattr(self.hook, _REGISTRATION_HOOKS[role])
        info_type = INFO_TYPES[role]
        found: dict[str, ProviderInfo] = {}
        # Registration order (built-ins first) so default stacks are stable.
        for impl in caller.get_hookimpls():
            owner = self.record_of(impl.plugin_name)
            try:
                records = list(impl.function() or ())
            except Exception as exc:
                raise PluginError(
                    f"plugin {owner.describe()} failed in {caller.name}: "
                    f"{type(exc).__name__}: {exc}",
                    plugin=owner.name,
                    distribution=owner.distribution,
                ) from exc
            for info in records:
                if not isinstance(info, info_type):
                    raise PluginValidationError(
                        f"plugin {owner.describe()}: {caller.name} must return "
                        f"{info_type.__name__} records, got {type(info).__name__}",
                        plugin=owner.name,
                        distribution=owner.distribution,
                    )
                if info.name in found:
                    first = self.record_of(found[info.name].plugin)
                    raise PluginError(
                        f"two {role} providers are named {info.name!r}: one from plugin "
                        f"{first.describe()}, one from plugin {owner.describe()}; disable "
                        "one of them (plugins.disable or WARPGATE_DISABLE_PLUGINS)",
                        plugin=owner.name,
                        distribution=owner.distribution,
                    )
                found[info.name] = replace(info, plugin=owner.name)
        return found

    def select(self, role: Role, wanted: Sequence[str] | None) -> list[ProviderInfo]:
        """The providers for ``role`` in stack order.

        ``wanted`` is the ordered list from conf (or environment); ``None`` means every
        installed provider in its default order (``cost``, then registration).

        :raises PluginError: a wanted provider is not installed; the message lists the
            installed ones and any plugin that failed to load.
        """
        available = self.providers(role)
        if wanted is None:
            chosen = list(available.values())
            return sorted(chosen, key=lambda info: getattr(info, "cost", 100))
        missing = [name for name in wanted if name not in available]
        if missing:
            failed = [r for r in self.records.values() if r.status == "failed"]
            blocked = [r.name for r in self.records.values() if r.status == "blocked"]
            msg = (
                f"{role} provider{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))} not installed; installed: "
                f"{', '.join(available) or '(none)'}"
            )
            if blocked:
                msg += f"; blocked plugins: {', '.join(blocked)}"
            if failed:
                msg += "; plugins that failed to load: " + "; ".join(
                    f"{r.describe()}: {r.error}" for r in failed
                )
            raise PluginError(msg, plugin=missing[0])
        return [available[name] for name in wanted]

    # -- calling hooks --------------------------------------------------------------

    async def acall(
        self, hook_name: str, *, timeout: float | None, **kwargs: Any
    ) -> list[Any] | Any:
        """Await the async hook ``hook_name``'s implementations in pluggy's order.

        pluggy cannot await, and ``gather`` would break ordering and ``firstresult``,
        so the implementations run one at a time (``tryfirst`` first, ``trylast`` last),
        each bounded by ``timeout`` seconds.  For a ``firstresult`` hook the first
        non-``None`` result is returned (``None`` if there is none); otherwise the list
        of non-``None`` results.

        Errors name the plugin: warpgate's own errors pass through with a note added;
        anything else is wrapped in :class:`PluginError`.
        """
        caller = getattr(self.hook, hook_name)
        assert caller.spec is not None, hook_name
        firstresult = bool(caller.spec.opts.get("firstresult"))
        results: list[Any] = []
        for impl in reversed(caller.get_hookimpls()):
            owner = self.record_of(impl.plugin_name)
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                async with asyncio.timeout(timeout):
                    result = await impl.function(**args)
            except TimeoutError as exc:
                raise PluginError(
                    f"plugin {owner.describe()} did not finish {hook_name} within "
                    f"{timeout} s (conf key plugin_timeout)",
                    plugin=owner.name,
                    distribution=owner.distribution,
                ) from exc
            except WarpgateError as exc:
                exc.add_note(f"raised by plugin {owner.describe()} in {hook_name}")
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {owner.describe()} failed in {hook_name}: {type(exc).__name__}: {exc}",
                    plugin=owner.name,
                    distribution=owner.distribution,
                ) from exc
            if result is not None:
                if firstresult:
                    return result
                results.append(result)
        return None if firstresult else results

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of the observer hook ``hook_name``.

        An observer that raises is logged and skipped: watching must never break
        the node.
        """
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception:
                log.exception(
                    "observer %s of plugin %s raised; ignored",
                    hook_name,
                    self.record_of(impl.plugin_name).describe(),
                )

    def conf_defaults(self) -> Mapping[str, Any]:
        """Every conf key plugins declare, with its default (computed once per manager,
        read-only: ``dict_child`` it to change)."""
        if self._conf_defaults is None:
            merged: dict[str, Any] = {}
            for part in self.hook.warpgate_conf_defaults():
                if isinstance(part, Mapping):
                    merged.update(part)
            self._conf_defaults = merged
        return types.MappingProxyType(self._conf_defaults)


_shared_managers: dict[tuple[object, ...], WarpgatePluginManager] = {}


def make_plugin_manager(
    *, disable: Iterable[str] = (), inline: Sequence[object] = ()
) -> WarpgatePluginManager:
    """A manager with installed and in-process plugins loaded.

    Without in-process plugins, nodes with the same load settings share one frozen
    manager: loading and validating every plugin again for each node would cost more
    than the rest of a node's start-up.
    """
    if inline:
        pm = WarpgatePluginManager()
        pm.load_plugins(disable=disable, inline=inline)
        return pm
    key = (frozenset(disable), os.environ.get(ENV_ALLOW), os.environ.get(ENV_DISABLE))
    shared = _shared_managers.get(key)
    if shared is None:
        shared = WarpgatePluginManager()
        shared.load_plugins(disable=disable)
        shared.frozen = True
        _shared_managers[key] = shared
    return shared
