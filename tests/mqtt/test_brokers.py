"""Broker URLs, rendezvous selection, and signalling when brokers fail."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import pytest

from tests.integration.conftest import keypair
from tests.mqtt.conftest import Mosquitto, mqtt_node, send_and_receive
from warpgate import Node
from warpgate.errors import ConfigError
from warpgate.sansio.address import HintKind, NodeAddress
from warpgate_plugins.mqtt import hrw_rank, hrw_select, parse_broker_url

BROKERS = [parse_broker_url(f"mqtt://10.0.0.{i}:1883") for i in range(1, 11)]


def test_parse_broker_urls() -> None:
    url = parse_broker_url("mqtts://user:p%40ss@Broker.Example:8884")
    assert (url.scheme, url.host, url.port, url.username, url.password) == (
        "mqtts",
        "broker.example",
        8884,
        "user",
        "p@ss",
    )
    assert url.tls and url.canonical == "mqtts://broker.example:8884"
    assert "p@ss" not in repr(url) and "p@ss" not in str(url)
    assert parse_broker_url("mqtt://h").port == 1883
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_broker_url("mqtt://[::1]:1884").canonical == "mqtt://[::1]:1884"
    for bad in ("http://h", "mqtt://", "mqtt://h:99999", "mqtt://h/path", "h:1883", 5):
        with pytest.raises(ConfigError):
            parse_broker_url(bad)  # type: ignore[arg-type]


def test_hrw_is_deterministic_and_order_independent() -> None:
    key = keypair()[1]
    assert hrw_select(key, BROKERS, 3) == hrw_select(key, list(reversed(BROKERS)), 3)
    # Credentials are local: they do not change the choice.
    with_creds = [parse_broker_url(f"mqtt://u:p@10.0.0.{i}:1883") for i in range(1, 11)]
    assert [b.canonical for b in hrw_select(key, with_creds, 3)] == [
        b.canonical for b in hrw_select(key, BROKERS, 3)
    ]


def test_hrw_spreads_keys_and_moves_few_on_removal() -> None:
    keys = [keypair()[1] for _ in range(300)]
    firsts = Counter(hrw_rank(k, BROKERS)[0].canonical for k in keys)
    assert len(firsts) == 10 and max(firsts.values()) < 60  # roughly 30 each
    removed = BROKERS[3]
    rest = [b for b in BROKERS if b != removed]
    moved = sum(hrw_select(k, BROKERS, 2) != hrw_select(k, rest, 2) for k in keys)
    affected = sum(removed in hrw_select(k, BROKERS, 2) for k in keys)
    assert moved == affected  # only keys that ranked the removed broker change


async def all_brokers_up(*nodes: Node) -> None:
    """Wait (bounded) until every broker connection each node opened is up."""

    def down(node: Node) -> list[str]:
        brokers = node.signal_transports["mqtt"].statistics()["brokers"]
        return [url for url, info in brokers.items() if not info["connected"]]

    async with asyncio.timeout(5):
        for node in nodes:
            while down(node):  # noqa: ASYNC110 - bounded poll of connection states
                await asyncio.sleep(0.02)


async def test_three_brokers_one_stopped(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    brokers = [mosquitto_factory() for _ in range(3)]
    urls = [m.url for m in brokers]
    async with (
        mqtt_node("alice", urls, sig_pipe_no=2) as a,
        mqtt_node("bob", urls, sig_pipe_no=2) as b,
    ):
        await a.start()
        await b.start()
        bob_brokers = [u.canonical for u in b.signal_transports["mqtt"].brokers]
        assert len(bob_brokers) == 2
        hints = [
            h.value for h in NodeAddress.decode(b.address()).hints if h.kind == HintKind.SIGNAL
        ]
        assert hints == bob_brokers
        await send_and_receive(a, b, b"warm-up")  # opens alice's connections to bob's brokers
        await all_brokers_up(a, b)
        await send_and_receive(a, b, b"all up")
        # Stop one of the brokers bob listens on: the other still carries the messages.
        victim = next(m for m in brokers if m.url in bob_brokers)
        victim.stop()
        for i in range(5):
            await send_and_receive(a, b, b"one down %d" % i)
            await send_and_receive(b, a, b"reply %d" % i)
        stats = b.signal_transports["mqtt"].statistics()
        assert stats["brokers"][victim.url]["connected"] is False
        assert stats["replayed"] >= 1  # the copy through the second broker was de-duplicated


async def test_refusing_broker_is_logged_and_retried(
    mosquitto_factory: Callable[..., Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    good = mosquitto_factory()
    refusing = mosquitto_factory(anonymous=False)
    urls = [good.url, refusing.url]
    caplog.set_level(logging.WARNING, logger="warpgate_plugins.mqtt")
    async with (
        mqtt_node("alice", urls, sig_pipe_no=2) as a,
        mqtt_node("bob", urls, sig_pipe_no=2) as b,
    ):
        await a.start()
        await b.start()
        for i in range(3):
            await send_and_receive(a, b, b"through the good one %d" % i)
        await asyncio.sleep(0.5)
        bad = b.signal_transports["mqtt"].statistics()["brokers"][refusing.url]
        assert not bad["connected"] and bad["failures"] >= 2 and bad["last_error"]
        assert b.signal_transports["mqtt"].statistics()["brokers"][good.url]["connected"]
    assert any(refusing.url in r.getMessage() for r in caplog.records)


async def test_dead_port_among_brokers(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    from tests.mqtt.conftest import free_port

    good = mosquitto_factory()
    urls = [good.url, f"mqtt://127.0.0.1:{free_port()}"]
    async with (
        mqtt_node("alice", urls, sig_pipe_no=2) as a,
        mqtt_node("bob", urls, sig_pipe_no=2) as b,
    ):
        await a.start()
        await b.start()
        await send_and_receive(a, b, b"refused port ignored")


async def test_reconnects_when_the_broker_comes_back(mosquitto: Mosquitto) -> None:
    async with mqtt_node("alice", [mosquitto.url]) as a, mqtt_node("bob", [mosquitto.url]) as b:
        await a.start()
        await b.start()
        await send_and_receive(a, b, b"before")
        mosquitto.stop()
        await asyncio.sleep(0.3)
        mosquitto.start()  # same port
        # The send waits (within its deadline) for the connections to come back.
        await send_and_receive(a, b, b"after")
        for node in (a, b):
            info = node.signal_transports["mqtt"].statistics()["brokers"][mosquitto.url]
            assert info["connects"] >= 2 and info["failures"] >= 1


async def test_peer_on_other_brokers_is_reached_through_its_hints(
    mosquitto_factory: Callable[..., Mosquitto],
) -> None:
    x, y = mosquitto_factory(), mosquitto_factory()
    async with mqtt_node("alice", [x.url]) as a, mqtt_node("bob", [y.url]) as b:
        await a.start()
        await b.start()
        hints = [h.value for h in NodeAddress.decode(b.address()).hints]
        assert hints == [y.url]
        await send_and_receive(a, b, b"via your broker", hints=hints)
        # Bob replies through the broker alice was heard on, without hints.
        await send_and_receive(b, a, b"and back")
