"""Shared fixtures: every test gets its own warpgate home (keystore), a clean plugin
environment, and a network guard.

The guard makes name resolution refuse anything but IP literals and ``localhost``, and
refuses addresses outside loopback and the ranges the NAT lab uses inside its own
namespaces.  Production defaults name public servers (NTP pool, MQTT brokers); a test
that forgets to override one fails at once instead of reaching the internet.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from warpgate.plugin.manager import ENV_ALLOW, ENV_DISABLE, ENV_STACK, refresh_entry_points


@pytest.fixture(autouse=True)
def warpgate_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "warpgate-home"
    monkeypatch.setenv("WARPGATE_HOME", str(home))
    for name in (ENV_ALLOW, ENV_DISABLE, *ENV_STACK.values()):
        monkeypatch.delenv(name, raising=False)
    return home


# Loopback, the lab's fake internet, and the private ranges that exist only inside the
# lab's namespaces (this machine's own LAN is never a test target).
ALLOWED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "0.0.0.0/32",
        "::/128",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "100.64.0.0/10",
        "10.0.0.0/8",
        "192.168.0.0/16",
        "172.16.0.0/12",
        "fc00::/7",
    )
]
_real_getaddrinfo = socket.getaddrinfo


def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host in (None, "", "localhost", b"localhost"):
        return _real_getaddrinfo(host, *args, **kwargs)
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise socket.gaierror(
            socket.EAI_NONAME, f"test network guard: refusing to resolve {text!r}"
        ) from None
    if not any(ip.version == net.version and ip in net for net in ALLOWED_NETWORKS):
        raise socket.gaierror(
            socket.EAI_NONAME, f"test network guard: {text} is outside loopback and the lab"
        )
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture
def fresh_entry_points() -> Iterator[None]:
    """Rescan entry points before and after a test that installs a distribution."""
    refresh_entry_points()
    yield
    refresh_entry_points()


_QUIETED_LOGGERS = ("warpgate", "warpgate_plugins", "amqtt", "asyncio", "paho")


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """CLI commands run in-process quiet the library's loggers, as a command should;
    put the levels back so a later test's ``caplog`` still sees warnings."""
    import logging

    saved = {name: logging.getLogger(name).level for name in _QUIETED_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("warpgate.", "warpgate_plugins.")):
            logger = logging.getLogger(name)
            if logger.level > logging.DEBUG and logger.level != logging.NOTSET:
                logger.setLevel(logging.NOTSET)
