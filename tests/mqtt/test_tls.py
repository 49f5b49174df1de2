"""mqtts:// brokers: TLS to a mosquitto with a certificate made for the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.mqtt.conftest import Mosquitto, mqtt_node, send_and_receive


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warpgate test broker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


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
