"""mqtts:// brokers: TLS to a mosquitto with a certificate made for the test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mqtt.conftest import Mosquitto, mqtt_node, send_and_receive
from warpgate.testing.certs import self_signed


async def test_signalling_through_a_tls_broker(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path / "tls")
    broker = mosquitto_factory(tls=(cert, key))
    assert broker.url.startswith("mqtts://")
    ca = {"mqtt_ca_file": str(cert)}
    async with (
        mqtt_node("alice", [broker.url], **ca) as a,
        mqtt_node("bob", [broker.url], **ca) as b,
    ):
        await a.start()
        await b.start()
        await send_and_receive(a, b, b"over tls")


# paho (inside aiomqtt) can drop the SSL socket of a refused handshake without closing
# it; the garbage collector's ResourceWarning then lands in whichever test runs.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_untrusted_certificate_is_refused_and_retried(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path / "tls")
    broker = mosquitto_factory(tls=(cert, key))
    async with mqtt_node("alice", [broker.url]) as a:  # system CAs: the cert is not trusted
        await a.start()
        await asyncio.sleep(0.3)
        info = a.signal_transports["mqtt"].statistics()["brokers"][broker.url]
        assert not info["connected"] and info["failures"] >= 1
        assert (
            "CERTIFICATE_VERIFY_FAILED" in info["last_error"]
            or "certificate" in info["last_error"].lower()
        )
