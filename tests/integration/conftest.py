"""Helpers shared by the integration tests: named test confs, a started pair of nodes
on loopback, throwaway identity keys, loopback coturn servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.identity.keystore import public_key_bytes
from warpgate.turn.coturn import Coturn, CoturnUnavailable, loopback_coturn

CoturnFactory = Callable[..., Coturn]


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


def start_coturn(stack: contextlib.ExitStack, **settings: Any) -> Coturn:
    """A loopback coturn (``loopback_coturn`` keywords: ``user_quota``, ``extra``) that
    ``stack`` stops; skips the test when coturn is not installed."""
    try:
        return stack.enter_context(loopback_coturn(**settings))
    except CoturnUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def coturn_factory() -> Iterator[CoturnFactory]:
    """Starts coturns of this test alone (it may stop them, or give them a quota);
    every one is stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda **settings: start_coturn(stack, **settings)
