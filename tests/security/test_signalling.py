"""Claims about signalling through MQTT brokers (docs/security.md, "Signalling"), tested
through a real mosquitto with an eavesdropper subscribed to every topic -- exactly what
the broker's operator (or anyone allowed to subscribe to ``#``) sees."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.mqtt.conftest import Mosquitto, received
from warpgate import Node, auto_connect
from warpgate.identity.keystore import public_key_bytes
from warpgate.sansio.address import NodeAddress
from warpgate.sansio.envelope import seal_envelope
from warpgate.sansio.signal_messages import ReverseConnect
from warpgate_plugins.mqtt import topic_for
from warpgate_plugins.mqtt.messages import Kind, Message

MARKER = b"the plaintext nobody else may read: 4f1c2b" * 3


class Eavesdropper:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def _listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.seen.append((str(message.topic), message.payload))

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:  # noqa: ASYNC110 - a list has no event
                await asyncio.sleep(0.02)


@pytest.fixture
async def eavesdropper(mosquitto: Mosquitto) -> AsyncIterator[Eavesdropper]:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=5) as client:
        await client.subscribe("#")
        spy = Eavesdropper(client)
        spy._task = asyncio.create_task(spy._listen())
        try:
            yield spy
        finally:
            spy._task.cancel()
            await asyncio.gather(spy._task, return_exceptions=True)


def _stat(node: Node, name: str) -> int:
    return int(node.signal_transports["mqtt"].statistics()[name])


async def _wait_stat(node: Node, name: str, value: int) -> None:
    async with asyncio.timeout(5):
        while _stat(node, name) < value:  # noqa: ASYNC110 - counters have no event
            await asyncio.sleep(0.02)


async def test_broker_sees_only_ciphertext(
    mqtt_pair: tuple[Node, Node], eavesdropper: Eavesdropper
) -> None:
    """Signal payloads and the node address inside a reverse-connect request cross the
    broker encrypted.  What it does see, by design: topics (the recipient's key) and the
    sender's key in each envelope header (needed to check the signature)."""
    a, b = mqtt_pair
    inbox = received(b)
    await a.signal_transports["mqtt"].send(b.public_key, MARKER)
    assert (await asyncio.wait_for(inbox.get(), 5))[1] == MARKER
    link, method = await auto_connect(a, b.address(), methods=["reverse"], timeout=10)
    assert method == "reverse"
    await link.close()
    await eavesdropper.wait_for(4)  # two messages and their two receipts at least
    payloads = b"".join(p for _, p in eavesdropper.seen)
    for secret in (MARKER, MARKER[:12], a.address(), a.address()[36:]):
        assert secret not in payloads
    # The metadata the doc says a broker sees is really there (the doc stays honest).
    assert {t for t, _ in eavesdropper.seen} >= {topic_for(b.public_key)}
    assert a.public_key in payloads


async def test_forged_signal_is_dropped(mqtt_pair: tuple[Node, Node], mosquitto: Mosquitto) -> None:
    """Eve publishes a message claiming to come from Alice: the signature check drops
    it before anything reads it."""
    a, b = mqtt_pair
    inbox = received(b)
    eve_key = ec.generate_private_key(ec.SECP256R1())
    envelope = bytearray(
        seal_envelope(
            Message(Kind.DATA, os.urandom(8), b"from alice, honest").encode(),
            sender_private_key=eve_key,
            recipient_public_key=b.public_key,
            now=time.time(),
            nonce=os.urandom(16),
        )
    )
    envelope[2:35] = a.public_key  # claim Alice's key in the sender field
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=5) as client:
        await client.publish(topic_for(b.public_key), bytes(envelope))
    await _wait_stat(b, "forged", 1)
    assert inbox.empty()


async def test_replayed_signal_is_dropped(
    mqtt_pair: tuple[Node, Node], eavesdropper: Eavesdropper
) -> None:
    a, b = mqtt_pair
    inbox = received(b)
    await a.signal_transports["mqtt"].send(b.public_key, b"once")
    assert (await asyncio.wait_for(inbox.get(), 5))[1] == b"once"
    await eavesdropper.wait_for(1)
    captured = [p for t, p in eavesdropper.seen if t == topic_for(b.public_key)]
    await eavesdropper.client.publish(topic_for(b.public_key), captured[0])
    await _wait_stat(b, "replayed", 1)
    assert inbox.empty() and _stat(b, "delivered") == 1


async def test_reverse_connect_for_an_address_the_sender_does_not_own_is_ignored(
    mqtt_pair: tuple[Node, Node], mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A validly signed request from Eve asking Bob to dial *Alice's* address is ignored:
    a node dials back only the sender's own address, so nobody can aim it at another."""
    a, b = mqtt_pair
    caplog.set_level(logging.WARNING)
    eve_key = ec.generate_private_key(ec.SECP256R1())
    request = ReverseConnect(b"eve-intent", NodeAddress.decode(a.address()))
    envelope = seal_envelope(
        Message(Kind.DATA, os.urandom(8), request.encode()).encode(),
        sender_private_key=eve_key,
        recipient_public_key=b.public_key,
        now=time.time(),
        nonce=os.urandom(16),
    )
    assert public_key_bytes(eve_key.public_key()) != a.public_key
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=5) as client:
        await client.publish(topic_for(b.public_key), envelope)
    await _wait_stat(b, "delivered", 1)
    async with asyncio.timeout(5):
        while "does not own" not in caplog.text:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await a.accept(timeout=0.5)
