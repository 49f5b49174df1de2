"""The embedded (amqtt) broker: start/stop, and the transport running through it."""

from __future__ import annotations

import asyncio

import aiomqtt

from tests.mqtt.conftest import mqtt_node, send_and_receive
from warpgate import auto_connect
from warpgate.serve import EmbeddedMqttBroker


async def test_start_stop_and_plain_mqtt() -> None:
    broker = EmbeddedMqttBroker("127.0.0.1", 0)
    await broker.start()
    try:
        assert broker.running and broker.port > 0
        async with aiomqtt.Client("127.0.0.1", broker.port, timeout=5) as client:
            await client.subscribe("t/1")
            await client.publish("t/1", b"hi")
            async with asyncio.timeout(5):
                async for message in client.messages:
                    assert message.payload == b"hi"
                    break
    finally:
        await broker.stop()
    assert not broker.running
    await broker.stop()  # idempotent
    # The port is released: a new broker can take it (what `warpgate serve` restarts do).
    async with EmbeddedMqttBroker("127.0.0.1", broker.port) as again:
        async with aiomqtt.Client("127.0.0.1", again.port, timeout=5):
            pass


async def test_nodes_signal_and_reverse_connect_through_the_embedded_broker() -> None:
    async with EmbeddedMqttBroker("127.0.0.1", 0) as broker:
        async with mqtt_node("alice", [broker.url]) as a, mqtt_node("bob", [broker.url]) as b:
            await a.start()
            await b.start()
            await send_and_receive(a, b, b"embedded")
            link, method = await auto_connect(a, b.address(), methods=["reverse"])
            assert method == "reverse"
            inbound = await b.accept(timeout=5)
            await link.send(b"hello")
            assert await inbound.recv(2) == b"hello"
