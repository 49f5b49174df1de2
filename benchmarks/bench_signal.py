"""Signalling over MQTT: round trip and sustained rate between two nodes.

Starts a mosquitto on 127.0.0.1 (a free port; killed by PID at the end) -- or, with
``--broker embedded``, the in-process amqtt broker -- and measures, in the same run:

* baseline: a bare aiomqtt round trip -- client A publishes to B's topic, B publishes
  it back to A's topic, A receives it (two publishes through the broker);
* ``send()`` round trip: one signal message from node A to node B, returning when B's
  acknowledgement arrives (the same two publishes, plus sealing, opening, signature
  checks and the ACK's own envelope);
* ``request()`` round trip: a request and its response (both acknowledged);
* sustained rate: ``--count`` messages from A to B with ``--window`` in flight, until
  all are acknowledged.

Targets (issue 5): send() round trip <= 2x the baseline; >= 1,000 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

import warpgate_plugins.mqtt
from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.plugin.manager import installed_entry_points


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.02)
    proc.kill()
    proc.wait(5)
    raise SystemExit("mosquitto did not start")


async def baseline(port: int, runs: int) -> list[float]:
    async with (
        aiomqtt.Client("127.0.0.1", port) as a,
        aiomqtt.Client("127.0.0.1", port) as b,
    ):
        await a.subscribe("bench/a")
        await b.subscribe("bench/b")

        async def echo() -> None:
            async for message in b.messages:
                await b.publish("bench/a", message.payload)

        echo_task = asyncio.create_task(echo())
        times = []
        messages = aiter(a.messages)
        for _ in range(runs + 5):
            begin = time.perf_counter()
            await a.publish("bench/b", b"x" * 100)
            await anext(messages)
            times.append(time.perf_counter() - begin)
        echo_task.cancel()
        await asyncio.gather(echo_task, return_exceptions=True)
    return times[5:]


def node(name: str, url: str) -> Node:
    conf = dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "mqtt_brokers": [url],
            "plugins": {"signal": ["mqtt"]},
        },
        NODE_TEST_CONF,
    )
    installed = any(ep.name == "mqtt" for ep in installed_entry_points())
    return Node(
        ip="127.0.0.1", port=0, conf=conf, plugins=[] if installed else [warpgate_plugins.mqtt]
    )


async def signal_runs(url: str, runs: int, count: int, window: int) -> dict[str, Any]:
    async with node("bench-a", url) as a, node("bench-b", url) as b:
        await a.start()
        await b.start()
        ta, tb = a.signal_transports["mqtt"], b.signal_transports["mqtt"]
        received = 0
        tb.add_handler(lambda s, p: None)
        tb.add_request_handler(lambda s, p: p)
        payload = b"x" * 100
        for _ in range(5):  # warm-up
            await ta.send(b.public_key, payload)
        sends = []
        for _ in range(runs):
            begin = time.perf_counter()
            await ta.send(b.public_key, payload)
            sends.append(time.perf_counter() - begin)
        requests = []
        for _ in range(runs):
            begin = time.perf_counter()
            await ta.request(b.public_key, payload, timeout=5)
            requests.append(time.perf_counter() - begin)

        semaphore = asyncio.Semaphore(window)

        async def one() -> None:
            nonlocal received
            async with semaphore:
                await ta.send(b.public_key, payload)
                received += 1

        begin = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - begin
        stats = ta.statistics()
    return {
        "send": sends,
        "request": requests,
        "rate": count / elapsed,
        "retransmits": stats["retransmits"],
        "failures": stats["send_failures"],
    }


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def main(args: argparse.Namespace) -> None:
    proc = None
    embedded = None
    with tempfile.TemporaryDirectory() as work:
        try:
            if args.broker == "embedded":
                from warpgate.serve import EmbeddedMqttBroker

                embedded = await EmbeddedMqttBroker("127.0.0.1", 0).start()
                port = embedded.port
            else:
                proc, port = start_mosquitto(Path(work))
            base = await baseline(port, args.runs)
            ours = await signal_runs(f"mqtt://127.0.0.1:{port}", args.runs, args.count, args.window)
        finally:
            if embedded is not None:
                await embedded.stop()
            if proc is not None:
                proc.terminate()
                proc.wait(5)
    b, s, r = ms(base), ms(ours["send"]), ms(ours["request"])
    print(f"broker: {args.broker}, runs: {args.runs}")
    print(f"baseline aiomqtt publish->echo->receive: median {b:.3f} ms")
    print(f"warpgate send() until acknowledged:     median {s:.3f} ms  ratio {s / b:.2f}x", end="")
    print(" (target <= 2x)")
    print(f"warpgate request() until response:      median {r:.3f} ms  ratio {r / b:.2f}x")
    print(
        f"sustained: {args.count} messages, {args.window} in flight: {ours['rate']:.0f} msg/s "
        f"(target >= 1000), retransmits {ours['retransmits']}, failures {ours['failures']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    args = parser.parse_args()
    # aiomqtt warns about many in-flight publishes; the rate test has them on purpose.
    logging.getLogger("warpgate_plugins.mqtt.transport.paho").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as home:
        os.environ["WARPGATE_HOME"] = home
        asyncio.run(main(args))
