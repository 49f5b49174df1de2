"""Claims about names (docs/security.md, "Names"): a name belongs to the first key that
registers it; signed requests cannot be replayed; one client's quota and request rate
are capped.  Real PNP server on 127.0.0.1 (SQLite store) and real nodes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pnp.conftest import exchange
from tests.pnp.test_nodes import conf as node_conf
from tests.pnp.test_server import signed
from warpgate import Node, auto_connect
from warpgate.pnp.client import NameTakenError
from warpgate.pnp.server import PnpServer
from warpgate.pnp.store import open_store
from warpgate.sansio.pnp import Op, Status, encode_request, make_get


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PnpServer]:
    async with PnpServer(open_store(tmp_path / "names.db"), port=0) as srv:
        yield srv


async def test_name_hijack_is_refused(server: PnpServer, tmp_path: Path) -> None:
    """Mallory, with her own key, can neither take, overwrite nor delete Alice's name,
    and connecting to the name still reaches Alice."""
    async with Node(ip="127.0.0.1", port=0, conf=node_conf("alice", server.port)) as alice:
        await alice.start()
        assert alice.phase_results["setup_nickname_service"] == "alice.p2p"
        mallory_conf = node_conf("alice", server.port, install_path=str(tmp_path / "mallory"))
        async with Node(ip="127.0.0.1", port=0, conf=mallory_conf) as mallory:
            await mallory.start()
            assert mallory.public_key != alice.public_key
            with pytest.raises(NameTakenError):
                await mallory.nickname("alice")
            raw_key = ec.generate_private_key(ec.SECP256R1())
            resp = await exchange(server.port, signed(raw_key, "alice", mallory.address()))
            assert resp.status == Status.NAME_TAKEN
            resp = await exchange(server.port, signed(raw_key, "alice", b"", op=Op.DELETE))
            assert resp.status == Status.NAME_TAKEN
            assert await mallory.name_services["pnp"].resolve("alice.p2p") == alice.address()
            link, _ = await auto_connect(mallory, "alice.p2p", timeout=10)
            assert link.remote_key == alice.public_key
            await link.close()


async def test_replayed_name_registration_is_refused(server: PnpServer) -> None:
    """A captured PUT (or DELETE) sent again is refused, so an eavesdropper cannot undo a
    later change by replaying an earlier one."""
    key = ec.generate_private_key(ec.SECP256R1())
    first = signed(key, "carol", b"address-1")
    assert (await exchange(server.port, first)).status == Status.OK
    await asyncio.sleep(0.01)
    assert (await exchange(server.port, signed(key, "carol", b"address-2"))).status == Status.OK
    assert (await exchange(server.port, first)).status == Status.REPLAY
    resp = await exchange(server.port, encode_request(make_get("carol", 5)))
    assert resp.value == b"address-2"


async def test_one_client_cannot_exhaust_the_name_space(tmp_path: Path) -> None:
    async with PnpServer(open_store(tmp_path / "q.db"), port=0, names_per_ip=5) as srv:
        statuses = []
        for i in range(8):
            key = ec.generate_private_key(ec.SECP256R1())  # a fresh key per name: no help
            statuses.append((await exchange(srv.port, signed(key, f"squat{i}", b"x"))).status)
        assert statuses[:5] == [Status.OK] * 5
        assert set(statuses[5:]) == {Status.QUOTA}


async def test_one_client_request_rate_is_capped(tmp_path: Path) -> None:
    async with PnpServer(open_store(tmp_path / "r.db"), port=0, rate=2.0, burst=5) as srv:
        statuses = [
            (await exchange(srv.port, encode_request(make_get("x", i)))).status for i in range(6)
        ]
        assert statuses == [Status.NOT_FOUND] * 5 + [Status.RATE_LIMITED]


async def test_rate_limited_udp_requests_are_not_all_answered(tmp_path: Path) -> None:
    """Over the rate, a UDP client (whose source address may be forged) gets at most one
    answer a second, so the server cannot be used to reflect traffic at a victim."""
    async with PnpServer(open_store(tmp_path / "f.db"), port=0, rate=2.0, burst=5) as srv:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
            victim.bind(("127.0.0.1", 0))
            victim.setblocking(False)
            for i in range(200):
                victim.sendto(b"\x01", ("127.0.0.1", srv.port))  # 1 byte, malformed
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            answers = []
            while True:
                try:
                    answers.append(victim.recv(2048))
                except BlockingIOError:
                    break
        # the burst (5 answers) plus at most one refusal: not 200 answers
        assert 5 <= len(answers) <= 6, len(answers)
        assert sum(len(a) for a in answers) <= 6 * 80  # bounded by the rate, not the flood
