"""The server configs in contrib/ work as documented: each is started as shipped, with
only its listening address moved to loopback (tests never bind public addresses), and
used by warpgate the way a deployment would."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.conftest import free_port, mqtt_node, send_and_receive, wait_listening
from warpgate.turn import TurnClient
from warpgate.turn.coturn import answers_stun, find_turnserver, free_udp_tcp_port

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


def run(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def contrib_mosquitto(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.skip("mosquitto is not installed")
    port = free_port()
    text = (CONTRIB / "mosquitto" / "mosquitto.conf").read_text()
    text, n = re.subn(r"(?m)^listener 1883 0\.0\.0\.0$", f"listener {port} 127.0.0.1", text)
    assert n == 1, "the shipped config listens on 1883"
    if os.geteuid() == 0:
        text += "user root\n"  # it would drop to 'mosquitto', who cannot read tmp_path
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    proc = run([binary, "-c", str(conf)], tmp_path / "mosquitto.log")
    try:
        if not wait_listening(port):
            pytest.fail((tmp_path / "mosquitto.log").read_text(errors="replace"))
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        stop(proc)


async def test_the_shipped_mosquitto_config_carries_signals(contrib_mosquitto: str) -> None:
    async with (
        mqtt_node("alice", [contrib_mosquitto]) as a,
        mqtt_node("bob", [contrib_mosquitto]) as b,
    ):
        await a.start()
        await b.start()
        await send_and_receive(a, b, b"through the contrib broker")


async def test_the_shipped_coturn_config_relays(tmp_path: Path) -> None:
    try:
        binary = find_turnserver()
    except Exception as exc:  # CoturnUnavailable
        pytest.skip(str(exc))
    text = (CONTRIB / "coturn" / "turnserver.conf").read_text()
    user = re.search(r"(?m)^user=([^:]+):(.+)$", text)
    assert user is not None, "the shipped config has a long-term credential"
    port = free_udp_tcp_port()
    replacements = {
        r"(?m)^listening-port=3478$": f"listening-port={port}",
        r"(?m)^listening-ip=0\.0\.0\.0$": "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1",
        r"(?m)^log-file=stdout$": f"log-file={tmp_path / 'turn.log'}",
        # The shipped config refuses loopback peers, as a public relay must; the test's
        # peer is on loopback.
        r"(?m)^denied-peer-ip=127\.0\.0\.0-127\.255\.255\.255$": "allow-loopback-peers",
    }
    for pattern, value in replacements.items():
        text, n = re.subn(pattern, value, text)
        assert n == 1, pattern
    text += f"userdb={tmp_path / 'turndb'}\npidfile={tmp_path / 'turn.pid'}\n"
    conf = tmp_path / "turnserver.conf"
    conf.write_text(text)
    proc = run([binary, "-c", str(conf)], tmp_path / "turnserver.out")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    got: asyncio.Queue[bytes] = asyncio.Queue()

    def new_client() -> TurnClient:
        return TurnClient(
            ("127.0.0.1", port),
            user.group(1),
            user.group(2),
            on_data=lambda _peer, data: got.put_nowait(data),
        )

    client = new_client()
    try:
        deadline = time.monotonic() + 10
        while not answers_stun(port):  # coturn needs a moment (bounded)
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("coturn did not start:\n" + (tmp_path / "turn.log").read_text())
            await asyncio.sleep(0.05)
        alloc = await client.allocate()
        await client.create_permission([peer.getsockname()])
        peer.sendto(b"relayed by the contrib coturn", alloc.relayed)
        assert await asyncio.wait_for(got.get(), 5) == b"relayed by the contrib coturn"
    finally:
        await client.aclose()
        peer.close()
        stop(proc)
