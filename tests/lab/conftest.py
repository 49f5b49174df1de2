"""The lab's own tests use the fixtures warpgate ships to everyone (pytest11 entry point).

In a checkout that is not pip-installed the entry point is absent, so register the
plugin here; when it is installed, pytest has already loaded it under the same name.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("warpgate"):
        from warpgate.testing import pytest_plugin

        config.pluginmanager.register(pytest_plugin, "warpgate")
