"""The mqtt signal transport between two real nodes through a real mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.integration.conftest import keypair
from tests.mqtt.conftest import Mosquitto, mqtt_node, received
from warpgate import Node, auto_connect
from warpgate.sansio.address import HintKind, NodeAddress


async def test_two_nodes_exchange_signals(mqtt_pair: tuple[Node, Node]) -> None:
    a, b = mqtt_pair
    assert list(a.signal_transports) == ["mqtt"]
    inbox_b, inbox_a = received(b), received(a)
    await a.signal_transports["mqtt"].send(b.public_key, b"hello bob")
    assert await asyncio.wait_for(inbox_b.get(), 5) == (a.public_key, b"hello bob")
    await b.signal_transports["mqtt"].send(a.public_key, b"hello alice")
    assert await asyncio.wait_for(inbox_a.get(), 5) == (b.public_key, b"hello alice")
    stats = a.signal_transports["mqtt"].statistics()
    assert stats["sent"] == 1 and stats["acks_received"] == 1 and stats["delivered"] == 1


async def test_address_carries_the_broker_as_a_signal_hint(
    mqtt_pair: tuple[Node, Node], mosquitto: Mosquitto
) -> None:
    a, _ = mqtt_pair
    hints = NodeAddress.decode(a.address()).hints
    assert [(h.kind, h.value) for h in hints] == [(HintKind.SIGNAL, mosquitto.url)]


async def test_async_handler_and_many_messages(mqtt_pair: tuple[Node, Node]) -> None:
    a, b = mqtt_pair
    got: list[bytes] = []
    done = asyncio.Event()

    async def handler(sender: bytes, payload: bytes) -> None:
        got.append(payload)
        if len(got) == 50:
            done.set()

    b.signal_transports["mqtt"].add_handler(handler)
    sender = a.signal_transports["mqtt"]
    await asyncio.gather(*(sender.send(b.public_key, b"%d" % i) for i in range(50)))
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(got) == sorted(b"%d" % i for i in range(50))


async def test_request_response(mqtt_pair: tuple[Node, Node]) -> None:
    a, b = mqtt_pair

    async def answer(sender: bytes, payload: bytes) -> bytes:
        assert sender == a.public_key
        return payload.upper()

    b.signal_transports["mqtt"].add_request_handler(answer)
    reply = await a.signal_transports["mqtt"].request(b.public_key, b"ping", timeout=5)
    assert reply == b"PING"


async def test_request_without_handler_fails_fast(mqtt_pair: tuple[Node, Node]) -> None:
    import pytest

    from warpgate_plugins.mqtt import SignalRequestError, signal_request

    a, b = mqtt_pair
    with pytest.raises(SignalRequestError, match="no_handler"):
        await signal_request(a, b.public_key, b"ping", timeout=5)


async def test_reverse_connect_over_mqtt(mqtt_pair: tuple[Node, Node]) -> None:
    a, b = mqtt_pair
    link, method = await auto_connect(a, b.address(), methods=["reverse"])
    assert method == "reverse" and link.remote_key == b.public_key
    inbound = await b.accept(timeout=5)
    assert inbound.remote_key == a.public_key
    await link.send(b"via mqtt")
    assert await inbound.recv(2) == b"via mqtt"


async def test_unreachable_peer_times_out(mosquitto: Mosquitto) -> None:
    import pytest

    from warpgate_plugins.mqtt import SignalDeliveryError

    async with mqtt_node("lonely", [mosquitto.url], mqtt_ack_timeout=0.6) as a:
        await a.start()
        ghost = keypair()[1]
        with pytest.raises(SignalDeliveryError):
            await a.signal_transports["mqtt"].send(ghost, b"anyone?")
        stats = a.signal_transports["mqtt"].statistics()
        assert stats["send_failures"] == 1 and stats["retransmits"] >= 1


async def test_no_brokers_starts_and_send_fails_clearly() -> None:
    import pytest

    from warpgate_plugins.mqtt import SignalDeliveryError

    async with mqtt_node("nobroker", []) as a:
        await a.start()
        with pytest.raises(SignalDeliveryError, match="no MQTT broker"):
            await a.signal_transports["mqtt"].send(keypair()[1], b"x")


async def test_sig_pipe_no_zero_needs_no_broker() -> None:
    # NODE_TEST_CONF semantics: the mqtt plugin is installed but nothing is started.
    async with mqtt_node("quiet", ["mqtt://127.0.0.1:1"], sig_pipe_no=0) as a:
        await a.start()
        assert a.signal_transports == {}
        assert a.phase_results["setup_router_and_signal"] == "disabled"
        assert not NodeAddress.decode(a.address()).hints


async def test_bad_broker_url_is_a_clear_error() -> None:
    import pytest

    from warpgate.errors import ConfigError

    with pytest.raises(ConfigError, match="mqtt://"):
        async with mqtt_node("typo", ["http://127.0.0.1:1883"]) as a:
            await a.start()


async def test_rendezvous_alone_finds_the_peer(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """Three brokers, one per node: without hints both sides compute the same broker."""
    urls = [mosquitto_factory().url for _ in range(3)]
    async with mqtt_node("alice", urls) as a, mqtt_node("bob", urls) as b:
        await a.start()
        await b.start()
        inbox = received(b)
        await a.signal_transports["mqtt"].send(b.public_key, b"found you")
        assert await asyncio.wait_for(inbox.get(), 5) == (a.public_key, b"found you")
        assert (
            a.signal_transports["mqtt"].brokers != []
            and len(b.signal_transports["mqtt"].brokers) == 1
        )
