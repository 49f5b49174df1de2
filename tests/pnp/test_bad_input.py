"""Bad input against a running PNP server, on each store: every bad request gets a
specific error status, nothing is stored, and the server keeps serving.

(The basic cases -- a wrong signature, another key's name, oversized and malformed
packets, the quota, a replay -- are in test_server.py; these are the ones around them.)
"""

from __future__ import annotations

import asyncio
import random
import secrets
import struct
import time

from cryptography.hazmat.primitives import serialization

from tests.pnp.conftest import Stores, exchange
from tests.pnp.test_server import lookup, new_key, signed, still_serving
from warpgate.pnp.server import PnpServer
from warpgate.sansio.pnp import (
    MAX_PACKET,
    Op,
    Request,
    Status,
    decode_request,
    decode_response,
    encode_request,
    make_get,
)


def _owner(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )


async def test_signature_for_other_fields(server: PnpServer) -> None:
    key, other = new_key(), new_key()
    req = decode_request(signed(key, "mallory", b"m"))
    # a valid signature, but over another name / value / owner
    for forged in (
        Request(**{**req.__dict__, "name": "victim"}),
        Request(**{**req.__dict__, "value": b"evil"}),
        Request(**{**req.__dict__, "owner": _owner(other)}),
        Request(**{**req.__dict__, "ttl": req.ttl + 1}),
    ):
        resp = await exchange(server.port, encode_request(forged))
        assert resp.status == Status.BAD_SIGNATURE, forged
    # an owner that is not a point on the curve
    bad_point = bytearray(encode_request(req))
    start = 7 + len("mallory")
    bad_point[start + 1 : start + 33] = b"\xff" * 32
    assert (await exchange(server.port, bytes(bad_point))).status in (
        Status.BAD_SIGNATURE,
        Status.MALFORMED,
    )
    for name in ("mallory", "victim"):
        assert await lookup(server, name) is None
    await still_serving(server)


async def test_replay_of_an_older_update_stores_nothing(stores: Stores) -> None:
    store = await stores.new()
    key = new_key()
    v1 = signed(key, "rita", b"v1")
    async with PnpServer(store, port=0) as server:
        assert (await exchange(server.port, v1)).status == Status.OK
        assert (await exchange(server.port, signed(key, "rita", b"v2"))).status == Status.OK
        assert (await exchange(server.port, v1)).status == Status.REPLAY
        assert await lookup(server, "rita") == b"v2"
    # after a restart the nonce cache is empty, and the store still refuses the replay
    async with PnpServer(stores.same(store), port=0) as server:
        assert (await exchange(server.port, v1)).status == Status.STALE
        assert await lookup(server, "rita") == b"v2"
        # a replayed DELETE is refused too
        delete = signed(key, "rita", op=Op.DELETE)
        assert (await exchange(server.port, delete)).status == Status.OK
        assert (await exchange(server.port, delete)).status == Status.REPLAY
        assert (await exchange(server.port, v1)).status == Status.REPLAY
        await still_serving(server)


async def test_bad_frames_over_tcp(server: PnpServer) -> None:
    async def tcp(frames: bytes) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frames)
            await writer.drain()
            answers = []
            with_timeout = asyncio.timeout(3)
            async with with_timeout:
                while True:
                    head = await reader.read(2)
                    if len(head) < 2:
                        break
                    (size,) = struct.unpack(">H", head)
                    answers.append(await reader.readexactly(size))
            return answers
        finally:
            writer.close()

    oversized = bytes([1, 2]) + bytes(MAX_PACKET + 10)
    frames = (
        struct.pack(">H", len(oversized))
        + oversized
        + struct.pack(">H", 3)
        + b"\x01\x09\x00"
        + struct.pack(">H", 0)
    )
    get = encode_request(make_get("nobody", 77))
    frames += struct.pack(">H", len(get)) + get
    # a truncated last frame: the server waits for the rest, then closes (tcp_idle)
    server.tcp_idle = 0.5
    answers = [decode_response(a) for a in await tcp(frames + struct.pack(">H", 100) + b"x")]
    assert [a.status for a in answers] == [
        Status.TOO_LARGE,
        Status.MALFORMED,
        Status.MALFORMED,
        Status.NOT_FOUND,
    ]
    assert answers[-1].request_id == 77
    await still_serving(server)


async def test_mutated_packets_never_store(server: PnpServer) -> None:
    """Random bit flips, truncations and extensions of valid signed requests: never
    OK, never stored, always one well-formed answer."""
    rng = random.Random(7)
    key = new_key()
    good = signed(key, "target", b"good")
    assert (await exchange(server.port, good)).status == Status.OK
    fresh = [signed(key, "target", bytes([i]) * 8) for i in range(20)]
    statuses: set[Status] = set()
    for i in range(300):
        packet = bytearray(rng.choice(fresh))
        kind = i % 3
        if kind == 0:
            bit = rng.randrange(len(packet) * 8)
            packet[bit // 8] ^= 1 << (bit % 8)
        elif kind == 1:
            del packet[rng.randrange(1, len(packet)) :]
        else:
            packet += secrets.token_bytes(rng.randrange(1, 40))
        # documentation addresses, spread so that the rate limit stays out of the way
        source = f"198.51.100.{i % 200}"
        reply = decode_response(await server.handle(bytes(packet), source))
        assert reply.status != Status.OK, (i, packet.hex())
        statuses.add(reply.status)
    assert {Status.BAD_SIGNATURE, Status.MALFORMED} <= statuses
    assert await lookup(server, "target") == b"good"
    await still_serving(server)


async def test_flood_of_garbage_does_not_stop_the_server(server: PnpServer) -> None:
    rng = random.Random(11)
    junk = [rng.randbytes(rng.randrange(1, 1400)) for _ in range(500)]
    replies = await asyncio.gather(
        *(server.handle(j, f"203.0.113.{i % 100}") for i, j in enumerate(junk))
    )
    statuses = {decode_response(r).status for r in replies}
    assert Status.OK not in statuses and Status.INTERNAL not in statuses
    await still_serving(server)


async def test_database_down_is_internal_error_not_a_hang(stores: Stores) -> None:
    if stores.cluster is None:
        return  # SQLite is a file in this process: it cannot go away like a server
    store = await stores.new()
    key = new_key()
    async with PnpServer(store, port=0) as server:
        assert (await exchange(server.port, signed(key, "dora", b"1"))).status == Status.OK
        stores.cluster.stop("immediate")
        try:
            t0 = time.monotonic()
            resp = await exchange(server.port, signed(key, "dora", b"2"), timeout=10)
            assert resp.status == Status.INTERNAL
            resp = await exchange(server.port, encode_request(make_get("dora", 5)), timeout=10)
            assert resp.status == Status.INTERNAL
            assert time.monotonic() - t0 < 10
        finally:
            stores.cluster.start()
        # the database is back: the server serves again, with the acknowledged record
        deadline = time.monotonic() + 10
        while True:
            resp = await exchange(server.port, encode_request(make_get("dora", 6)))
            if resp.status == Status.OK or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert resp.status == Status.OK and resp.value == b"1"
        assert (await exchange(server.port, signed(key, "dora", b"3"))).status == Status.OK


async def test_tcp_connection_flood_is_bounded(server: PnpServer) -> None:
    server.max_tcp_per_ip = 4
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    try:
        # a fifth idle connection from the same address is closed at once
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(3):
            assert await reader.read(1) == b""
        writer.close()
        # UDP keeps serving meanwhile
        await still_serving(server)
    finally:
        for _, w in held:
            w.close()
            await w.wait_closed()
    # once they are gone, TCP is served again
    for _ in range(100):  # the server sees the closes within a few loop turns
        if not server._tcp_total:
            break
        await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        get = encode_request(make_get("nobody", 9))
        writer.write(struct.pack(">H", len(get)) + get)
        async with asyncio.timeout(3):
            (size,) = struct.unpack(">H", await reader.readexactly(2))
            assert decode_response(await reader.readexactly(size)).status == Status.NOT_FOUND
    finally:
        writer.close()


async def test_udp_overload_drops_instead_of_queueing(server: PnpServer) -> None:
    server.max_inflight = 2
    loop = asyncio.get_running_loop()
    answers: list[bytes] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            answers.append(data)

    transport, _ = await loop.create_datagram_endpoint(
        Collect, remote_addr=("127.0.0.1", server.port)
    )
    try:
        sent = 60
        key = new_key()
        for i in range(sent):  # signed PUTs: each waits for the store
            transport.sendto(signed(key, f"burst{i}", b"x"))
        await asyncio.sleep(1.0)
    finally:
        transport.close()
    assert server.dropped > 0
    assert len(answers) + server.dropped == sent
    assert server._udp_inflight == 0
    server.max_inflight = 4096
    await still_serving(server)
