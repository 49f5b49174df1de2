"""Link keepalives: a quiet link is pinged and stays up, a silent peer is noticed and
its link closed within ``link_timeout + link_keepalive / 2``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.conftest import conf
from warpgate import LinkClosed, Node, auto_connect

FAST = {"link_keepalive": 0.2, "link_timeout": 0.6}


async def linked(transport: str, a_conf: dict[str, Any], b_conf: dict[str, Any]) -> Any:
    a = Node(ip="127.0.0.1", port=0, conf=a_conf)
    b = Node(ip="127.0.0.1", port=0, conf=b_conf)
    await a.start()
    await b.start()
    link, _ = await auto_connect(a, b.address(), methods=["direct"], transport=transport)
    inbound = await b.accept(timeout=5)
    return a, b, link, inbound


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_an_idle_link_with_live_peers_stays_open(transport: str) -> None:
    a, b, link, inbound = await linked(transport, conf("ka-a", **FAST), conf("ka-b", **FAST))
    try:
        await asyncio.sleep(2.0)  # more than three link_timeouts without a message
        assert not link.closed and not inbound.closed
        await link.send(b"still here")
        assert await inbound.recv(timeout=2) == b"still here"
        assert link.messages_received == 0  # pings are not messages
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_a_silent_peer_is_noticed(transport: str) -> None:
    # The peer has keepalives off and is then made deaf: it answers nothing.
    a, b, link, inbound = await linked(
        transport, conf("ka-c", **FAST), conf("ka-d", link_keepalive=0)
    )
    try:
        if transport == "tcp":
            # A host that is gone stops acknowledging at the TCP level too; on loopback
            # the peer's kernel would keep acknowledging, so that signal is switched off.
            inbound._conn.transport.pause_reading()
            link.peer_acked_within = lambda seconds: False  # type: ignore[method-assign]
        else:
            b.udp.links.clear()  # its datagrams now reach no link
        began = time.monotonic()
        with pytest.raises(LinkClosed, match="no answer from the peer"):
            while True:
                await link.recv(timeout=5)
        took = time.monotonic() - began
        assert took <= FAST["link_timeout"] + FAST["link_keepalive"] / 2 + 0.5
    finally:
        await a.close()
        await b.close()


async def test_keepalives_can_be_turned_off() -> None:
    off = {"link_keepalive": 0, "link_timeout": 0.3}
    a, b, link, inbound = await linked("tcp", conf("ka-e", **off), conf("ka-f", **off))
    try:
        inbound._conn.transport.pause_reading()
        await asyncio.sleep(1.0)
        assert not link.closed
    finally:
        await a.close()
        await b.close()


async def test_a_link_whose_application_is_behind_is_not_closed() -> None:
    """The receiving application stops reading: its queue fills, reading pauses, and
    the peer's pings wait behind the data.  That is backpressure, not a dead peer."""
    a, b, link, inbound = await linked("tcp", conf("ka-g", **FAST), conf("ka-h", **FAST))
    try:
        payload = bytes(1024)

        async def flood() -> None:
            for _ in range(2000):
                await link.send(payload)

        sender = asyncio.create_task(flood())
        await asyncio.sleep(2.0)  # the receiver reads nothing: > 3 link_timeouts
        assert not link.closed and not inbound.closed
        for _ in range(2000):  # now it catches up, and everything is there
            assert await inbound.recv(timeout=5) == payload
        await sender
    finally:
        await a.close()
        await b.close()


@pytest.mark.skipif(not hasattr(__import__("socket"), "TCP_INFO"), reason="TCP_INFO is Linux's")
async def test_tcp_links_read_the_peers_acknowledgements_from_the_kernel() -> None:
    a, b, link, inbound = await linked("tcp", conf("ka-i"), conf("ka-j"))
    try:
        await link.send(b"acknowledged by the peer's kernel")
        assert await inbound.recv(timeout=2)
        assert link.peer_acked_within(5.0)
        assert not link.peer_acked_within(0.0)
    finally:
        await a.close()
        await b.close()
