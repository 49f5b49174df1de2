"""Signalling across real NATs through three real mosquittos, one of which is killed:
the two brokers left keep carrying signal messages and reverse connects (issue 5)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import threading
from typing import Any

import pytest

from tests.mqtt.conftest import mqtt_plugins
from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.lab import two_nat
from warpgate.lab.system import find_binary
from warpgate.lab.topology import SERVER_ADDRESS

pytestmark = pytest.mark.lab

EXTRA_PORTS = (1884, 1885)


def start_extra_brokers(lab: Any) -> list[subprocess.Popen[bytes]]:
    """Two more mosquittos beside the lab's own, in ``inet`` (stopped by lab.down())."""
    procs = []
    for port in EXTRA_PORTS:
        conf = lab.workdir / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} {SERVER_ADDRESS}\nallow_anonymous true\n"
            "set_tcp_nodelay true\npersistence false\n"
        )
        procs.append(lab.spawn("inet", [find_binary("mosquitto"), "-c", str(conf)]))
    return procs


def conf(name: str) -> dict[str, Any]:
    urls = [f"mqtt://{SERVER_ADDRESS}:{port}" for port in (1883, *EXTRA_PORTS)]
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 2,  # each node listens on two of the three brokers
            "plugins": {"signal": ["mqtt"]},
            "mqtt_brokers": urls,
            "mqtt_reconnect_initial": 0.1,
            "mqtt_reconnect_max": 0.5,
            "mqtt_connect_timeout": 2.0,
        },
        NODE_TEST_CONF,
    )


async def test_one_of_three_brokers_killed_signalling_goes_on(lab_factory: Any) -> None:
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False))
    extra = start_extra_brokers(lab)
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    brokers_of_b: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
    stop = threading.Event()

    async def behind_nat() -> tuple[int, list[bool]]:
        """Node a, behind the NAT: reachable only by reverse connect over signalling."""
        async with Node(port=0, conf=conf("behind-nat"), plugins=mqtt_plugins()) as node:
            await node.start()
            transport = node.signal_transports["mqtt"]
            brokers_of_b.set_result([u.canonical for u in transport.brokers])
            address.set_result(node.address())
            served = 0
            while not stop.is_set():
                try:
                    link = await node.accept(timeout=0.2)
                except TimeoutError:
                    continue
                await link.send(await link.recv(timeout=10))
                served += 1
            states = transport.statistics()["brokers"]
            return served, [state["connected"] for state in states.values()]

    async def public() -> list[str]:
        async with Node(port=0, conf=conf("public"), plugins=mqtt_plugins()) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            methods = []
            for round_ in range(4):
                if round_ == 1:  # kill a broker node a listens on, for real
                    used = await asyncio.wrap_future(brokers_of_b)
                    port = next(p for p in EXTRA_PORTS if any(u.endswith(f":{p}") for u in used))
                    victim = extra[EXTRA_PORTS.index(port)]
                    victim.kill()
                    await asyncio.to_thread(victim.wait, 5)
                link, method = await auto_connect(node, peer, methods=["reverse"], timeout=15)
                await link.send(b"round %d" % round_)
                assert await link.recv(timeout=10) == b"round %d" % round_
                await link.close()
                methods.append(method)
            return methods

    server = asyncio.ensure_future(lab.arun("a", behind_nat, timeout=120))
    try:
        methods = await lab.arun("b", public, timeout=120)
    finally:
        stop.set()
        served, connected = await server
    assert methods == ["reverse"] * 4
    assert served == 4
    assert sorted(connected) == [False, True]  # one of node a's two brokers was killed
