"""Bad input published straight onto a node's topic: dropped, counted, never fatal."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from tests.integration.conftest import keypair
from tests.mqtt.conftest import Mosquitto, send_and_receive
from warpgate import Node
from warpgate.sansio.envelope import seal_envelope
from warpgate_plugins.mqtt import topic_for


async def wait_for_stat(node: Node, name: str, value: int, timeout: float = 5.0) -> None:
    transport = node.signal_transports["mqtt"]
    async with asyncio.timeout(timeout):
        while transport.statistics()[name] < value:  # noqa: ASYNC110 - counters have no event
            await asyncio.sleep(0.02)


@pytest.fixture
async def attacker(mosquitto: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=5) as client:
        yield client


def sealed(a: Node, to: bytes, payload: bytes, *, now: float | None = None) -> bytes:
    """A well-formed transport DATA message from ``a``."""
    assert a.private_key is not None
    from warpgate_plugins.mqtt.messages import Kind, Message

    return seal_envelope(
        Message(Kind.DATA, os.urandom(8), payload).encode(),
        sender_private_key=a.private_key,
        recipient_public_key=to,
        now=time.time() if now is None else now,
        nonce=os.urandom(16),
    )


async def still_works(a: Node, b: Node) -> None:
    await send_and_receive(a, b, b"still alive?")
    assert b.signal_transports["mqtt"].statistics()["delivered"] == 1


async def test_forged_signature(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    env = sealed(a, b.public_key, b"forged")
    await attacker.publish(topic_for(b.public_key), env[:-64] + os.urandom(64))
    await wait_for_stat(b, "forged", 1)
    await still_works(a, b)


async def test_wrong_recipient(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    await attacker.publish(topic_for(b.public_key), sealed(a, keypair()[1], b"not for bob"))
    await wait_for_stat(b, "wrong_recipient", 1)
    await still_works(a, b)


async def test_replay(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    captured: asyncio.Queue[bytes] = asyncio.Queue()
    await attacker.subscribe(topic_for(b.public_key))

    async def eavesdrop() -> None:
        async for message in attacker.messages:
            assert isinstance(message.payload, bytes)
            captured.put_nowait(message.payload)

    listener = asyncio.create_task(eavesdrop())
    try:
        await still_works(a, b)
        envelope = await asyncio.wait_for(captured.get(), 5)
        await attacker.publish(topic_for(b.public_key), envelope)
        await wait_for_stat(b, "replayed", 1)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert b.signal_transports["mqtt"].statistics()["delivered"] == 1  # not twice


async def test_stale(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    topic = topic_for(b.public_key)
    await attacker.publish(topic, sealed(a, b.public_key, b"old", now=time.time() - 1000))
    await attacker.publish(topic, sealed(a, b.public_key, b"future", now=time.time() + 1000))
    await wait_for_stat(b, "stale", 2)
    await still_works(a, b)


async def test_oversized(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    await attacker.publish(topic_for(b.public_key), sealed(a, b.public_key, b"x" * 20_000))
    await wait_for_stat(b, "oversized", 1)
    await still_works(a, b)


async def test_garbage(mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client) -> None:
    a, b = mqtt_pair
    topic = topic_for(b.public_key)
    for junk in (b"", b"\x00", os.urandom(50), os.urandom(500), b"\x01" * 300, "text"):
        await attacker.publish(topic, junk)
    await wait_for_stat(b, "malformed", 6)
    await still_works(a, b)


async def test_valid_envelope_with_a_bad_inner_message(
    mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client
) -> None:
    a, b = mqtt_pair
    assert a.private_key is not None
    env = seal_envelope(
        b"\x07\x09",
        sender_private_key=a.private_key,
        recipient_public_key=b.public_key,
        now=time.time(),
        nonce=os.urandom(16),
    )
    await attacker.publish(topic_for(b.public_key), env)
    await wait_for_stat(b, "bad_message", 1)
    await still_works(a, b)


async def test_failing_handler_is_counted_not_fatal(mqtt_pair: tuple[Node, Node]) -> None:
    a, b = mqtt_pair

    def broken(sender: bytes, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    b.signal_transports["mqtt"].add_handler(broken)
    await still_works(a, b)
    assert b.signal_transports["mqtt"].statistics()["handler_errors"] == 1


async def test_forged_and_stray_receipts(
    mqtt_pair: tuple[Node, Node], attacker: aiomqtt.Client
) -> None:
    a, b = mqtt_pair
    topic = topic_for(a.public_key)
    transport = a.signal_transports["mqtt"]
    # A stray receipt for no message in flight is ignored.
    await attacker.publish(topic, b"\x81" + os.urandom(32))
    await wait_for_stat(a, "stray_receipts", 1)
    # While a message is in flight, a receipt with a guessed tag does not complete it:
    # bob is not subscribed to a topic the attacker uses, so only a forged receipt could.
    ghost_key = keypair()[1]
    sending = asyncio.create_task(transport.send(ghost_key, b"to nobody"))
    async with asyncio.timeout(5):
        while not transport._pending:  # noqa: ASYNC110 - bounded poll of internal state
            await asyncio.sleep(0.01)
    nonce = next(iter(transport._pending))
    await attacker.publish(topic, b"\x81" + nonce + os.urandom(16))
    await wait_for_stat(a, "forged", 1)
    assert not sending.done()
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    await still_works(a, b)
