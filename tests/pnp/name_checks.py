"""Checks every name service must pass with real nodes (PNP and hosts alike): connect by
nickname, and a name already taken when a node starts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from warpgate import Node, auto_connect
from warpgate.pnp.client import NameTakenError


async def assert_connects_by_name(caller: Node, callee: Node, name: str) -> None:
    """``caller`` reaches ``callee`` by ``name``, authenticated as the callee's key."""
    link, method = await auto_connect(caller, name, timeout=10)
    try:
        assert link.remote_key == callee.public_key
        assert method
    finally:
        await link.close()


@contextlib.asynccontextmanager
async def name_clash_at_start(
    owner_conf: dict[str, Any],
    clash_conf: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    tld: str,
) -> AsyncIterator[tuple[Node, Node]]:
    """The owner registers its nickname; a node with another key under the same identity
    name (``clash_conf``: another keystore) still starts, unregistered and with a
    warning, cannot take the name and can take another.  Yields (owner, clash), both
    running, for the caller's own checks."""
    caplog.set_level(logging.WARNING)
    async with Node(ip="127.0.0.1", port=0, conf=owner_conf) as owner:
        await owner.start()
        async with Node(ip="127.0.0.1", port=0, conf=clash_conf) as clash:
            await clash.start()
            assert clash.public_key != owner.public_key
            assert clash.phase_results["setup_nickname_service"] == ""
            assert "not registered" in caplog.text
            with pytest.raises(NameTakenError):
                await clash.nickname(owner.conf["identity_name"])
            assert await clash.nickname("carol") == f"carol.{tld}"
            yield owner, clash
