"""Several PNP servers: names end in .peer, are registered on every server, resolve
while one server is down, and reach a server that comes back (the refresher)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pnp.conftest import Stores, exchange
from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.pnp.client import NameTakenError, PnpClient, PnpUnreachableError
from warpgate.pnp.server import PnpServer
from warpgate.pnp.store import open_store
from warpgate.sansio.pnp import Op, Status, encode_request, make_signed


def conf(name: str, ports: list[int], **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "identity_name": name,
            "enable_nickname": True,
            "pnp_servers": [f"127.0.0.1:{p}" for p in ports],
            "pnp_timeout": 1.0,
            "plugins": {"name_service": ["pnp"]},
            **extra,
        },
        NODE_TEST_CONF,
    )


async def on_server(port: int, name: str) -> bytes | None:
    client = PnpClient([("127.0.0.1", port)], timeout=1.0)
    try:
        return (await client.get(name)).value
    except LookupError:
        return None


async def test_two_servers_one_down(stores: Stores) -> None:
    store_b = await stores.new()
    async with PnpServer(await stores.new(), port=0) as a:
        b = await PnpServer(store_b, port=0).start()
        b_port = b.port
        try:
            async with (
                Node(ip="127.0.0.1", port=0, conf=conf("alice", [a.port, b_port])) as alice,
                Node(ip="127.0.0.1", port=0, conf=conf("bob", [b_port, a.port])) as bob,
            ):
                await alice.start()
                await bob.start()
                assert alice.phase_results["setup_nickname_service"] == "alice.peer"
                assert await on_server(a.port, "alice") == alice.address()
                assert await on_server(b_port, "alice") == alice.address()
                # b (bob's first server) goes down: the name still resolves, via a
                await b.aclose()
                link, _ = await auto_connect(bob, "alice.peer", timeout=10)
                await link.close()
                with pytest.raises(LookupError, match="did not answer"):
                    await bob.name_services["pnp"].resolve("nobody")
        finally:
            await b.aclose()


async def test_registration_reaches_a_server_that_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    b = await PnpServer(open_store(tmp_path / "b.db"), port=0, min_ttl=1).start()
    b_port = b.port
    await b.aclose()
    async with PnpServer(open_store(tmp_path / "a.db"), port=0, min_ttl=1) as a:
        c = conf("carol", [a.port, b_port], pnp_ttl=600, pnp_retry=0.5)
        async with Node(ip="127.0.0.1", port=0, conf=c) as carol:
            await carol.start()
            # registered on a; b was down (logged, not fatal)
            assert carol.phase_results["setup_nickname_service"] == "carol.peer"
            assert "not on every server yet" in caplog.text
            assert await on_server(a.port, "carol") == carol.address()
            async with PnpServer(open_store(tmp_path / "b.db"), port=b_port, min_ttl=1):
                deadline = time.monotonic() + 10
                while await on_server(b_port, "carol") is None:
                    assert time.monotonic() < deadline, "the refresher never reached b"
                    await asyncio.sleep(0.2)


async def test_refresh_before_expiry(tmp_path: Path) -> None:
    async with PnpServer(open_store(tmp_path / "r.db"), port=0, min_ttl=1) as srv:
        async with Node(ip="127.0.0.1", port=0, conf=conf("dan", [srv.port], pnp_ttl=2)) as dan:
            await dan.start()
            assert dan.phase_results["setup_nickname_service"] == "dan.p2p"
            client = PnpClient([("127.0.0.1", srv.port)], timeout=1.0)
            first = (await client.get("dan")).expires_ms
            # the record would expire after 2 s; it is still there after 3.5 s, renewed
            await asyncio.sleep(3.5)
            again = await client.get("dan")
            assert again.value == dan.address() and again.expires_ms > first


async def test_start_with_every_server_down_registers_later(tmp_path: Path) -> None:
    b = await PnpServer(open_store(tmp_path / "b.db"), port=0).start()
    port = b.port
    await b.aclose()
    c = conf("erin", [port], pnp_retry=0.5, pnp_timeout=0.5)
    async with Node(ip="127.0.0.1", port=0, conf=c) as erin:
        await erin.start()
        assert erin.phase_results["setup_nickname_service"] == ""
        with pytest.raises(PnpUnreachableError):
            await PnpClient([("127.0.0.1", port)], timeout=0.5).get("erin")
        async with PnpServer(open_store(tmp_path / "b.db"), port=port):
            deadline = time.monotonic() + 10
            while await on_server(port, "erin") is None:
                assert time.monotonic() < deadline, "never registered"
                await asyncio.sleep(0.2)


async def test_taken_on_one_server_is_withdrawn_from_the_others(tmp_path: Path) -> None:
    async with (
        PnpServer(open_store(tmp_path / "a.db"), port=0) as a,
        PnpServer(open_store(tmp_path / "b.db"), port=0) as b,
    ):
        squatter = ec.generate_private_key(ec.SECP256R1())
        await PnpClient([("127.0.0.1", a.port)]).put("zed", b"theirs", squatter, ttl=600)
        c = conf("zed", [a.port, b.port], enable_nickname=False)
        async with Node(ip="127.0.0.1", port=0, conf=c) as node:
            await node.start()
            with pytest.raises(NameTakenError):
                await node.nickname("zed")
            assert await on_server(b.port, "zed") is None  # not left half-registered
            assert await on_server(a.port, "zed") == b"theirs"


async def test_a_lost_name_is_no_longer_refreshed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    offset = [0.0]
    store = open_store(tmp_path / "l.db")
    async with PnpServer(store, port=0, min_ttl=1, clock=lambda: time.time() + offset[0]) as srv:
        c = conf("lola", [srv.port], pnp_ttl=2, enable_nickname=False)
        async with Node(ip="127.0.0.1", port=0, conf=c) as node:
            await node.start()
            assert await node.nickname("lola") == "lola.p2p"
            names = node.name_services["pnp"]
            # the server sees lola's record expire (its clock jumps), another key takes
            # the name, and the clock comes back: lola's next refresh is refused
            offset[0] = 1000.0
            other = ec.generate_private_key(ec.SECP256R1())
            req = make_signed(
                Op.PUT,
                "lola",
                key=other,
                request_id=1,
                timestamp_ms=int((time.time() + 1000) * 1000),
                nonce=secrets.token_bytes(16),
                ttl=3600,
                value=b"other",
            )
            assert (await exchange(srv.port, encode_request(req))).status == Status.OK
            offset[0] = 0.0
            caplog.set_level(logging.ERROR)
            deadline = time.monotonic() + 10
            while "lola" in names._refresh:
                assert time.monotonic() < deadline, "still refreshing a lost name"
                await asyncio.sleep(0.1)
            assert "lost the name" in caplog.text
            assert await on_server(srv.port, "lola") == b"other"
