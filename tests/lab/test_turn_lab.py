"""The ``turn`` traversal method through real NATs in the lab, against the lab's coturn
(long-term credentials): symmetric <-> symmetric connects by relay, chosen first because
both NATs are symmetric; wrong credentials and a relay that goes away are clear errors in
bounded time."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import time
from typing import Any

import pytest

from warpgate import ConnectError, Node, auto_connect
from warpgate.testing.turn_conf import turn_conf

pytestmark = pytest.mark.lab

TIMEOUT = 20.0
SECRET = b"relayed end to end"


async def serve(
    lab: Any,
    name: str,
    address_out: concurrent.futures.Future[bytes],
    extra_conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    async with Node(port=0, conf=turn_conf(lab, name, **(extra_conf or {}))) as node:
        await node.start()
        address_out.set_result(node.address())
        link = await node.accept(timeout=TIMEOUT)
        msg = await link.recv(timeout=TIMEOUT)
        await link.send(b"echo:" + msg)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await link.recv(timeout=TIMEOUT)  # until the dialler closes
        return {
            "path": str(link.path),
            "kind": link.path.kind,
            "nat": _nat(node),
            "transport": link.path.transport,
        }


def _nat(node: Node) -> list[str]:
    return sorted(r.nat_type.name for r in node.nat_reports.values())


async def dial(
    lab: Any, name: str, address_in: concurrent.futures.Future[bytes], extra: dict[str, Any]
) -> dict[str, Any]:
    async with Node(port=0, conf=turn_conf(lab, name, **extra.pop("conf", {}))) as node:
        await node.start()
        address = await asyncio.wrap_future(address_in)
        begin = time.monotonic()
        extra.setdefault("transport", "udp")
        try:
            link, method = await auto_connect(node, address, timeout=TIMEOUT, **extra)
        except ConnectError as exc:
            return {"error": str(exc), "took": time.monotonic() - begin}
        took = time.monotonic() - begin
        await link.send(SECRET)
        echo = await link.recv(timeout=TIMEOUT)
        out = {
            "transport": link.path.transport,
            "method": method,
            "kind": link.path.kind,
            "echo": echo,
            "took": took,
            "nat": _nat(node),
            "trace": [a.describe() for a in link.trace],
            "first": link.trace[0].method,
        }
        await link.close()
        return out


async def _pair(lab: Any, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    serve_conf = extra.pop("serve_conf", None)
    served, dialled = await asyncio.gather(
        lab.arun("b", serve, lab, "srv", address, serve_conf, timeout=60),
        lab.arun("a", dial, lab, "cli", address, extra, timeout=60),
    )
    return served, dialled


async def test_symmetric_to_symmetric_connects_through_the_relay_first(lab_factory: Any) -> None:
    lab = lab_factory(("symmetric", "symmetric"))
    served, dialled = await _pair(lab)
    assert dialled.get("error") is None, dialled
    assert dialled["nat"] == ["SYMMETRIC"] and served["nat"] == ["SYMMETRIC"]
    assert dialled["method"] == "turn" and dialled["kind"] == "relay", dialled["trace"]
    assert dialled["first"] == "turn", "both NATs symmetric: the relay starts at once"
    assert dialled["echo"] == b"echo:" + SECRET
    assert served["kind"] == "relay"
    # Bob talks to the relay, never to Alice's NAT.
    assert lab.servers["stun"]["host"] in served["path"]


async def test_symmetric_to_symmetric_over_tcp_through_the_relay(lab_factory: Any) -> None:
    """The default transport (TCP): RFC 6062 relaying gives a stream link."""
    lab = lab_factory(("symmetric", "symmetric"))
    served, dialled = await _pair(lab, transport="tcp")
    assert dialled.get("error") is None, dialled
    assert dialled["method"] == "turn" and dialled["kind"] == "relay", dialled["trace"]
    assert dialled["transport"] == "tcp" and served["transport"] == "tcp"
    assert dialled["first"] == "turn"
    assert dialled["echo"] == b"echo:" + SECRET
    assert served["kind"] == "relay"


async def test_udp_blocked_reaches_a_symmetric_peer_through_the_tcp_relay(lab_factory: Any) -> None:
    """UDP does not get out of a's network at all: the TCP allocation (RFC 6062) over a
    TCP control connection still relays a stream link to a peer behind a symmetric NAT."""
    lab = lab_factory(("udp-blocked", "symmetric"))
    served, dialled = await _pair(lab, transport="tcp")
    print("udp-blocked -> symmetric:", dialled.get("took"), dialled.get("trace"))
    assert dialled.get("error") is None, dialled
    assert dialled["method"] == "turn" and dialled["kind"] == "relay", dialled["trace"]
    assert dialled["transport"] == "tcp"
    assert dialled["echo"] == b"echo:" + SECRET
    assert served["kind"] == "relay"


async def test_peers_without_stun_tell_the_relay_their_address(lab_factory: Any) -> None:
    """No STUN: node addresses carry no external address, so the offerer cannot know
    which address to permit; the peer asks the TURN server and answers the offer."""
    lab = lab_factory(("symmetric", "port-restricted"))
    no_stun = {"enable_stun_clients": False}
    served, dialled = await _pair(lab, methods=["turn"], conf=no_stun, serve_conf=no_stun)
    assert dialled.get("error") is None, dialled
    assert "peer's address asked" in dialled["trace"][0]
    assert dialled["kind"] == "relay" and served["kind"] == "relay"
    assert dialled["echo"] == b"echo:" + SECRET


async def test_wrong_credentials_fail_clearly_in_bounded_time(lab_factory: Any) -> None:
    lab = lab_factory(("symmetric", "symmetric"))
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()

    async def hold(lab: Any, name: str) -> None:
        async with Node(port=0, conf=turn_conf(lab, name)) as node:
            await node.start()
            address.set_result(node.address())
            await asyncio.sleep(8)

    extra = {"methods": ["turn"], "conf": {"turn_password": "not-it"}}
    _held, dialled = await asyncio.gather(
        lab.arun("b", hold, lab, "held", timeout=30),
        lab.arun("a", dial, lab, "cli", address, extra, timeout=30),
    )
    assert "rejected the credentials" in dialled["error"]
    assert dialled["took"] < 5


async def test_relay_going_away_closes_the_link_with_a_reason(lab_factory: Any) -> None:
    lab = lab_factory(("symmetric", "symmetric"))
    pid = lab.servers["stun"]["pid"]
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    connected: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def hold(lab: Any, name: str) -> None:
        async with Node(port=0, conf=turn_conf(lab, name)) as node:
            await node.start()
            address.set_result(node.address())
            link = await node.accept(timeout=TIMEOUT)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await link.recv(timeout=TIMEOUT)

    async def use(lab: Any, name: str) -> dict[str, Any]:
        extra = {"turn_keepalive": 1.0, "turn_timeout": 2.0}
        async with Node(port=0, conf=turn_conf(lab, name, **extra)) as node:
            await node.start()
            link, _ = await auto_connect(
                node,
                await asyncio.wrap_future(address),
                methods=["turn"],
                transport="udp",
                timeout=TIMEOUT,
            )
            connected.set_result(None)
            await asyncio.sleep(0.5)  # the relay is stopped meanwhile
            begin = time.monotonic()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await link.recv(timeout=10)
            return {
                "closed": link.closed,
                "reason": link._close_reason,
                "took": time.monotonic() - begin,
            }

    async def stop_relay() -> None:
        await asyncio.wrap_future(connected)
        os.kill(pid, signal.SIGTERM)

    _held, used, _ = await asyncio.gather(
        lab.arun("b", hold, lab, "held", timeout=40),
        lab.arun("a", use, lab, "user", timeout=40),
        stop_relay(),
    )
    assert used["closed"] and "relay lost" in used["reason"], used
    assert used["took"] < 7  # keepalive 1 s + request timeout 2 s, and slack for load


async def test_allocation_quota_reached_is_a_clear_error(lab_factory: Any, tmp_path: Any) -> None:
    """A second coturn, on the public host ``pub``, allows one allocation per user: the
    first relayed link takes it, a second connect fails at once saying so."""
    from warpgate.stun import StunUnavailable, stun_binding
    from warpgate.turn.coturn import find_turnserver, write_config

    lab = lab_factory(("symmetric", "symmetric"))
    stun = lab.servers["stun"]
    ip, port = lab.address("pub"), 3479
    config = write_config(
        tmp_path,
        ip=ip,
        port=port,
        username=stun["username"],
        password=stun["password"],
        realm=stun["realm"],
        user_quota=1,
    )
    lab.spawn("pub", [find_turnserver(), "-c", str(config)])

    async def wait_ready() -> bool:
        for _ in range(100):  # bounded: about 10 s
            try:
                await stun_binding((ip, port), timeout=0.1)
                return True
            except StunUnavailable:
                await asyncio.sleep(0.05)
        return False

    assert await lab.arun("a", wait_ready, timeout=30), "the quota coturn did not start"
    quota_conf = {"turn_servers": [f"{ip}:{port}"]}
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    finished: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def hold(lab: Any, name: str) -> None:
        async with Node(port=0, conf=turn_conf(lab, name, **quota_conf)) as node:
            await node.start()
            address.set_result(node.address())
            await asyncio.wait_for(asyncio.wrap_future(finished), 30)

    async def twice(lab: Any, name: str) -> dict[str, Any]:
        try:
            return await _twice(lab, name)
        finally:
            finished.set_result(None)

    async def _twice(lab: Any, name: str) -> dict[str, Any]:
        async with Node(port=0, conf=turn_conf(lab, name, **quota_conf)) as node:
            await node.start()
            peer = await asyncio.wrap_future(address)
            link, _ = await auto_connect(
                node, peer, methods=["turn"], transport="udp", timeout=TIMEOUT
            )
            begin = time.monotonic()
            try:
                await auto_connect(node, peer, methods=["turn"], transport="udp", timeout=TIMEOUT)
            except ConnectError as exc:
                return {
                    "first": link.path.kind,
                    "error": str(exc),
                    "took": time.monotonic() - begin,
                }
            return {"first": link.path.kind, "error": "", "took": 0.0}

    _held, out = await asyncio.gather(
        lab.arun("b", hold, lab, "held", timeout=40),
        lab.arun("a", twice, lab, "cli", timeout=40),
    )
    assert out["first"] == "relay"
    assert "486 allocation quota reached" in out["error"], out
    assert out["took"] < 3
