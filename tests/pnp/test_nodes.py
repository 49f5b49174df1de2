"""End to end: nodes register nicknames on a local PNP server and connect by name."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.pnp.name_checks import assert_connects_by_name, name_clash_at_start
from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.errors import UnavailableError
from warpgate.plugin import hookimpl
from warpgate.pnp.client import NameTakenError
from warpgate.pnp.server import PnpServer
from warpgate_plugins.pnp import PnpNames, tld_for


def conf(name: str, port: int | None, **extra: Any) -> dict[str, Any]:
    servers = [f"127.0.0.1:{port}"] if port else []
    return dict_child(
        {
            "identity_name": name,
            "enable_nickname": True,
            "pnp_servers": servers,
            "pnp_timeout": 2.0,
            **extra,
        },
        NODE_TEST_CONF,
    )


@pytest.fixture
def server(sqlite_server: PnpServer) -> PnpServer:
    """Node behaviour does not depend on the store: one (SQLite) is enough here."""
    return sqlite_server


async def test_connect_by_nickname(server: PnpServer) -> None:
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("alice", server.port)) as a,
        Node(ip="127.0.0.1", port=0, conf=conf("bob", server.port)) as b,
    ):
        await a.start()
        await b.start()
        assert a.phase_results["setup_nickname_service"] == "alice.p2p"
        assert b.phase_results["setup_nickname_service"] == "bob.p2p"
        await assert_connects_by_name(b, a, "alice.p2p")
        # a bare name resolves too
        assert await b.name_services["pnp"].resolve("alice") == a.address()
        # bob's key cannot take alice's name
        with pytest.raises(NameTakenError, match="another key"):
            await b.nickname("alice")
        assert await b.name_services["pnp"].resolve("Alice.P2P") == a.address()
        # a name of another server set is not ours
        with pytest.raises(LookupError):
            await b.name_services["pnp"].resolve("alice.peer")


async def test_taken_name_during_start_does_not_fail_start(
    server: PnpServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # another keystore, so another key under the same identity name
    clash = conf("alice", server.port, install_path=str(tmp_path / "elsewhere"))
    async with name_clash_at_start(conf("alice", server.port), clash, caplog, "p2p"):
        pass


async def test_no_servers_means_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with Node(ip="127.0.0.1", port=0, conf=conf("dave", None)) as d:
        await d.start()
        assert d.phase_results["setup_nickname_service"] == ""
        assert "pnp_servers" in caplog.text
        with pytest.raises(UnavailableError, match="pnp_servers"):
            await d.nickname("dave")


async def test_unreachable_server_does_not_block_start(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.WARNING)
    async with Node(ip="127.0.0.1", port=0, conf=conf("erin", port, pnp_timeout=0.5)) as e:
        await e.start()
        assert e.phase_results["setup_nickname_service"] == ""
        assert "not registered" in caplog.text


def test_tld_mapping() -> None:
    assert tld_for([("a", 1)]) == "p2p"
    assert tld_for([("a", 1), ("b", 2)]) == "peer"
    assert PnpNames.name == "pnp"


class _AddressChangesAfterRegistration:
    """Stands for what phase 12 does on a real network (STUN and port mappings land in
    the address after the nickname was registered in phase 10)."""

    @hookimpl(tryfirst=True)
    async def warpgate_setup_traversal_plugins(self, node: Node) -> None:
        from warpgate.sansio.address import Hint, HintKind
        from warpgate_plugins.address import encode_address

        node.address_hints.append(Hint(HintKind.SIGNAL, "mqtt://198.51.100.7:1883"))
        node.addr_bytes = encode_address(node)
        # None: the built-in phase 11 still runs


async def test_the_record_gets_the_final_address(server: PnpServer) -> None:
    async with (
        Node(
            ip="127.0.0.1",
            port=0,
            conf=conf("carol", server.port),
            plugins=[_AddressChangesAfterRegistration()],
        ) as c,
        Node(ip="127.0.0.1", port=0, conf=conf("dan", server.port)) as d,
    ):
        await c.start()
        await d.start()
        async with asyncio.timeout(5):
            while await d.name_services["pnp"].resolve("carol") != c.address():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert b"198.51.100.7" in await d.name_services["pnp"].resolve("carol")
