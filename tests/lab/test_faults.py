"""Faults in the NAT lab, against real servers and real processes: the MQTT broker
crashing mid-connect, a peer process killed mid-transfer, and lossy, jittery WAN links.

Each node runs in its host's namespace; the peer that gets killed runs in a process of
its own (``lab.spawn``), so killing it is a real crash: the kernel closes its sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import warpgate
from tests.mqtt.conftest import mqtt_plugins
from warpgate import NODE_TEST_CONF, ConnectError, LinkClosed, Node, auto_connect, dict_child
from warpgate.lab import Host, NatMode, Router, Topology, two_nat

pytestmark = pytest.mark.lab

BROKER = "mqtt://198.51.100.1:1883"
T = TypeVar("T")
# Keepalives shortened for the tests: ping after 1 s of silence, close after 3 s, so a
# dead peer must be noticed within link_timeout + link_keepalive / 2 (+ a margin).
SHORT_KEEPALIVES = {"link_keepalive": 1.0, "link_timeout": 3.0}
KEEPALIVE_BOUND = 3.0 + 0.5 + 1.5
WARPGATE_ROOT = str(Path(warpgate.__file__).resolve().parents[1])


def mqtt_conf(name: str, **extra: Any) -> dict[str, Any]:
    """Signalling through the lab's mosquitto, with short reconnect timers."""
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["mqtt"]},
            "mqtt_brokers": [BROKER],
            "mqtt_reconnect_initial": 0.1,
            "mqtt_reconnect_max": 0.5,
            "mqtt_connect_timeout": 2.0,
            **extra,
        },
        NODE_TEST_CONF,
    )


async def serve_echo(
    name: str, address_out: concurrent.futures.Future[bytes], stop: threading.Event
) -> str:
    """A node that echoes every message of every link until ``stop``."""
    async with Node(port=0, conf=mqtt_conf(name), plugins=mqtt_plugins()) as node:
        await node.start()
        address_out.set_result(node.address())

        async def echo(link: Any) -> None:
            async for msg in link:
                await link.send(msg)

        tasks = []
        while not stop.is_set():
            try:
                link = await node.accept(timeout=0.2)
            except TimeoutError:
                continue
            tasks.append(asyncio.create_task(echo(link)))
        for task in tasks:
            task.cancel()
        return "ok"


async def then_stop(stop: threading.Event, work: Awaitable[T]) -> T:
    """Await ``work``, then tell the echo server to stop (also when ``work`` fails)."""
    try:
        return await work
    finally:
        stop.set()


# --- the MQTT broker crashes mid-connect -----------------------------------------------


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "stays-down"])
async def test_broker_killed_mid_connect(lab_factory: Any, restart: bool) -> None:
    """The broker dies while a reverse connect needs it.  Restarted within the signal
    deadline, the connect succeeds; left down, it fails cleanly within its deadline."""
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False))
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop = threading.Event()
    deadline = 12.0

    async def connect(name: str) -> dict[str, Any]:
        async with Node(port=0, conf=mqtt_conf(name), plugins=mqtt_plugins()) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            await asyncio.sleep(1.0)  # both nodes subscribed on the broker
            await asyncio.to_thread(lab.stop_server, "mqtt")  # crash, mid-connect
            if restart:
                asyncio.get_running_loop().call_later(
                    1.5, lambda: threading.Thread(target=lab.start_server, args=("mqtt",)).start()
                )
            began = time.monotonic()
            try:
                link, method = await auto_connect(node, peer, methods=["reverse"], timeout=deadline)
            except ConnectError as exc:
                return {"ok": False, "error": str(exc), "took": time.monotonic() - began}
            await link.send(b"after the crash")
            echo = await link.recv(timeout=10)
            return {"ok": True, "method": method, "echo": echo, "took": time.monotonic() - began}

    _served, outcome = await asyncio.gather(
        lab.arun("a", serve_echo, "behind-nat", address, stop, timeout=90),
        then_stop(stop, lab.arun("b", connect, "public", timeout=90)),
    )
    print(f"broker killed, restart={restart}: {outcome}")  # shown with -s
    if restart:
        assert outcome["ok"], outcome
        assert outcome["method"] == "reverse" and outcome["echo"] == b"after the crash"
    else:
        assert not outcome["ok"]
        assert "reverse" in outcome["error"]
        assert outcome["took"] <= deadline + 2.0, outcome  # failed within its deadline


# --- STUN and NTP servers unreachable at start-up ---------------------------------------


async def start_with_stun_and_ntp(name: str, stun: str, ntp: str) -> dict[str, Any]:
    conf = dict_child(
        {
            "identity_name": name,
            "enable_stun_clients": True,
            "stun_servers": [stun],
            "stun_timeout": 2.0,
            "init_clock_skew": True,
            "ntp_servers": [ntp],
            "ntp_timeout": 1.0,
        },
        NODE_TEST_CONF,
    )
    began = time.monotonic()
    async with Node(port=0, conf=conf) as node:
        await node.start()
        took = time.monotonic() - began
        return {
            "took": took,
            "results": dict(node.phase_results),
            "clock": type(node.clock).__name__,
            "nat": {ip: r.nat_type.name for ip, r in node.nat_reports.items()},
            "address": node.address(),
        }


@pytest.mark.parametrize("how", ["stopped", "silent"])
async def test_stun_and_ntp_unreachable_at_start_up(lab_factory: Any, how: str) -> None:
    """With the STUN and NTP servers down (``stopped``: the host answers ICMP port
    unreachable) or gone (``silent``: an address where packets vanish), start() still
    completes within its budget (stun_timeout, ntp_timeout), on the system clock and with
    the NAT unknown; once the servers are back, a new start measures both again."""
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False))
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    ntp = f"{lab.servers['ntp']['host']}:{lab.servers['ntp']['port']}"
    if how == "stopped":
        lab.stop_server("stun")
        lab.stop_server("ntp")
        dead_stun, dead_ntp = stun, ntp
    else:  # the lab's internet routes unknown addresses to a namespace that drops all
        dead_stun, dead_ntp = "198.51.100.250:3478", "198.51.100.251:123"
    down = await lab.arun("b", start_with_stun_and_ntp, "down", dead_stun, dead_ntp, timeout=60)
    print(f"start-up with STUN and NTP {how}: {down['took']:.2f} s")  # shown with -s
    assert down["took"] < 2.0 + 1.0 * 4 + 2.0, down  # stun + ntp budgets, plus slack
    assert down["clock"] == "SystemClock", down
    assert set(down["nat"].values()) <= {"UNKNOWN"}, down

    if how == "stopped":
        lab.start_server("stun")
        lab.start_server("ntp")
    # The same host: a failed measurement must not be cached as the answer.
    up = await lab.arun("b", start_with_stun_and_ntp, "up", stun, ntp, timeout=60)
    assert up["clock"] == "NtpClock", up
    assert list(up["nat"].values()) == ["OPEN"], up  # b sits on the open router


# --- a peer killed mid-transfer ---------------------------------------------------------

VICTIM = """
import asyncio, sys
from warpgate import NODE_TEST_CONF, Node, dict_child

async def main(role):
    conf = dict_child({"identity_name": "victim"}, NODE_TEST_CONF)
    async with Node(port=0, conf=conf) as node:
        await node.start()
        print(node.address().hex(), flush=True)
        link = await node.accept(timeout=60)
        if role == "receiver":
            while True:
                await link.recv()
        chunk = bytes(min(60000, link.max_message))
        while True:
            await link.send(chunk)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize("victim_role", ["receiver", "sender"])
async def test_peer_killed_mid_transfer_gives_a_clear_closed_error(
    lab_factory: Any, victim_role: str
) -> None:
    """A peer process is SIGKILLed while data flows over a TCP link through a NAT: the
    other side's send or recv raises LinkClosed within a few seconds (no keepalive needed:
    the kernel closes the dead process's sockets)."""
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False), servers=False)
    proc = lab.spawn(
        "b",
        [*lab.python_argv(VICTIM), victim_role],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": WARPGATE_ROOT},
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        peer = bytes.fromhex(line.decode().strip())
        transferring = threading.Event()

        async def survivor(name: str) -> dict[str, Any]:
            conf = dict_child({"identity_name": name}, NODE_TEST_CONF)
            async with Node(port=0, conf=conf) as node:
                await node.start()
                link, _ = await auto_connect(node, peer, methods=["direct"], timeout=10)
                moved = 0
                try:
                    async with asyncio.timeout(60):
                        while True:
                            if victim_role == "receiver":
                                await link.send(bytes(60000))
                            else:
                                await link.recv()
                            moved += 60000
                            if moved > 2_000_000:
                                transferring.set()
                except LinkClosed as exc:
                    return {"closed_at": time.monotonic(), "error": str(exc), "moved": moved}
                return {"closed_at": None, "moved": moved}

        task = asyncio.ensure_future(lab.arun("a", survivor, "survivor", timeout=90))
        await asyncio.wait_for(asyncio.to_thread(transferring.wait, 30), 35)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)  # the process this test started
        outcome = await task
    finally:
        _reap(proc)
    print(f"peer killed ({victim_role}): closed after {outcome['closed_at'] - killed_at:.3f} s")
    assert outcome["closed_at"] is not None, outcome
    assert outcome["closed_at"] - killed_at < 5.0, outcome
    assert "closed" in outcome["error"]


async def test_udp_peer_killed_is_noticed_within_a_keepalive_bound(lab_factory: Any) -> None:
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False), servers=False)
    proc = lab.spawn(
        "b",
        [*lab.python_argv(VICTIM), "sender"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": WARPGATE_ROOT},
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        peer = bytes.fromhex(line.decode().strip())

        async def survivor(name: str) -> str:
            conf = dict_child({"identity_name": name, **SHORT_KEEPALIVES}, NODE_TEST_CONF)
            async with Node(port=0, conf=conf) as node:
                await node.start()
                link, _ = await auto_connect(
                    node, peer, methods=["direct"], transport="udp", timeout=10
                )
                await link.recv(timeout=10)  # data flows
                os.kill(proc.pid, signal.SIGKILL)  # the process this test started
                try:
                    while True:
                        await link.recv(timeout=KEEPALIVE_BOUND)
                except LinkClosed:
                    return "closed"
                except TimeoutError:
                    return "silent"

        outcome = await lab.arun("a", survivor, "survivor", timeout=60)
    finally:
        _reap(proc)
    assert outcome == "closed"


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Stop (if it still runs) and wait for a victim this test spawned; close its pipe."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def _short_udp_conntrack() -> None:
    # Runs inside the router's namespace: conntrack timeouts are per namespace.
    for name, value in (
        ("nf_conntrack_udp_timeout", "2"),
        ("nf_conntrack_udp_timeout_stream", "3"),
    ):
        with open(f"/proc/sys/net/netfilter/{name}", "w") as f:
            f.write(value)


async def test_idle_udp_link_keeps_its_nat_mapping(lab_factory: Any) -> None:
    """A UDP link through a port-restricted NAT sits idle longer than the NAT keeps a
    mapping (conntrack shortened to 3 s here; 30-120 s on real routers); then the public
    side speaks first.  Keepalives would hold the mapping open."""
    lab = lab_factory(two_nat("port-restricted", "open", upnp=False), servers=False)
    lab.call("nat_a", _short_udp_conntrack)
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop = threading.Event()

    async def dial(name: str) -> bytes:
        conf = dict_child({"identity_name": name, **SHORT_KEEPALIVES}, NODE_TEST_CONF)
        async with Node(port=0, conf=conf) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, _ = await auto_connect(node, peer, methods=["direct"], transport="udp")
            await link.send(b"hello")
            assert await link.recv(timeout=5) == b"hello"  # echoed: the mapping works
            return await link.recv(timeout=15)  # then silence, until the public side speaks

    async def serve(name: str) -> None:
        conf = dict_child({"identity_name": name, **SHORT_KEEPALIVES}, NODE_TEST_CONF)
        async with Node(port=0, conf=conf) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=30)
            await link.send(await link.recv(timeout=10))
            await asyncio.sleep(6)  # idle for twice the NAT's mapping lifetime
            await link.send(b"poke")
            await asyncio.to_thread(stop.wait, 20)

    outcome = await asyncio.gather(
        lab.arun("b", serve, "public", timeout=60),
        then_stop(stop, lab.arun("a", dial, "behind-nat", timeout=60)),
    )
    assert outcome[1] == b"poke"


# --- lossy, jittery WAN links ---------------------------------------------------------


def lossy_jittery() -> Topology:
    """a behind a port-restricted NAT, b on an open router; 5% loss each way and
    200 ms +/- 200 ms of delay each way on both WAN links."""
    return Topology(
        routers=(
            Router("nat_a", NatMode.PORT_RESTRICTED, loss=0.05, delay_ms=200, jitter_ms=200),
            Router("nat_b", NatMode.OPEN, loss=0.05, delay_ms=200, jitter_ms=200),
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b")),
    )


async def echo_once(link: Any, msg: bytes, *, udp: bool) -> bool:
    """Send ``msg`` until its echo comes back.  TCP retransmits by itself: one try, a
    long wait.  A UDP link is unreliable by contract (a round trip here crosses four
    lossy hops, about 1 in 5 is lost): the application resends, as it must."""
    for _ in range(6 if udp else 1):
        await link.send(msg)
        try:
            async with asyncio.timeout(2.0 if udp else 20.0):
                while await link.recv() != msg:  # a late echo of an earlier try
                    pass
            return True
        except TimeoutError:
            continue
    return False


@pytest.mark.parametrize(
    ("method", "transport", "dialler"),
    [("direct", "tcp", "a"), ("direct", "udp", "a"), ("reverse", "tcp", "b")],
)
async def test_connect_over_lossy_jittery_wan(
    lab_factory: Any, method: str, transport: str, dialler: str
) -> None:
    lab = lab_factory(lossy_jittery())
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    stop = threading.Event()
    server = "b" if dialler == "a" else "a"

    async def dial(name: str) -> dict[str, Any]:
        async with Node(port=0, conf=mqtt_conf(name), plugins=mqtt_plugins()) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            began = time.monotonic()
            link, won = await auto_connect(
                node,
                peer,
                methods=[method],
                transport=transport,  # type: ignore[arg-type]
                timeout=30,
            )
            took = time.monotonic() - began
            echoes = 0
            for i in range(5):
                echoes += await echo_once(link, b"msg %d" % i, udp=transport == "udp")
            return {"method": won, "took": took, "echoes": echoes, "path": str(link.path)}

    _served, outcome = await asyncio.gather(
        lab.arun(server, serve_echo, f"srv-{server}", address, stop, timeout=120),
        then_stop(stop, lab.arun(dialler, dial, f"cli-{dialler}", timeout=120)),
    )
    print(f"lossy WAN {method}/{transport}: {outcome}")  # shown with -s; never asserted
    assert outcome["method"] == method, outcome
    assert transport in outcome["path"]
    assert outcome["echoes"] == 5, outcome
