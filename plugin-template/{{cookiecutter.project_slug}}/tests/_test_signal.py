"""The ``{{ cookiecutter.provider_name }}`` signal transport: warpgate's conformance check, then
reverse connect through it across a real NAT in warpgate's lab (root on Linux)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from warpgate import Node, auto_connect
from warpgate.testing.conformance import check_signal_transport

NAME = "{{ cookiecutter.provider_name }}"
TIMEOUT = 20.0
KEY = "{{ cookiecutter.conf_prefix }}_spool"


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
    checked = await check_signal_transport(NAME, conf={KEY: str(tmp_path / "spool")})
    assert "reverse connect works over it" in checked


async def test_reverse_connect_across_a_nat(
    lab_factory: Any, node_conf: Any, across_lab: Any, tmp_path: Path
) -> None:
    lab = lab_factory("two-nat", servers=False)
    extra = {KEY: str(tmp_path / "spool"), "sig_pipe_no": 1, "plugins": {"signal": [NAME]}}

    async def behind_nat(address: concurrent.futures.Future[bytes]) -> None:
        async with Node(port=0, conf=node_conf(tmp_path / "a", "a", **extra)) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)  # it dialled out, asked to
            await link.send(b"echo:" + await link.recv(timeout=TIMEOUT))
            await asyncio.sleep(0.2)

    async def public(address: concurrent.futures.Future[bytes]) -> tuple[str, bytes]:
        async with Node(port=0, conf=node_conf(tmp_path / "pub", "pub", **extra)) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            # "a" cannot be dialled through its NAT: ask it, through the transport, to
            # dial back.
            link, method = await auto_connect(node, peer, methods=["reverse"], timeout=TIMEOUT)
            await link.send(b"dial me back")
            return method, await link.recv(timeout=TIMEOUT)

    method, echo = await across_lab(lab, ("a", behind_nat), ("pub", public))
    assert (method, echo) == ("reverse", b"echo:dial me back")
