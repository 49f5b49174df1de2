"""The ``{{ cookiecutter.provider_name }}`` phase override: nodes start with it and link (the
conformance check), its task runs, and it works in a NAT'd lab host (root on Linux)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from warpgate import Node, auto_connect
from warpgate.testing.conformance import check_phase_hook

NAME = "{{ cookiecutter.provider_name }}"
TIMEOUT = 20.0
TASK = "warpgate {{ cookiecutter.provider_name }} link report"


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
    assert rows[NAME]["hooks"] == ["warpgate_conf_defaults", "warpgate_start_maintenance_tasks"]


async def test_conformance() -> None:
    await check_phase_hook("start_maintenance_tasks")


async def test_the_report_task_runs_and_stops_with_the_node(node_conf: Any, tmp_path: Path) -> None:
    async with Node(ip="127.0.0.1", port=0, conf=node_conf(tmp_path, "n")) as node:
        await node.start()
        assert TASK in {t.get_name() for t in asyncio.all_tasks()}
    assert TASK not in {t.get_name() for t in asyncio.all_tasks() if not t.done()}


async def test_in_a_lab_host_behind_a_nat(
    lab_factory: Any, node_conf: Any, across_lab: Any, tmp_path: Path
) -> None:
    lab = lab_factory("two-nat", servers=False)

    async def serve(address: concurrent.futures.Future[bytes]) -> None:
        async with Node(port=0, conf=node_conf(tmp_path / "srv", "srv")) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)
            await link.send(b"echo:" + await link.recv(timeout=TIMEOUT))
            await asyncio.sleep(0.2)

    async def dial(address: concurrent.futures.Future[bytes]) -> tuple[bool, bytes]:
        async with Node(port=0, conf=node_conf(tmp_path / "cli", "cli")) as node:
            await node.start()
            running = TASK in {t.get_name() for t in asyncio.all_tasks()}
            link, _ = await auto_connect(node, await asyncio.wrap_future(address), timeout=TIMEOUT)
            await link.send(b"hi")
            return running, await link.recv(timeout=TIMEOUT)

    assert await across_lab(lab, ("pub", serve), ("a", dial)) == (True, b"echo:hi")
