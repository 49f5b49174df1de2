"""Fixtures: node conf for tests, and running a pair of nodes across a real NAT."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest
from warpgate import NODE_TEST_CONF, dict_child


def _node_conf(home: Path, name: str, **extra: Any) -> dict[str, Any]:
    """NODE_TEST_CONF (no public servers) with keys in ``home``."""
    return dict_child({"install_path": str(home), "identity_name": name, **extra}, NODE_TEST_CONF)


async def _across_lab(lab: Any, server: tuple[str, Any], client: tuple[str, Any]) -> Any:
    """Run ``server[1](address_future)`` in lab host ``server[0]`` and
    ``client[1](address_future)`` in ``client[0]``; the client's result."""
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    _, result = await asyncio.gather(
        lab.arun(server[0], server[1], address, timeout=60),
        lab.arun(client[0], client[1], address, timeout=60),
    )
    return result


@pytest.fixture
def node_conf() -> Any:
    """``node_conf(home, name, **extra)``: NODE_TEST_CONF with keys in ``home``."""
    return _node_conf


@pytest.fixture
def across_lab() -> Any:
    """``await across_lab(lab, (host, server_fn), (host, client_fn))``."""
    return _across_lab
