"""TCP hole punching (simultaneous open) across the lab's NATs: every pair of NAT modes
that TCP can punch, in both directions, with ``tcp_punch`` alone and with every method
competing; recording which method connected.

What TCP can punch (``warpgate.sansio.punch_plan``): both mappings predictable.  The
lab's full and address-restricted cones are UDP constructions, so TCP through them is
port-restricted (EIM, APDF) and simultaneous open gets through; ``symmetric``
(``masquerade fully-random``) gives every flow a random port, so nothing can be aimed
at it and ``tcp_punch`` offers no candidate at all (a relay's job; see test_turn_lab).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import re
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.lab.punch_helpers import node_conf, open_fds, run_pair
from warpgate import Node, auto_connect
from warpgate.connect import ConnectError
from warpgate.lab import Host, Router, Topology, two_nat
from warpgate.lab.topology import NatMode
from warpgate.testing.pytest_plugin import require_lab

pytestmark = pytest.mark.lab

PUNCHABLE = ("open", "full-cone", "address-restricted", "port-restricted")
CELLS = list(itertools.combinations_with_replacement(PUNCHABLE, 2))
ONLY_PUNCH: dict[str, Any] = {"transport": "tcp", "methods": ["tcp_punch"], "timeout": 10}
EVERY_METHOD: dict[str, Any] = {"transport": "tcp", "timeout": 10}


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "--".join(c))
async def test_tcp_punch_connects_every_punchable_pair(
    lab_factory: Any, cell: tuple[str, str]
) -> None:
    lab = lab_factory(two_nat(cell[0], cell[1], upnp=False), servers=True)
    # a -> b twice (tcp_punch alone, then every method competing), then b -> a: three
    # tries per cell, both roles of the pair, fresh nodes for each direction.
    _served, forward = await run_pair(lab, [ONLY_PUNCH, EVERY_METHOD])
    _served, backward = await run_pair(lab, [ONLY_PUNCH], server_host="a", client_host="b")
    print(
        f"\n{cell[0]:>18} <-> {cell[1]:<18}",
        [(r["method"], r["seconds"]) for r in forward + backward],
    )
    for result in [forward[0], *backward]:
        assert result["ok"], result
        assert result["method"] == "tcp_punch", result
        assert "(direct)" in result["path"], result
    competing = forward[1]
    assert competing["ok"], competing
    if "open" not in cell:
        # Neither side can be dialled and neither can dial back: punching must win.
        assert competing["method"] == "tcp_punch", competing


async def _no_candidate(stun: str, address: bytes) -> dict[str, Any]:
    async with Node(port=0, conf=node_conf("asker", stun)) as node:
        await node.start()
        begin = time.monotonic()
        try:
            await auto_connect(node, address, **ONLY_PUNCH)
            outcome = "connected?!"
        except ConnectError as exc:
            outcome = str(exc)
        return {"outcome": outcome, "took": time.monotonic() - begin}


async def _address_of(stun: str) -> bytes:
    async with Node(port=0, conf=node_conf("target", stun)) as node:
        await node.start()
        return node.address()


@pytest.mark.parametrize("other", ["port-restricted", "symmetric"])
async def test_a_symmetric_nat_gets_no_tcp_punch_attempt(lab_factory: Any, other: str) -> None:
    """Documented: TCP cannot be aimed at random ports; the method steps aside at once
    (no offer is sent), so auto_connect goes on to a relay without waiting."""
    lab = lab_factory(two_nat("symmetric", other, upnp=False), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address = await lab.arun("b", _address_of, stun, timeout=30)
    asked = await lab.arun("a", _no_candidate, stun, address, timeout=30)
    assert "connected" not in asked["outcome"], asked
    assert "tcp_punch" not in asked["outcome"] or "failed" not in asked["outcome"], asked
    assert asked["took"] < 1.0, asked


def test_routers_drop_unsolicited_tcp_unless_built_to_reset(lab_factory: Any) -> None:
    """What simultaneous open meets at the NAT that has not sent yet: the lab's routers
    drop a SYN no mapping claims (as most home routers do); ``tcp_reset=True`` builds
    the reset-answering variant (a bare Linux masquerade box)."""
    topo = Topology(
        routers=(
            Router("nat_a", NatMode.PORT_RESTRICTED),
            Router("nat_b", NatMode.PORT_RESTRICTED, tcp_reset=True),
        ),
        hosts=(Host("a", "nat_a"), Host("b", "nat_b"), Host("pub")),
    )
    lab = lab_factory(topo, servers=False)
    outcome = {}
    for router in ("nat_a", "nat_b"):
        with lab.socket("pub", type=socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((lab.wan_address(router), 40123))
                outcome[router] = "connected"
            except TimeoutError:
                outcome[router] = "dropped"
            except ConnectionRefusedError:
                outcome[router] = "reset"
    assert outcome == {"nat_a": "dropped", "nat_b": "reset"}
    # The UDP behaviour is the same either way.
    assert {r.verdict for r in lab.probe(["a", "b"]).values()} == {("EIM", "APDF")}


async def _accept_two(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> list[str]:
    async with Node(port=0, conf=node_conf("srv", stun)) as node:
        await node.start()
        address.set_result(node.address())
        links = [await node.accept(timeout=15), await node.accept(timeout=15)]

        async def echo(link: Any) -> None:
            await link.send(b"echo:" + await link.recv(timeout=15))

        # Both at once: the links are accepted in whatever order the punches finished,
        # which need not be the order the other side writes to them.
        await asyncio.gather(*(echo(link) for link in links))
        await asyncio.wrap_future(done)
        return [str(link.path) for link in links]


async def _dial_two(
    stun: str, address: concurrent.futures.Future[bytes], done: concurrent.futures.Future[bool]
) -> list[tuple[str, str]]:
    try:
        async with Node(port=0, conf=node_conf("cli", stun)) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            before = open_fds()
            made = await asyncio.gather(
                auto_connect(node, peer, **ONLY_PUNCH), auto_connect(node, peer, **ONLY_PUNCH)
            )
            out = []
            for link, method in made:
                await link.send(b"hi")
                out.append((method, (await link.recv(timeout=15)).decode()))
                await link.close("done")
            await asyncio.sleep(0.2)
            assert open_fds() <= before
            return out
    finally:
        done.set_result(True)


async def test_two_punched_links_to_one_peer_at_once(lab_factory: Any) -> None:
    """Each session has its own port, so two punches between the same two nodes at the
    same time get two connections (one 4-tuple per node pair could carry only one)."""
    lab = lab_factory(two_nat("port-restricted", "port-restricted", upnp=False), servers=True)
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    served, dialled = await asyncio.gather(
        lab.arun("b", _accept_two, stun, address, done, timeout=60),
        lab.arun("a", _dial_two, stun, address, done, timeout=60),
    )
    assert dialled == [("tcp_punch", "echo:hi")] * 2
    assert len(set(served)) == 2, served  # two distinct connections


def test_lab_cli_builds_the_reset_variant() -> None:
    """``warpgate lab up --tcp-reset ROUTER`` (the documented way to get it by hand)."""
    require_lab(servers=False)
    argv = [sys.executable, "-m", "warpgate.lab.cli", "lab"]
    up = subprocess.run(
        [*argv, "up", "two-nat", "--no-servers", "--no-probe", "--tcp-reset", "nat_b"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"lab (wgl[0-9a-f]{6}) up", up.stdout)
    assert match, up.stdout + up.stderr
    prefix = match.group(1)
    try:
        assert "TCP reset" in up.stdout
        status = subprocess.run(
            [*argv, "status", "--json", "--no-probe", "--prefix", prefix],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        routers = json.loads(status.stdout)["routers"]
        assert (routers["nat_a"]["tcp_reset"], routers["nat_b"]["tcp_reset"]) == (False, True)
    finally:
        subprocess.run([*argv, "down", "--prefix", prefix], timeout=120, check=False)
