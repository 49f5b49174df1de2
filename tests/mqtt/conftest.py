"""Fixtures for the MQTT signalling tests: real mosquitto brokers on 127.0.0.1, the
embedded broker, and node confs pointing at them.  Nothing here leaves this machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import warpgate_plugins.mqtt
from tests.integration.conftest import conf
from warpgate import Node
from warpgate.plugin.manager import installed_entry_points

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, timeout: float = START_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


class Mosquitto:
    """One mosquitto process on 127.0.0.1, started and killed by PID."""

    def __init__(
        self, workdir: Path, *, anonymous: bool = True, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.anonymous = anonymous
        self.tls = tls  # (certificate, key) files: a TLS listener
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence false",
            "set_tcp_nodelay true",
            "log_dest stdout",
        ]
        # allow_anonymous false with no password file: every client is refused at CONNACK.
        if self.tls:
            lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
        if os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", which cannot read pytest's
            # private temp dirs (certificates); stay root, it only binds 127.0.0.1.
            lines.append("user root")
        config.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "mosquitto.log", "ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        if not wait_listening(self.port):
            self.stop()
            log = (self.workdir / "mosquitto.log").read_text(errors="replace")
            pytest.fail(f"mosquitto did not start on port {self.port}:\n{log}")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    started: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", **kwargs)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory()


def mqtt_plugins() -> list[object]:
    """The mqtt plugin, registered in-process unless its entry point is installed."""
    if any(ep.name == "mqtt" for ep in installed_entry_points()):
        return []
    return [warpgate_plugins.mqtt]


def mqtt_conf(name: str, brokers: list[str], **extra: Any) -> dict[str, Any]:
    """A test conf with only the mqtt signal transport, on the given brokers, with
    short timers so failures show quickly."""
    return conf(
        name,
        sig_pipe_no=extra.pop("sig_pipe_no", 1),
        mqtt_brokers=brokers,
        mqtt_reconnect_initial=0.1,
        mqtt_reconnect_max=0.5,
        mqtt_connect_timeout=2.0,
        plugins={"signal": ["mqtt"]},
        **extra,
    )


def mqtt_node(name: str, brokers: list[str], **extra: Any) -> Node:
    return Node(
        ip="127.0.0.1", port=0, conf=mqtt_conf(name, brokers, **extra), plugins=mqtt_plugins()
    )


@pytest.fixture
async def mqtt_pair(mosquitto: Mosquitto) -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes signalling through one local mosquitto."""
    async with mqtt_node("alice", [mosquitto.url]) as a, mqtt_node("bob", [mosquitto.url]) as b:
        await a.start()
        await b.start()
        yield a, b


def received(node: Node) -> asyncio.Queue[tuple[bytes, bytes]]:
    """Every signal message ``node``'s mqtt transport delivers, as (sender, payload)."""
    queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
    node.signal_transports["mqtt"].add_handler(lambda s, p: queue.put_nowait((s, p)))
    return queue


async def send_and_receive(a: Node, b: Node, payload: bytes, **kw: object) -> None:
    """A signal message from ``a`` arrives at ``b`` (within 5 s), from ``a``."""
    inbox = received(b)
    await a.signal_transports["mqtt"].send(b.public_key, payload, **kw)
    assert await asyncio.wait_for(inbox.get(), 5) == (a.public_key, payload)
