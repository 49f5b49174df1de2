"""Where warpgate keeps its data on each platform."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_HOME = "WARPGATE_HOME"


def default_install_path() -> Path:
    """The per-user data directory: ``$WARPGATE_HOME`` if set, else the platform's
    usual place (XDG data dir on Linux, Application Support on macOS, APPDATA on
    Windows)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / "warpgate"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "warpgate"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "warpgate"


def resolve_install_path(conf_value: str | os.PathLike[str] | None) -> Path:
    """``install_path`` from conf, or the default when it is ``None``."""
    return Path(conf_value).expanduser() if conf_value is not None else default_install_path()
