"""The ``{{ cookiecutter.provider_name }}`` name backend: warpgate's conformance check, then a
connection by name across a real NAT in warpgate's lab (root on Linux; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from warpgate import Node, auto_connect
from warpgate.testing.conformance import check_name_service

NAME = "{{ cookiecutter.provider_name }}"
TIMEOUT = 20.0
KEY = "{{ cookiecutter.conf_prefix }}_directory"


def test_installed_and_listed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "warpgate", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows[NAME]["status"] == "active"


async def test_conformance(tmp_path: Path) -> None:
    checked = await check_name_service(NAME, conf={KEY: str(tmp_path / "names")})
    assert "a peer connects by the name" in checked


async def test_by_name_across_a_nat(
    lab_factory: Any, node_conf: Any, across_lab: Any, tmp_path: Path
) -> None:
    lab = lab_factory("two-nat", servers=False)
    extra = {KEY: str(tmp_path / "names"), "plugins": {"name_service": [NAME]}}

    async def serve(registered: concurrent.futures.Future[bytes]) -> None:
        async with Node(port=0, conf=node_conf(tmp_path / "srv", "srv", **extra)) as node:
            await node.start()
            full = await node.nickname("lab-server")
            registered.set_result(full.encode())
            link = await node.accept(timeout=TIMEOUT)
            await link.send(b"echo:" + await link.recv(timeout=TIMEOUT))
            await asyncio.sleep(0.2)

    async def dial(registered: concurrent.futures.Future[bytes]) -> bytes:
        async with Node(port=0, conf=node_conf(tmp_path / "cli", "cli", **extra)) as node:
            await node.start()
            name = (await asyncio.wrap_future(registered)).decode()
            link, _ = await auto_connect(node, name, timeout=TIMEOUT)
            await link.send(b"by name")
            return await link.recv(timeout=TIMEOUT)

    assert await across_lab(lab, ("pub", serve), ("a", dial)) == b"echo:by name"
