"""Fuzzing the servers' request handling behind their codecs: whatever a client sends, the
STUN server's answer logic and the PNP server's request handler answer or drop -- never
raise, and never report an internal error.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.mutate import mutated
from tests.fuzz.profile import FUZZ
from tests.fuzz.test_codecs import PNP_REQUEST_SEEDS, STUN_SEEDS
from warpgate.pnp.server import PnpServer
from warpgate.pnp.store import open_store
from warpgate.sansio import pnp, stun
from warpgate.stun.server import StunServer

SOURCE = ("198.51.100.7", 40000)
HERE = ("203.0.113.1", 3478)

_request = stun.encode(
    stun.StunMessage(
        stun.StunMethod.BINDING,
        stun.StunClass.REQUEST,
        attributes=(
            (stun.Attr.CHANGE_REQUEST, stun.ChangeRequest(True, True)),
            (stun.Attr.RESPONSE_PORT, 5000),
            (stun.Attr.PADDING, b"\x00" * 16),
            (stun.Attr.SOFTWARE, "fuzz"),
        ),
    )
)
STUN_REQUESTS = [*STUN_SEEDS, _request]


@pytest.mark.parametrize("rfc5780", [False, True])
@FUZZ
@given(data=st.one_of(st.binary(max_size=300), mutated(STUN_REQUESTS)))
def test_stun_server_answers_or_drops(rfc5780: bool, data: bytes) -> None:
    server = (
        StunServer(HERE, "203.0.113.2", conf={"rate": 1e9, "burst": 1e9})
        if rfc5780
        else StunServer(HERE, conf={"rate": 1e9, "burst": 1e9})
    )
    msg = server._admit(data, SOURCE)
    if msg is None:
        return
    for transport in ("udp", "tcp"):
        reply = server.respond(msg, SOURCE, HERE, transport)  # type: ignore[arg-type]
        if reply is not None:
            answer = stun.decode(reply.data)  # what we send parses
            assert answer.transaction_id == msg.transaction_id


@pytest.fixture(scope="module")
def pnp_server() -> Iterator[tuple[asyncio.AbstractEventLoop, PnpServer]]:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        server = PnpServer(
            open_store(Path(tmp) / "fuzz.db"), port=0, rate=1e9, burst=1e9, names_per_ip=10**6
        )
        loop.run_until_complete(server.start())
        try:
            yield loop, server
        finally:
            loop.run_until_complete(server.aclose())
            loop.close()


_KEY = ec.generate_private_key(ec.SECP256R1())


def _fresh_put() -> bytes:
    """A valid, fresh, signed PUT (the server checks time and nonce), to mutate."""
    import time

    return pnp.encode_request(
        pnp.make_signed(
            pnp.Op.PUT,
            "fuzz-name",
            key=_KEY,
            request_id=secrets.randbits(32),
            timestamp_ms=int(time.time() * 1000),
            nonce=secrets.token_bytes(16),
            ttl=3600,
            value=b"value",
        )
    )


@FUZZ
@given(data=st.one_of(st.binary(max_size=1200), mutated(PNP_REQUEST_SEEDS)), fresh=st.booleans())
def test_pnp_server_handler_never_fails_internally(
    pnp_server: tuple[asyncio.AbstractEventLoop, PnpServer], data: bytes, fresh: bool
) -> None:
    loop, server = pnp_server
    if fresh:
        data = _fresh_put()[: len(data) or None] if len(data) % 3 else _fresh_put()
    before = server.counts[pnp.Status.INTERNAL]
    reply = loop.run_until_complete(server.handle(data, SOURCE[0]))
    resp = pnp.decode_response(reply)
    assert server.counts[pnp.Status.INTERNAL] == before, resp
    assert resp.status != pnp.Status.INTERNAL
