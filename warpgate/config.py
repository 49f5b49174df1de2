"""Configuration dictionaries: inheritance (``dict_child``) and validation."""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from warpgate.errors import ConfigError
from warpgate.plugin.types import ROLES


class ConfigWarning(UserWarning):
    """A conf dict has a key nobody reads (probably a typo)."""


def dict_child(overrides: Mapping[str, Any], parent: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict that inherits ``parent`` and applies ``overrides`` on top.

    Neither argument is modified.  Nested dicts merge key by key (so
    ``dict_child({"plugins": {"disable": ["upnp"]}}, NODE_CONF)`` keeps the other
    ``plugins`` keys); every other value in ``overrides`` replaces the parent's.

    >>> base = {"a": 1, "sub": {"x": 1, "y": 2}}
    >>> dict_child({"b": 2, "sub": {"y": 3}}, base)
    {'a': 1, 'sub': {'x': 1, 'y': 3}, 'b': 2}
    """
    child: dict[str, Any] = {}
    for key, value in parent.items():
        child[key] = dict_child({}, value) if isinstance(value, Mapping) else value
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(child.get(key), Mapping):
            child[key] = dict_child(value, child[key])
        elif isinstance(value, Mapping):
            child[key] = dict_child(value, {})
        else:
            child[key] = value
    return child


def warn_unknown_keys(conf: Mapping[str, Any], known: Iterable[str], *, stacklevel: int) -> None:
    """Warn (:class:`ConfigWarning`) about keys no core code or plugin reads,
    naming the nearest valid key."""
    known = list(known)
    for key in conf:
        if key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        warnings.warn(
            f"unknown conf key {key!r} is ignored"
            + (f"; did you mean {hint[0]!r}?" if hint else "; see docs/configuration.md"),
            ConfigWarning,
            stacklevel=stacklevel + 1,
        )


_BOOL_KEYS = (
    "reuse_addr",
    "enable_upnp",
    "init_clock_skew",
    "enable_punching",
    "enable_nickname",
    "enable_stun_clients",
    "listen_loopback",
)


def check_core_conf(conf: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a core key with a value of the wrong kind."""
    for key in _BOOL_KEYS:
        if key in conf and not isinstance(conf[key], bool):
            raise ConfigError(f"conf key {key!r} must be True or False, not {conf[key]!r}")
    sig = conf.get("sig_pipe_no", 0)
    if not isinstance(sig, int) or isinstance(sig, bool) or sig < 0:
        raise ConfigError(f"conf key 'sig_pipe_no' must be a whole number >= 0, not {sig!r}")
    timeout = conf.get("plugin_timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigError(
            f"conf key 'plugin_timeout' must be a positive number of seconds or None, "
            f"not {timeout!r}"
        )
    size = conf.get("max_message_size", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ConfigError(f"conf key 'max_message_size' must be a positive int, not {size!r}")
    path = conf.get("install_path")
    if path is not None and not isinstance(path, str | Path):
        raise ConfigError(f"conf key 'install_path' must be a path or None, not {path!r}")
    name = conf.get("identity_name", "node")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(
            f"conf key 'identity_name' must be a non-empty name of letters, digits, "
            f"'-', '_' or '.', not {name!r}"
        )
    plugins = conf.get("plugins", {})
    if not isinstance(plugins, Mapping):
        raise ConfigError(f"conf key 'plugins' must be a dict, not {plugins!r}")
    allowed = {"disable", *ROLES}
    for key, value in plugins.items():
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            raise ConfigError(
                f"unknown key {key!r} in conf['plugins']"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" (valid: {', '.join(sorted(allowed))})"
            )
        if key != "disable" and value is None:
            continue
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ConfigError(
                f"conf['plugins'][{key!r}] must be a list of plugin names, not {value!r}"
            )
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"conf['plugins'][{key!r}] must hold plugin names (strings)")


def check_port(port: object) -> int | None:
    """Validate a ``Node(port=...)`` argument: ``None`` (derive), 0 (any free port)
    or 1-65535."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(
            f"port must be a whole number from 1 to 65535, 0 for any free port, or None "
            f"to derive it from the machine id; got {port!r}"
        )
    return port
