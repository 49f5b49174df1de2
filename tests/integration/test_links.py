"""Links between real nodes on loopback: connect, messages, streams, security, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

import pytest

from tests.integration.conftest import conf, keypair
from warpgate import (
    NODE_TEST_CONF,
    ConnectError,
    Gate,
    LinkClosed,
    MessageTooLarge,
    Node,
    auto_connect,
    hookimpl,
)
from warpgate.link.tcp import LINK_MAGIC, _frame
from warpgate.sansio.address import InterfaceAddress, NodeAddress
from warpgate.sansio.link_handshake import LinkHandshake, LinkIdentity


async def test_connect_send_recv_both_ways(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, method = await auto_connect(a, b.address())
    assert method == "direct" and link.path.kind == "direct" and link.path.transport == "tcp"
    assert link.remote_key == b.public_key
    inbound = await b.accept(timeout=2)
    assert inbound.remote_key == a.public_key and inbound.path.method == "inbound"
    # Around the old 64 KiB record limit, one record, and several records (1 MiB each).
    for size in (0, 1, 1000, 65519, 65536, 200_000, (1 << 20) - 16, (1 << 20) - 15, 3_000_000):
        payload = os.urandom(size)
        await link.send(payload)
        assert await inbound.recv(2) == payload, size
    await inbound.send(b"back")
    assert await link.recv(2) == b"back"
    assert link.trace and link.trace[0].outcome == "won"
    assert a.last_connect_trace is not None


async def test_message_boundaries_and_order_under_many_sends(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address())
    inbound = await b.accept(timeout=2)
    sent = [os.urandom(n % 3000) for n in range(500)]
    await asyncio.gather(*(link.send(m) for m in sent[:1]))
    for m in sent[1:]:
        await link.send(m)
    got = [await inbound.recv(2) for _ in sent]
    assert got == sent


async def test_async_iteration_ends_when_peer_closes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address())
    inbound = await b.accept(timeout=2)
    for i in range(3):
        await link.send(b"%d" % i)
    await link.close("done")
    got = [msg async for msg in inbound]
    assert got == [b"0", b"1", b"2"]
    with pytest.raises(LinkClosed, match="closed by peer: done"):
        await inbound.recv(1)
    with pytest.raises(LinkClosed):
        await link.send(b"after close")


async def test_stream_interface_moves_bulk_data(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address())
    inbound = await b.accept(timeout=2)
    data = os.urandom(3_000_000)
    writer = link.stream()
    reader = inbound.stream()

    async def send() -> None:
        await writer.write(data)
        await link.close()

    sender = asyncio.create_task(send())
    received = bytearray()
    while chunk := await reader.read(100_000):
        received += chunk
    await sender
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


async def test_max_message_size_is_enforced(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address())
    with pytest.raises(MessageTooLarge, match="larger than this link's maximum"):
        await link.send(b"x" * (a.conf["max_message_size"] + 1))


async def test_peer_sending_oversized_message_is_disconnected() -> None:
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("small", max_message_size=1000)) as small,
        Node(ip="127.0.0.1", port=0, conf=conf("big")) as big,
        Node(ip="127.0.0.1", port=0, conf=conf("third")) as third,
    ):
        for n in (small, big, third):
            await n.start()
        link, _ = await auto_connect(big, small.address())
        inbound = await small.accept(timeout=2)
        await link.send(b"x" * 5000)  # big's own limit allows it
        with pytest.raises(LinkClosed, match="protocol error"):
            await inbound.recv(2)
        # small keeps serving others
        other, _ = await auto_connect(third, small.address())
        accepted = await small.accept(timeout=2)
        await other.send(b"ok")
        assert await accepted.recv(2) == b"ok"


async def test_wrong_key_is_refused_man_in_the_middle(pair: tuple[Node, Node]) -> None:
    """Eve listens where Bob's address points; Alice dialling "Bob" must refuse Eve."""
    a, b = pair
    async with Node(ip="127.0.0.1", port=0, conf=conf("eve")) as eve:
        await eve.start()
        real = NodeAddress.decode(b.address())
        forged = NodeAddress(
            public_key=real.public_key,  # Bob's key...
            machine_id=os.urandom(16),
            interfaces=(
                InterfaceAddress(nic_ip="127.0.0.1", port=eve.listen_port),
            ),  # ...Eve's port
        )
        with pytest.raises(ConnectError, match="not the expected"):
            await auto_connect(a, forged.encode(), timeout=3)
        assert not a.links, "nothing was adopted on Alice's side"
        with pytest.raises(TimeoutError):
            await eve.accept(timeout=0.3)  # and Eve never got a link either


async def test_relaying_mitm_cannot_complete_a_handshake(pair: tuple[Node, Node]) -> None:
    """A man in the middle forwarding bytes between Alice and Bob but substituting its own
    handshake key fails: Alice expects Bob's key, Bob sees the attacker's identity."""
    a, b = pair
    mallory = LinkIdentity.create(*keypair())
    reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
    hs = LinkHandshake(mallory, initiator=True, expected_identity=b.public_key)
    writer.write(LINK_MAGIC + _frame(hs.start()))
    await writer.drain()
    size = int.from_bytes(await reader.readexactly(2), "big")
    msg2 = await reader.readexactly(size)
    reply = hs.receive(msg2)  # Mallory learns Bob's identity, as anyone dialling Bob does
    assert reply is not None and hs.remote_identity == b.public_key
    writer.write(_frame(reply))
    await writer.drain()
    inbound = await b.accept(timeout=2)
    # Bob's link is with Mallory's identity, never with Alice's: Mallory cannot speak as Alice.
    assert inbound.remote_key != a.public_key
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    "behaviour", ["garbage", "magic-then-garbage", "half-handshake", "stall", "huge-length"]
)
async def test_bad_inbound_connections_are_dropped_and_others_served(
    pair: tuple[Node, Node], behaviour: str
) -> None:
    a, b = pair
    b.conf["handshake_timeout"] = 0.5
    reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
    if behaviour == "garbage":
        writer.write(os.urandom(64))
    elif behaviour == "magic-then-garbage":
        writer.write(LINK_MAGIC + b"\x00\x20" + os.urandom(32))
    elif behaviour == "half-handshake":
        hs = LinkHandshake(LinkIdentity.create(*keypair()), initiator=True)
        writer.write(LINK_MAGIC + _frame(hs.start()))  # then never answer msg2
    elif behaviour == "huge-length":
        writer.write(LINK_MAGIC + b"\xff\xff" + b"x" * 10)
    await writer.drain()
    # Meanwhile another peer is served normally.
    link, _ = await auto_connect(a, b.address())
    inbound = await b.accept(timeout=2)
    await link.send(b"still here")
    assert await inbound.recv(2) == b"still here"
    # And the bad connection is closed by the node within the handshake timeout (it may
    # have answered a well-formed first handshake message before giving up).
    await asyncio.wait_for(reader.read(), 3)
    writer.close()
    await writer.wait_closed()
    assert b.dropped_connections >= 1


async def test_connect_failure_lists_every_attempt(pair: tuple[Node, Node]) -> None:
    a, _b = pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here
    ghost = NodeAddress(
        public_key=keypair()[1],
        machine_id=a.machine_id,
        interfaces=(InterfaceAddress(nic_ip="127.0.0.1", port=dead_port),),
    )
    with pytest.raises(ConnectError) as info:
        await auto_connect(a, ghost.encode(), timeout=2)
    assert info.value.attempts and all(x.outcome == "failed" for x in info.value.attempts)
    assert "ConnectionRefusedError" in str(info.value)


async def test_a_lone_attempt_that_runs_out_of_time_says_which_deadline(
    pair: tuple[Node, Node],
) -> None:
    """A peer that accepts TCP but never answers the handshake: with the one candidate
    under the overall deadline the trace says that deadline was reached; with a shorter
    attempt deadline, that the attempt timed out."""
    a, _b = pair
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    mute = NodeAddress(
        public_key=keypair()[1],
        machine_id=a.machine_id,
        interfaces=(InterfaceAddress(nic_ip="127.0.0.1", port=silent.sockets[0].getsockname()[1]),),
    ).encode()
    try:
        with pytest.raises(ConnectError) as overall:
            await auto_connect(a, mute, methods=["direct"], timeout=0.3)
        (attempt,) = overall.value.attempts
        assert attempt.outcome == "cancelled"
        assert attempt.error == "overall deadline of 0.3 s reached"
        with pytest.raises(ConnectError) as own:
            await auto_connect(a, mute, methods=["direct"], timeout=2, attempt_timeout=0.2)
        (attempt,) = own.value.attempts
        assert attempt.outcome == "failed" and attempt.error == "timed out after 0.2 s"
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_connect_to_self_and_unknown_method_and_name(pair: tuple[Node, Node]) -> None:
    a, b = pair
    with pytest.raises(ConnectError, match="own"):
        await auto_connect(a, a.address())
    with pytest.raises(ConnectError, match="'warp' is not running"):
        await auto_connect(a, b.address(), methods=["warp"])
    with pytest.raises(ConnectError, match="pnp_servers"):
        await auto_connect(a, "bob.p2p")  # the pnp backend is installed but has no server


async def test_losing_attempts_are_cancelled_and_closed(pair: tuple[Node, Node]) -> None:
    """Every candidate finishing: the winner is kept, every other link is closed."""
    a, b = pair
    link, _ = await auto_connect(a, b.address(), run_all=True, stagger=0)
    outcomes = sorted(x.outcome for x in link.trace)
    assert "won" in outcomes
    assert all(o in ("won", "not needed", "failed") for o in outcomes)
    await asyncio.sleep(0.1)
    assert [x for x in a.links if not x.closed] == [link]
    assert len(asyncio.all_tasks()) < 20  # no attempt task left behind


async def test_reverse_connect_through_in_process_signalling() -> None:
    sig = {"sig_pipe_no": 1, "plugins": {"signal": ["memory"]}}
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("caller", **sig)) as caller,
        Node(ip="127.0.0.1", port=0, conf=conf("callee", **sig)) as callee,
    ):
        await caller.start()
        await callee.start()
        link, method = await auto_connect(caller, callee.address(), methods=["reverse"])
        assert method == "reverse" and link.remote_key == callee.public_key
        inbound = await callee.accept(timeout=2)
        assert inbound.remote_key == caller.public_key
        await link.send(b"via reverse")
        assert await inbound.recv(2) == b"via reverse"


async def test_observer_hooks_see_attempts_and_links() -> None:
    events: list[str] = []

    class Watch:
        @hookimpl
        def warpgate_connect_attempt(self, node: Node, attempt: Any) -> None:
            events.append(f"attempt {attempt.method}")

        @hookimpl
        def warpgate_link_established(self, node: Node, link: Any) -> None:
            events.append(f"link {link.path.method}")

    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("w1"), plugins=[Watch()]) as a,
        Node(ip="127.0.0.1", port=0, conf=conf("w2")) as b,
    ):
        await a.start()
        await b.start()
        await auto_connect(a, b.address())
    assert events[0] == "attempt direct" and "link direct" in events


async def test_gate_listen_and_iteration() -> None:
    async def echo(link: Any) -> None:
        async for msg in link:
            await link.send(msg.upper())

    async with Gate("srv", NODE_TEST_CONF, ip="127.0.0.1", port=0) as srv:
        srv.listen(echo)
        async with Gate("cli", NODE_TEST_CONF, ip="127.0.0.1", port=0) as cli:
            link = await cli.connect(srv.address())
            await link.send(b"shout")
            assert await link.recv(2) == b"SHOUT"
            assert srv.full_name is None  # no name service installed
    assert srv.node.closed and cli.node.closed


async def test_plaintext_only_when_both_sides_agree() -> None:
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("p1", link_encryption=False)) as p1,
        Node(ip="127.0.0.1", port=0, conf=conf("p2", link_encryption=False)) as p2,
        Node(ip="127.0.0.1", port=0, conf=conf("e3")) as e3,
    ):
        for n in (p1, p2, e3):
            await n.start()
        plain, _ = await auto_connect(p1, p2.address())
        assert plain._codec._send.__class__.__name__ == "_Plain"
        mixed, _ = await auto_connect(p1, e3.address())
        assert mixed._codec._send.__class__.__name__ == "CipherState"
        inbound = await e3.accept(timeout=2)
        await mixed.send(b"encrypted anyway")
        assert await inbound.recv(2) == b"encrypted anyway"
        plain_in = await p2.accept(timeout=2)
        await plain.send(b"clear")
        got = await plain_in.recv(2)
        assert got == b"clear" and type(got) is bytes
        await plain.close("bye")
        with pytest.raises(LinkClosed, match="closed by peer: bye"):
            await plain_in.recv(2)


async def test_ping_measures_round_trip(pair: tuple[Node, Node]) -> None:
    a, b = pair
    link, _ = await auto_connect(a, b.address())
    assert 0 < await link.ping() < 1


async def test_an_older_link_framing_gets_a_clear_error(
    pair: tuple[Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    """A peer speaking framing version 1 (16-bit record lengths) is told to upgrade."""
    import asyncio

    _a, b = pair
    reader, writer = await asyncio.open_connection("127.0.0.1", b.listen_port)
    writer.write(b"WGL\x01" + bytes(40))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # dropped
    writer.close()
    await writer.wait_closed()
    assert "link framing version 1" in caplog.text
