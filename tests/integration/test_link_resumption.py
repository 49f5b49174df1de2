"""Resumed links between real nodes on loopback: the second link resumes, in either
direction; a listener that forgot its tickets, or has resumption off, still links."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.integration.conftest import conf
from warpgate import Node, auto_connect
from warpgate.link.link import Link
from warpgate.link.tcp import RESUME_MAGIC
from warpgate.sansio.address import InterfaceAddress, NodeAddress


async def _exchange(link: Link, inbound: Link) -> None:
    await link.send(b"ping")
    assert await inbound.recv(5) == b"ping"
    await inbound.send(b"pong")
    assert await link.recv(5) == b"pong"


async def _connect(a: Node, b: Node) -> tuple[Link, Link]:
    link, method = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    assert method == "direct"
    inbound = await b.accept(timeout=5)
    await _exchange(link, inbound)
    return link, inbound


async def test_second_link_resumes_in_both_directions(pair: tuple[Node, Node]) -> None:
    a, b = pair
    first, first_in = await _connect(a, b)
    assert not first.resumed and not first_in.resumed
    again, again_in = await _connect(a, b)
    assert again.resumed and again_in.resumed
    assert again.remote_key == b.public_key and again_in.remote_key == a.public_key
    # The ticket works the other way round too: bob dials alice.
    back, back_in = await _connect(b, a)
    assert back.resumed and back_in.resumed and back_in.remote_key == b.public_key
    for link in (first, again, back):
        await link.close()


async def test_reverse_intent_and_callbacks_work_on_resumed_links(
    pair: tuple[Node, Node],
) -> None:
    """Message callbacks fire on a resumed inbound link as on any other."""
    a, b = pair
    got: asyncio.Queue[bytes] = asyncio.Queue()
    b.add_msg_cb(lambda msg, _client, _pipe: got.put_nowait(msg))
    first, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    await first.close()
    link, _ = await auto_connect(a, b.address(), methods=["direct"], timeout=5)
    assert link.resumed
    await link.send(b"to the callback")
    assert await asyncio.wait_for(got.get(), 5) == b"to the callback"
    await link.close()


async def test_listener_that_forgot_its_tickets_runs_the_full_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob restarts (same identity, new process state): alice's resumed attempt is
    answered with "no such ticket" and the full handshake runs on the same connection."""
    monkeypatch.setenv("WARPGATE_HOME", str(tmp_path))
    async with Node(ip="127.0.0.1", port=0, conf=conf("alice")) as a:
        await a.start()
        async with Node(ip="127.0.0.1", port=0, conf=conf("bob")) as b:
            await b.start()
            link, _ = await _connect(a, b)
            await link.close()
        async with Node(ip="127.0.0.1", port=0, conf=conf("bob")) as b2:
            await b2.start()
            assert a.link_tickets.for_dialling(b2.public_key, now=time.monotonic()) is not None
            link, inbound = await _connect(a, b2)
            assert not link.resumed and not inbound.resumed
            assert b2.dropped_connections == 0
            await link.close()
            # ... and the full handshake left new tickets: the next link resumes.
            link, inbound = await _connect(a, b2)
            assert link.resumed and inbound.resumed
            await link.close()


async def test_resumption_off_on_either_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARPGATE_HOME", str(tmp_path))
    for off in ("alice", "bob"):
        confs = {
            name: conf(name, **({"link_resumption": 0} if name == off else {}))
            for name in ("alice", "bob")
        }
        async with (
            Node(ip="127.0.0.1", port=0, conf=confs["alice"]) as a,
            Node(ip="127.0.0.1", port=0, conf=confs["bob"]) as b,
        ):
            await a.start()
            await b.start()
            for _ in range(3):
                link, inbound = await _connect(a, b)
                assert not link.resumed and not inbound.resumed, off
                await link.close()


async def test_listener_of_an_older_build_gets_a_full_dial(pair: tuple[Node, Node]) -> None:
    """A listener that drops the resumption magic (a build without resumption says "not a
    warpgate link" and closes) costs the dialler one more dial, with the full handshake."""
    a, b = pair
    link, _ = await _connect(a, b)
    await link.close()
    forwarded = 0

    async def old_build(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal forwarded
        first = await reader.readexactly(4)
        if first == RESUME_MAGIC:
            writer.close()
            return
        forwarded += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", b.listen_port)
        up_w.write(first)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer), return_exceptions=True)

    proxy = await asyncio.start_server(old_build, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    real = NodeAddress.decode(b.address())
    via_proxy = NodeAddress(
        public_key=real.public_key,
        machine_id=real.machine_id,
        interfaces=(InterfaceAddress(nic_ip="127.0.0.1", port=port),),
    ).encode()
    try:
        link, _ = await auto_connect(a, via_proxy, methods=["direct"], timeout=5)
        inbound = await b.accept(timeout=5)
        await _exchange(link, inbound)
        assert not link.resumed and forwarded == 1
        await link.close()
    finally:
        proxy.close()
        await proxy.wait_closed()
