"""The ``hosts`` name backend: nicknames in a hosts-style file, end to end with nodes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pnp.name_checks import assert_connects_by_name, name_clash_at_start
from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.connect import resolve_destination
from warpgate.errors import UnavailableError
from warpgate.pnp.client import NameTakenError
from warpgate.pnp.server import PnpServer
from warpgate.sansio.address import parse_address
from warpgate_plugins.hosts import MAX_FILE, Entry, parse_names, sign_entry, signature_ok


def conf(name: str, names_file: Path | str, **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "identity_name": name,
            "enable_nickname": True,
            "names_file": str(names_file),
            "plugins": {"name_service": ["hosts"]},
            **extra,
        },
        NODE_TEST_CONF,
    )


async def test_connect_by_nickname(tmp_path: Path) -> None:
    names = tmp_path / "shared" / "names"
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("alice", names)) as a,
        Node(ip="127.0.0.1", port=0, conf=conf("bob", names)) as b,
    ):
        await a.start()
        await b.start()
        assert a.phase_results["setup_nickname_service"] == "alice.lan"
        assert b.phase_results["setup_nickname_service"] == "bob.lan"
        await assert_connects_by_name(b, a, "alice.lan")
        hosts = b.name_services["hosts"]
        assert await hosts.resolve("alice") == a.address()
        assert await hosts.resolve("Alice.LAN") == a.address()
        before = names.read_text()
        # bob's key cannot take alice's name; the file is unchanged
        with pytest.raises(NameTakenError, match="another key"):
            await b.nickname("alice")
        assert names.read_text() == before
        with pytest.raises(LookupError):
            await hosts.resolve("alice.p2p")
        with pytest.raises(LookupError):
            await hosts.resolve("nobody")
        # an owner may re-register (same line) and unregister
        assert await a.nickname("alice") == "alice.lan"
        assert names.read_text() == before
        await a.name_services["hosts"].unregister("alice")
        with pytest.raises(LookupError):
            await hosts.resolve("alice")
        assert await hosts.resolve("bob") == b.address()


async def test_taken_name_during_start_does_not_fail_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = tmp_path / "names"
    clash = conf("alice", names, install_path=str(tmp_path / "elsewhere"))
    async with name_clash_at_start(conf("alice", names), clash, caplog, "lan") as (a, c):
        assert await c.name_services["hosts"].resolve("alice") == a.address()


async def test_read_only_file(tmp_path: Path) -> None:
    names = tmp_path / "names"
    async with Node(ip="127.0.0.1", port=0, conf=conf("dave", names, enable_nickname=False)) as d:
        await d.start()
        # the administrator writes the file
        names.write_text(f"# site names\ndave {parse_address(d.address()).to_text()}\n")
    ro = conf("dave", names, names_file_writable=False)
    async with Node(ip="127.0.0.1", port=0, conf=ro) as d:
        await d.start()
        assert d.phase_results["setup_nickname_service"] == "dave.lan"
        with pytest.raises(UnavailableError, match="read-only"):
            await d.nickname("other")
        assert "other" not in names.read_text()


async def test_signed_mode_ignores_forged_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = tmp_path / "names"
    async with (
        Node(ip="127.0.0.1", port=0, conf=conf("erin", names, names_file_signed=True)) as e,
        Node(ip="127.0.0.1", port=0, conf=conf("fay", names, names_file_signed=True)) as f,
    ):
        await e.start()
        await f.start()
        hosts = f.name_services["hosts"]
        assert await hosts.resolve("erin") == e.address()
        erin = parse_address(e.address())
        # someone with write access claims names for erin's key without her signature
        assert f.private_key is not None
        forged = sign_entry("boss", erin, f.private_key)  # signed by the wrong key
        with names.open("a") as out:
            out.write(forged.line())
            out.write(f"ceo {erin.to_text()}\n")  # unsigned
        caplog.set_level(logging.WARNING)
        for name in ("boss", "ceo"):
            with pytest.raises(LookupError):
                await hosts.resolve(name)
        assert "not signed by its key" in caplog.text
        assert await hosts.resolve("erin") == e.address()


async def test_bad_lines_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = tmp_path / "names"
    async with Node(ip="127.0.0.1", port=0, conf=conf("gus", names)) as g:
        await g.start()
        with names.open("a") as out:
            out.write("just-a-name\n-bad- wg1aaaa\nx wg1notanaddress\ny z sig=00\n\x00\xff\n")
        caplog.set_level(logging.WARNING)
        hosts = g.name_services["hosts"]
        assert await hosts.resolve("gus") == g.address()
        assert "ignored" in caplog.text
        # a registration keeps the other lines (comments and all)
        assert await g.nickname("gus2") == "gus2.lan"
        assert "just-a-name" in names.read_text()


async def test_concurrent_registrations_all_land(tmp_path: Path) -> None:
    names = tmp_path / "names"
    async with Node(ip="127.0.0.1", port=0, conf=conf("h", names, enable_nickname=False)) as h:
        await h.start()
        got = await asyncio.gather(*(h.nickname(f"n{i}") for i in range(20)))
        assert got == [f"n{i}.lan" for i in range(20)]
        entries = parse_names(names.read_text())
        assert sorted(entries) == sorted(f"n{i}" for i in range(20))
        assert all(signature_ok(x) for x in entries.values())


async def test_unconfigured(tmp_path: Path, sqlite_server: PnpServer) -> None:
    # selected explicitly but with no file: a clear error
    async with Node(ip="127.0.0.1", port=0, conf=conf("ivy", "")) as n:
        await n.start()
        with pytest.raises(UnavailableError, match="names_file"):
            await n.nickname("ivy")
    # installed but not configured, beside pnp (the default selection): quiet, and
    # node.nickname gives pnp's name
    both = dict_child(
        {
            "identity_name": "ivy",
            "enable_nickname": True,
            "pnp_servers": [f"127.0.0.1:{sqlite_server.port}"],
        },
        NODE_TEST_CONF,
    )
    async with Node(ip="127.0.0.1", port=0, conf=both) as n:
        await n.start()
        assert set(n.name_services) >= {"hosts", "pnp"}
        assert n.phase_results["setup_nickname_service"] == "ivy.p2p"
        # the inactive backend does not get in the way of a lookup
        found = await resolve_destination(n, "ivy.p2p")
        assert found == parse_address(n.address())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parse_never_raises(text: str) -> None:
    for entry in parse_names(text).values():
        assert isinstance(entry, Entry)


async def test_oversized_file_is_refused(tmp_path: Path) -> None:
    names = tmp_path / "names"
    names.write_bytes(b"# padding\n" * (MAX_FILE // 10 + 1))
    async with Node(ip="127.0.0.1", port=0, conf=conf("ola", names, enable_nickname=False)) as o:
        await o.start()
        with pytest.raises(UnavailableError, match="over"):
            await o.name_services["hosts"].resolve("anyone")
        with pytest.raises(UnavailableError, match="over"):
            await o.nickname("ola")
        assert names.stat().st_size > MAX_FILE  # untouched


async def test_gate_finds_a_peer_by_bare_name(tmp_path: Path) -> None:
    """``peer.find("alice")`` works whatever the backend's TLD (here ``.lan``)."""
    from warpgate import Gate

    names = tmp_path / "names"
    async with (
        Gate("alice", conf("alice", names), ip="127.0.0.1", port=0) as alice,
        Gate("bob", conf("bob", names), ip="127.0.0.1", port=0) as bob,
    ):
        link = await bob.connect(bob.peer.find("alice"))
        try:
            assert link.remote_key == alice.node.public_key
        finally:
            await link.close()
