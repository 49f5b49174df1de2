"""The ``{{ cookiecutter.provider_name }}`` traversal method: warpgate's conformance check, then a
link across a real NAT in warpgate's lab (root on Linux; skipped elsewhere)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from warpgate import Node, auto_connect
from warpgate.testing.conformance import check_traversal_method

NAME = "{{ cookiecutter.provider_name }}"
TIMEOUT = 20.0


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


async def test_conformance() -> None:
    checked = await check_traversal_method(NAME)
    assert any("round trip" in line for line in checked)


async def test_across_a_nat(
    lab_factory: Any, node_conf: Any, across_lab: Any, tmp_path: Path
) -> None:
    lab = lab_factory("two-nat", servers=False)

    async def serve(address: concurrent.futures.Future[bytes]) -> None:
        async with Node(port=0, conf=node_conf(tmp_path / "srv", "srv")) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)
            await link.send(b"echo:" + await link.recv(timeout=TIMEOUT))
            await asyncio.sleep(0.2)  # let the echo leave before closing

    async def dial(address: concurrent.futures.Future[bytes]) -> tuple[str, bytes]:
        async with Node(port=0, conf=node_conf(tmp_path / "cli", "cli")) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, method = await auto_connect(node, peer, methods=[NAME], timeout=TIMEOUT)
            await link.send(b"through the NAT")
            return method, await link.recv(timeout=TIMEOUT)

    # Host "a" sits behind a NAT; "pub" has a public address.
    method, echo = await across_lab(lab, ("pub", serve), ("a", dial))
    assert (method, echo) == (NAME, b"echo:through the NAT")
