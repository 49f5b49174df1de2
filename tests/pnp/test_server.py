"""The PNP server: ownership, signatures, replay, limits, durability."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pnp.conftest import Stores, exchange
from warpgate.net.scope import client_key
from warpgate.pnp.client import NameTakenError, PnpClient, PnpRequestError, PnpUnreachableError
from warpgate.pnp.server import PnpServer, RateLimiter
from warpgate.pnp.store import SqliteStore
from warpgate.sansio.pnp import (
    MAX_VALUE,
    Op,
    Request,
    Status,
    decode_response,
    encode_request,
    make_get,
    make_signed,
)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


_last_ms = [0]


def _now_ms() -> int:
    # strictly increasing, like the real client: each update is newer than the last
    _last_ms[0] = max(int(time.time() * 1000), _last_ms[0] + 1)
    return _last_ms[0]


def signed(
    key: ec.EllipticCurvePrivateKey,
    name: str = "alice",
    value: bytes = b"addr-a",
    *,
    op: Op = Op.PUT,
    ts: float | None = None,
    nonce: bytes | None = None,
) -> bytes:
    return encode_request(
        make_signed(
            op,
            name,
            key=key,
            request_id=secrets.randbits(32),
            timestamp_ms=_now_ms() if ts is None else int(ts * 1000),
            nonce=nonce or secrets.token_bytes(16),
            ttl=3600 if op == Op.PUT else 0,
            value=value if op == Op.PUT else b"",
        )
    )


async def lookup(server: PnpServer, name: str) -> bytes | None:
    resp = await exchange(server.port, encode_request(make_get(name, 1)))
    return resp.value if resp.status == Status.OK else None


async def still_serving(server: PnpServer) -> None:
    resp = await exchange(server.port, encode_request(make_get("nobody", 2)))
    assert resp.status == Status.NOT_FOUND


async def test_register_and_resolve(server: PnpServer) -> None:
    key = new_key()
    resp = await exchange(server.port, signed(key))
    assert resp.status == Status.OK, resp.message
    assert resp.expires_ms > time.time() * 1000
    got = await exchange(server.port, encode_request(make_get("alice", 3)))
    assert (got.status, got.value, got.request_id) == (Status.OK, b"addr-a", 3)
    # the owner may update its record
    assert (await exchange(server.port, signed(key, value=b"addr-2"))).status == Status.OK
    assert await lookup(server, "alice") == b"addr-2"
    # and delete it
    assert (await exchange(server.port, signed(key, op=Op.DELETE))).status == Status.OK
    assert await lookup(server, "alice") is None


async def test_another_key_is_rejected(server: PnpServer) -> None:
    owner, thief = new_key(), new_key()
    assert (await exchange(server.port, signed(owner))).status == Status.OK
    resp = await exchange(server.port, signed(thief, value=b"evil"))
    assert resp.status == Status.NAME_TAKEN
    assert await lookup(server, "alice") == b"addr-a"
    assert (await exchange(server.port, signed(thief, op=Op.DELETE))).status == Status.NAME_TAKEN
    assert await lookup(server, "alice") == b"addr-a"
    await still_serving(server)


async def test_wrong_signature(server: PnpServer) -> None:
    data = bytearray(signed(new_key()))
    data[-1] ^= 0xFF
    resp = await exchange(server.port, bytes(data))
    assert resp.status == Status.BAD_SIGNATURE
    assert await lookup(server, "alice") is None
    await still_serving(server)


async def test_replay_and_stale(server: PnpServer) -> None:
    key = new_key()
    first = signed(key)
    assert (await exchange(server.port, first)).status == Status.OK
    assert (await exchange(server.port, first)).status == Status.REPLAY
    old = signed(key, value=b"old", ts=time.time() - 3600)
    assert (await exchange(server.port, old)).status == Status.STALE
    future = signed(key, value=b"future", ts=time.time() + 3600)
    assert (await exchange(server.port, future)).status == Status.STALE
    # a fresh nonce but a timestamp not newer than the stored record
    again = signed(key, value=b"older", ts=time.time() - 10)
    assert (await exchange(server.port, again)).status == Status.STALE
    assert await lookup(server, "alice") == b"addr-a"
    await still_serving(server)


async def test_oversized_and_malformed(server: PnpServer) -> None:
    key = new_key()
    good = signed(key, value=bytes(MAX_VALUE))
    assert (await exchange(server.port, good)).status == Status.OK
    # a value length over the limit (the packet is not otherwise valid either)
    big = bytearray(signed(key, "bob", value=b"x"))
    big_packet = bytes(big[:-67]) + (MAX_VALUE + 1).to_bytes(2, "big") + bytes(MAX_VALUE + 65)
    resp = await exchange(server.port, big_packet)
    assert resp.status == Status.TOO_LARGE
    resp = await exchange(server.port, bytes(3000))
    assert resp.status in (Status.TOO_LARGE, Status.BAD_VERSION)
    # asyncio does not send empty datagrams; ask the handler directly
    assert decode_response(await server.handle(b"", "127.0.0.1")).status == Status.MALFORMED
    for junk in (b"\x01", b"\x01\x02\x00\x00\x00\x09\x05ALICE", b"\x01\x07" + bytes(10)):
        resp = await exchange(server.port, junk)
        assert resp.status == Status.MALFORMED
    assert (await exchange(server.port, b"\x02" + bytes(20))).status == Status.BAD_VERSION
    assert await lookup(server, "bob") is None
    await still_serving(server)


async def test_quota(stores: Stores) -> None:
    async with PnpServer(await stores.new(), port=0, names_per_ip=3) as server:
        key = new_key()
        for i in range(3):
            assert (await exchange(server.port, signed(key, f"n{i}"))).status == Status.OK
        resp = await exchange(server.port, signed(key, "n3"))
        assert resp.status == Status.QUOTA
        assert await lookup(server, "n3") is None
        # updating a name already held is not a new name
        assert (await exchange(server.port, signed(key, "n0", b"new"))).status == Status.OK
        await still_serving(server)


async def test_rate_limit(tmp_path: Path) -> None:
    async with PnpServer(SqliteStore(tmp_path / "r.db"), port=0, rate=1.0, burst=3) as server:
        statuses = [
            (await exchange(server.port, encode_request(make_get("x", i)))).status for i in range(4)
        ]
        assert statuses == [Status.NOT_FOUND] * 3 + [Status.RATE_LIMITED]
        # Over UDP a client is told once a second, then ignored (no reflection).
        with pytest.raises(TimeoutError):
            await exchange(server.port, encode_request(make_get("x", 9)), timeout=0.3)
        await asyncio.sleep(1.1)
        await still_serving(server)


def test_rate_limiter_and_client_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_clients=2)
    assert limiter.allow("a", 0) and limiter.allow("a", 0)
    assert not limiter.allow("a", 0)
    assert limiter.allow("a", 1.0)
    # the clock steps back an hour: the client is not locked out for that hour
    assert not limiter.allow("a", -3600.0)
    assert limiter.allow("a", -3599.0)
    limiter.allow("b", 0)
    limiter.allow("c", 0)
    assert "a" not in limiter._buckets
    assert client_key("2001:db8::1") == client_key("2001:db8::2") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"


async def test_expiry_and_pruning(stores: Stores) -> None:
    clock = [time.time()]
    store = await stores.new()
    async with PnpServer(store, port=0, min_ttl=1, clock=lambda: clock[0]) as server:
        key, other = new_key(), new_key()
        req = make_signed(
            Op.PUT,
            "ephemeral",
            key=key,
            request_id=1,
            timestamp_ms=int(clock[0] * 1000),
            nonce=secrets.token_bytes(16),
            ttl=5,
            value=b"v",
        )
        assert (await exchange(server.port, encode_request(req))).status == Status.OK
        assert await lookup(server, "ephemeral") == b"v"
        clock[0] += 6
        assert await lookup(server, "ephemeral") is None
        # once expired the name is free for another key
        resp = await exchange(server.port, signed(other, "ephemeral", b"w", ts=clock[0]))
        assert resp.status == Status.OK
        clock[0] += 100_000
        assert await store.prune(int(clock[0] * 1000)) == 1


async def test_restart_keeps_acknowledged_names(stores: Stores) -> None:
    first = await stores.new()
    key = new_key()
    async with PnpServer(first, port=0) as server:
        assert (await exchange(server.port, signed(key, "keeper", b"v1"))).status == Status.OK
        # the database crashes right after the acknowledgement (PostgreSQL: immediate
        # stop, WAL replay on start); the server process stops too
        stores.crash()
    async with PnpServer(stores.same(first), port=0) as server:
        assert await lookup(server, "keeper") == b"v1"
        assert (await exchange(server.port, signed(new_key(), "keeper"))).status == (
            Status.NAME_TAKEN
        )


async def test_client_over_udp_and_tcp(server: PnpServer) -> None:
    client = PnpClient([("127.0.0.1", server.port)], timeout=2.0)
    key = new_key()
    await client.put("Carol", b"c", key, ttl=600)
    assert (await client.get("carol")).value == b"c"
    with pytest.raises(NameTakenError):
        await client.put("carol", b"x", new_key(), ttl=600)
    # TCP only: a client whose UDP tries find nothing answers over TCP
    tcp_only = PnpClient([("127.0.0.1", server.port)], timeout=2.0, udp_tries=0)
    assert (await tcp_only.get("carol")).value == b"c"
    await client.delete("carol", key)
    with pytest.raises(LookupError):
        await client.get("carol")


async def test_client_unreachable() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = PnpClient([("127.0.0.1", port)], timeout=0.5)
    with pytest.raises(PnpUnreachableError):
        await client.get("anyone")
    assert issubclass(PnpUnreachableError, PnpRequestError)


async def test_unreachable_ipv6_server_is_named_with_brackets() -> None:
    """The error names an IPv6 server as [addr]:port, so the port stays readable."""
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    client = PnpClient([("::1", port)], timeout=0.5)
    with pytest.raises(PnpUnreachableError, match=rf"\[::1\]:{port} did not answer"):
        await client.get("anyone")


async def test_raw_request_type_is_public() -> None:
    assert Request(Op.GET, 1, "a").name == "a"
