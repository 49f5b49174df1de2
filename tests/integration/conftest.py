"""Helpers shared by the integration tests: named test confs, a started pair of nodes
on loopback, throwaway identity keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.identity.keystore import public_key_bytes


def conf(name: str, **extra: Any) -> dict[str, Any]:
    """NODE_TEST_CONF with its own identity (and any overrides)."""
    return dict_child({"identity_name": name, **extra}, NODE_TEST_CONF)


def keypair() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh identity key and its compressed public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, public_key_bytes(key.public_key())


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes, alice and bob, on 127.0.0.1."""
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("alice")) as a,
        Node(ip="127.0.0.1", port=0, conf=conf("bob")) as b,
    ):
        await a.start()
        await b.start()
        yield a, b
