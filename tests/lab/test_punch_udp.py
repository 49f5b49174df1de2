"""UDP hole punching across the lab's NATs: both peers behind NATs, no port mapping; the
link must come from ``udp_punch`` and carry messages both ways."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from tests.lab.punch_helpers import matrix_try, node_conf, run_pair
from warpgate import Node, auto_connect
from warpgate.lab import Host, NatMode, Router, Topology
from warpgate.sansio.punch_messages import ANSWER

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    "modes",
    [
        ("port-restricted", "port-restricted"),
        ("full-cone", "symmetric"),
        ("symmetric", "port-restricted"),
    ],
    ids=lambda m: "--".join(m),
)
async def test_udp_punch_connects_natted_peers(lab_factory: Any, modes: tuple[str, str]) -> None:
    lab = lab_factory(modes, servers=True)
    tries = [{"transport": "udp", "methods": ["udp_punch"], "timeout": 15}] * 1
    served, dialled = await run_pair(lab, tries)
    for result in dialled:
        assert result["ok"], result
        assert result["method"] == "udp_punch"
        assert lab.wan_address("nat_b") in result["path"]
    assert [s["method"] for s in served] == ["inbound"] * len(tries)


# --- signalled through the lab's mosquitto ----------------------------------------------

BROKER = "mqtt://198.51.100.1:1883"


def _mqtt(stun: str, name: str) -> dict[str, Any]:
    return node_conf(
        name,
        stun,
        plugins={"signal": ["mqtt"]},
        mqtt_brokers=[BROKER],
        mqtt_reconnect_initial=0.1,
        mqtt_reconnect_max=0.5,
        mqtt_connect_timeout=2.0,
    )


def _record_sends(node: Node, sent: list[tuple[int, list[str]]]) -> None:
    """Record (message type, hints) of every signal message ``node`` sends."""
    transport = node.signal_transports["mqtt"]
    original = transport.send

    async def send(peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        sent.append((payload[1] if len(payload) > 1 else -1, list(hints)))
        await original(peer_key, payload, hints=hints)

    transport.send = send  # type: ignore[method-assign]


async def _mqtt_responder(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> dict[str, Any]:
    sent: list[tuple[int, list[str]]] = []
    async with Node(port=0, conf=_mqtt(stun, "mqtt-srv")) as node:
        await node.start()
        _record_sends(node, sent)
        address.set_result(node.address())
        link = await node.accept(timeout=20)
        await link.send(b"echo:" + await link.recv(timeout=20))
        await asyncio.wrap_future(done)
    return {"sent": sent}


async def _mqtt_requester(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> dict[str, Any]:
    try:
        async with Node(port=0, conf=_mqtt(stun, "mqtt-cli")) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, method = await auto_connect(
                node, peer, transport="udp", methods=["udp_punch"], timeout=15
            )
            await link.send(b"hi")
            return {"method": method, "echo": await link.recv(timeout=10), "path": str(link.path)}
    finally:
        done.set_result(True)


async def test_udp_punch_signalled_through_mosquitto(
    lab_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Offer and answer travel through the lab's real broker; the answer goes out with
    the broker the requester listens on (its offer's hints), and no other method's
    handler complains about the punch messages it sees on the shared transport."""
    lab = lab_factory(("port-restricted", "port-restricted"), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    with caplog.at_level(logging.DEBUG, logger="warpgate_plugins.reverse"):
        served, dialled = await asyncio.gather(
            lab.arun("b", _mqtt_responder, stun, address, done, timeout=60),
            lab.arun("a", _mqtt_requester, stun, address, done, timeout=60),
        )
    assert dialled["method"] == "udp_punch" and dialled["echo"] == b"echo:hi", dialled
    assert lab.wan_address("nat_b") in dialled["path"]
    answers = [hints for kind, hints in served["sent"] if kind == ANSWER]
    assert answers == [[BROKER]], served
    complaints = [
        r.getMessage()
        for r in caplog.records
        if r.name == "warpgate_plugins.reverse" and r.levelno >= logging.INFO
    ]
    assert complaints == []
    assert any("left a signal message of type 32" in r.getMessage() for r in caplog.records)


# --- birthday probing with the port-restricted side asking, over a real WAN delay -------


async def test_birthday_with_the_easy_side_asking_and_wan_delay(lab_factory: Any) -> None:
    """The requester behind the port-restricted NAT may confirm another mapping of the
    symmetric side than the one that side heard first (a second random probe hits within
    the round trip); the responder keeps its sockets until the handshake arrives, so
    every try connects directly (it hung in about 4 tries of 10 before)."""
    topology = Topology(
        routers=(
            Router("nat_a", NatMode.PORT_RESTRICTED, delay_ms=25),
            Router("nat_b", NatMode.SYMMETRIC, delay_ms=25),
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b"), Host("pub")),
    )
    lab = lab_factory(topology, servers=True)
    kwargs = {"transport": "udp", "methods": ["udp_punch"], "timeout": 10}
    results = [await matrix_try(lab, "a", "b", kwargs=kwargs) for _ in range(5)]
    for result in results:
        assert result["ok"] and result["method"] == "udp_punch", result
        assert result["kind"] == "direct", result
