"""A relay offer names where its receiver will send: the relayed address (and the TURN
server to ask for an address).  Anyone with a key can send one, so it must not aim a node
at its own machine or LAN."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from tests.integration.conftest import conf
from warpgate import Node
from warpgate.sansio.turn_signal import RelayOffer


async def test_relay_offer_aimed_at_loopback_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Eve's offer names a TCP service on Bob's own loopback as "the relayed address":
    Bob, whose TURN servers are elsewhere, neither connects there nor sends a handshake."""
    caplog.set_level(logging.WARNING)
    reached = asyncio.Event()

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.set()
        writer.close()

    victim = await asyncio.start_server(service, "127.0.0.1", 0)
    port = victim.sockets[0].getsockname()[1]
    relay = {"turn_servers": ["198.51.100.7:3478"], "turn_relay_first": False}
    signal = {"sig_pipe_no": 41, "plugins": {"signal": ["memory"]}}
    try:
        async with (
            Node(ip="127.0.0.1", port=0, conf=conf("eve", **signal)) as eve,
            Node(ip="127.0.0.1", port=0, conf=conf("bob", **relay, **signal)) as bob,
        ):
            await eve.start()
            await bob.start()
            transport = next(iter(eve.signal_transports.values()))
            for kind in ("tcp", "udp"):
                offer = RelayOffer(os.urandom(16), ("127.0.0.1", port), kind, eve.address())
                await transport.send(bob.public_key, offer.encode(), hints=[])
            async with asyncio.timeout(5):
                while caplog.text.count("ignored a relay offer") < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert "is not an address a peer can have" in caplog.text
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reached.wait(), 0.5)
    finally:
        victim.close()
        await victim.wait_closed()
