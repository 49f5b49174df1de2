"""The STUN server (warpgate.stun.server and ``warpgate serve stun``) on 127.0.0.1 and
127.0.0.2: our client, our NAT classification and a third-party client (aioice) against
it.  Never a public address."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator

import pytest

from warpgate import Node
from warpgate.sansio import stun
from warpgate.sansio.address import NatType, PortAllocation
from warpgate.sansio.stun import Attr, ChangeRequest, StunClass, StunMessage, StunMethod
from warpgate.stun import StunUnavailable, stun_binding
from warpgate.stun.nat import Filtering, Mapping
from warpgate.stun.node_binding import CACHE, binding_from_listener
from warpgate.stun.server import StunServer, TokenBucketLimiter

from .conftest import conf

PRIMARY_IP, OTHER_IP = "127.0.0.1", "127.0.0.2"


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    CACHE.clear()


@pytest.fixture
async def server() -> AsyncIterator[StunServer]:
    async with StunServer((PRIMARY_IP, 0), OTHER_IP) as s:
        yield s


def request(*attrs: tuple[int, stun.AttrValue]) -> StunMessage:
    return StunMessage(StunMethod.BINDING, StunClass.REQUEST, attributes=attrs)


async def ask(
    target: tuple[str, int], data: bytes, *, timeout: float = 1.0, sock: socket.socket | None = None
) -> tuple[StunMessage, tuple[str, int]] | None:
    """Send ``data`` over UDP and return the decoded answer and where it came from, or
    None if nothing arrives within ``timeout``."""
    loop = asyncio.get_running_loop()
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((PRIMARY_IP, 0))
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, data, target)
        try:
            answer, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), timeout)
        except TimeoutError:
            return None
        return stun.decode(answer), (addr[0], addr[1])
    finally:
        if own:
            sock.close()


# ---------------------------------------------------------------------- behaviour


async def test_binding_over_udp_and_tcp(server: StunServer) -> None:
    p1 = server.primary[1]
    other = server.other_address
    assert other is not None and other[0] == OTHER_IP and other[1] != p1
    assert len(set(server.addresses)) == 4
    for transport in ("udp", "tcp"):
        result = await stun_binding(
            server.primary, local_addr=(PRIMARY_IP, 0), timeout=2, transport=transport
        )
        assert result.mapped == result.local
        assert result.response_origin == server.primary
        assert result.other_address == other
        assert result.software and result.software.startswith("warpgate")
    stats = server.statistics()
    assert stats["success"] == 2 and stats["udp_received"] == 1 and stats["tcp_received"] == 1


async def test_both_mapped_addresses_and_fingerprint(server: StunServer) -> None:
    got = await ask(server.primary, stun.encode(request()))
    assert got is not None
    msg, _ = got
    assert msg.get(Attr.XOR_MAPPED_ADDRESS) == msg.get(Attr.MAPPED_ADDRESS)
    assert msg.get(Attr.FINGERPRINT) is not None


@pytest.mark.parametrize(
    ("change_ip", "change_port"), [(False, False), (True, False), (False, True), (True, True)]
)
async def test_change_request_answered_from_the_changed_address(
    server: StunServer, change_ip: bool, change_port: bool
) -> None:
    assert server.other_address is not None
    p1, p2 = server.primary[1], server.other_address[1]
    expected = (OTHER_IP if change_ip else PRIMARY_IP, p2 if change_port else p1)
    data = stun.encode(request((Attr.CHANGE_REQUEST, ChangeRequest(change_ip, change_port))))
    got = await ask(server.primary, data)
    assert got is not None
    msg, came_from = got
    assert came_from == expected  # really sent from that socket
    assert msg.response_origin == expected
    assert msg.other_address == (OTHER_IP, p2)


async def test_other_address_is_the_diagonal_of_each_socket(server: StunServer) -> None:
    assert server.other_address is not None
    p1, p2 = server.primary[1], server.other_address[1]
    for ip, port in server.addresses:
        got = await ask((ip, port), stun.encode(request()))
        assert got is not None
        msg, came_from = got
        assert came_from == (ip, port) == msg.response_origin
        assert msg.other_address == (
            OTHER_IP if ip == PRIMARY_IP else PRIMARY_IP,
            p2 if port == p1 else p1,
        )


async def test_response_port_sends_to_that_port(server: StunServer) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
    ):
        sender.bind((PRIMARY_IP, 0))
        receiver.bind((PRIMARY_IP, 0))
        receiver.setblocking(False)
        target = receiver.getsockname()[1]
        sender.sendto(stun.encode(request((Attr.RESPONSE_PORT, target))), server.primary)
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(receiver, 2048), 2)
        assert stun.decode(data).mapped_address == sender.getsockname()


async def test_nat_classification_against_it_is_open(server: StunServer) -> None:
    servers = [f"{PRIMARY_IP}:{server.primary[1]}"]
    node_conf = conf(
        "stun-server-open",
        enable_stun_clients=True,
        stun_servers=servers,
        stun_timeout=3.0,
        stun_cache_ttl=0,
    )
    async with Node(ip="127.0.0.1", port=0, conf=node_conf) as node:
        await node.start()
        report = node.nat_reports["127.0.0.1"]
        assert report.rfc5780
        assert report.mapping is Mapping.NONE
        assert report.filtering is Filtering.NONE
        assert report.nat_type is NatType.OPEN
        assert report.port_allocation is PortAllocation.PRESERVING
        assert report.external == node.listeners[0].local
        listener = node.listeners[0]
        changed = await binding_from_listener(
            node, listener, server.primary, change_ip=True, change_port=True, timeout=2
        )
        assert changed.mapped == listener.local
        assert changed.response_origin == server.other_address


async def test_without_an_alternate_change_request_gets_420() -> None:
    async with StunServer((PRIMARY_IP, 0)) as plain:
        assert not plain.rfc5780 and len(plain.addresses) == 1
        result = await stun_binding(plain.primary, local_addr=(PRIMARY_IP, 0), timeout=2)
        assert result.other_address is None and result.response_origin == plain.primary
        for flags in (ChangeRequest(True, True), ChangeRequest(False, False)):
            got = await ask(plain.primary, stun.encode(request((Attr.CHANGE_REQUEST, flags))))
            assert got is not None
            msg, came_from = got
            assert came_from == plain.primary
            assert msg.cls is StunClass.ERROR and msg.error_code is not None
            assert msg.error_code.code == 420
            assert msg.get(Attr.UNKNOWN_ATTRIBUTES) == (int(Attr.CHANGE_REQUEST),)
        with pytest.raises(StunUnavailable, match="420"):
            await stun_binding(plain.primary, change_port=True, timeout=2)


async def test_change_request_over_tcp_gets_420(server: StunServer) -> None:
    with pytest.raises(StunUnavailable, match="420"):
        await stun_binding(server.primary, change_ip=True, transport="tcp", timeout=2)


async def test_unknown_required_attribute_gets_420(server: StunServer) -> None:
    data = stun.encode(request((0x7F01, b"\x00\x00\x00\x00"), (0x0002, b"xy")))
    got = await ask(server.primary, data)
    assert got is not None
    msg, _ = got
    assert msg.cls is StunClass.ERROR and msg.error_code is not None
    assert msg.error_code.code == 420
    assert msg.get(Attr.UNKNOWN_ATTRIBUTES) == (0x7F01, 0x0002)
    # An unknown comprehension-optional attribute is ignored.
    got = await ask(server.primary, stun.encode(request((0xC001, b"ok"))))
    assert got is not None and got[0].cls is StunClass.SUCCESS
    assert server.statistics()["error_420"] == 1


async def test_other_methods_and_non_requests(server: StunServer) -> None:
    other = StunMessage(0x003, StunClass.REQUEST)  # Allocate: not served here
    got = await ask(server.primary, stun.encode(other))
    assert got is not None and got[0].error_code is not None
    assert got[0].error_code.code == 400
    indication = StunMessage(StunMethod.BINDING, StunClass.INDICATION)
    assert await ask(server.primary, stun.encode(indication), timeout=0.3) is None
    assert server.statistics()["ignored"] == 1


async def test_malformed_input_is_dropped_and_serving_goes_on(server: StunServer) -> None:
    good = stun.encode(request())
    bad_fingerprint = good[:-1] + bytes([good[-1] ^ 0xFF])
    truncated_attr = good[:2] + b"\x00\x0c" + good[4:20] + b"\x00\x20\x00\x08\x00\x01\x00\x00"
    garbage = [
        b"",
        b"\x00",
        b"hello, not stun at all",
        good[:-4],  # the header length no longer matches
        bad_fingerprint,
        truncated_attr,
        b"\x00\x01\x00\x00" + b"\x00" * 16,  # no magic cookie (RFC 3489)
        bytes(3000),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PRIMARY_IP, 0))
        for data in garbage:
            sock.sendto(data, server.primary)
        got = await ask(server.primary, good, sock=sock)
    assert got is not None and got[0].cls is StunClass.SUCCESS
    stats = server.statistics()
    assert stats["malformed"] == len(garbage)
    assert stats["success"] == 1
    # A TCP stream that is not STUN is closed; the server still answers.
    reader, writer = await asyncio.open_connection(*server.primary)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 2) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    result = await stun_binding(server.primary, transport="tcp", timeout=2)
    assert result.mapped[0] == PRIMARY_IP


async def test_rate_limit_holds() -> None:
    async with StunServer((PRIMARY_IP, 0), conf={"rate": 0.01, "burst": 5}) as limited:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((PRIMARY_IP, 0))
            sock.setblocking(False)
            for _ in range(30):
                sock.sendto(stun.encode(request()), limited.primary)
            loop = asyncio.get_running_loop()
            answers = 0
            while True:
                try:
                    await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.5)
                except TimeoutError:
                    break
                answers += 1
                assert answers <= 30
        stats = limited.statistics()
        assert answers == 5
        assert stats["rate_limited"] == 25 and stats["success"] == 5


def test_token_bucket() -> None:
    bucket = TokenBucketLimiter(rate=2.0, burst=3, max_keys=2)
    assert [bucket.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow("a", 0.5)  # one token back after half a second
    assert not bucket.allow("a", 0.5)
    assert bucket.allow("b", 0.5) and bucket.allow("c", 0.5)
    assert len(bucket) == 2  # "a", the least recently used, was forgotten
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate=0, burst=1)


async def test_bad_arguments_and_bind_errors() -> None:
    with pytest.raises(ValueError):
        StunServer((PRIMARY_IP, 0), PRIMARY_IP)
    with pytest.raises(ValueError):
        StunServer(("0.0.0.0", 0), OTHER_IP)
    with pytest.raises(ValueError):
        StunServer((PRIMARY_IP, 0), alternate_port=5000)
    with pytest.raises(ValueError, match="unknown STUN server conf"):
        StunServer((PRIMARY_IP, 0), conf={"rat": 1})
    async with StunServer((PRIMARY_IP, 0)) as first:
        second = StunServer(first.primary)
        with pytest.raises(OSError):
            await second.start()
        await second.close()
        assert second.addresses == []


# ---------------------------------------------------------------------- aioice


async def test_aioice_client_gets_the_right_xor_mapped_address(server: StunServer) -> None:
    aioice_stun = pytest.importorskip("aioice.stun")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PRIMARY_IP, 0))
        local = sock.getsockname()
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        async def query(attributes: dict[str, object]) -> tuple[object, tuple[str, int]]:
            req = aioice_stun.Message(
                aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST, attributes=attributes
            )
            req.add_fingerprint()
            await loop.sock_sendto(sock, bytes(req), server.primary)
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            res = aioice_stun.parse_message(data)  # checks our FINGERPRINT
            assert res.transaction_id == req.transaction_id
            assert res.message_class == aioice_stun.Class.RESPONSE
            return res, (addr[0], addr[1])

        res, came_from = await query({})
        attrs = res.attributes  # type: ignore[attr-defined]
        assert attrs["XOR-MAPPED-ADDRESS"] == local
        assert attrs["MAPPED-ADDRESS"] == local
        assert attrs["RESPONSE-ORIGIN"] == server.primary == came_from
        assert attrs["OTHER-ADDRESS"] == server.other_address
        assert "FINGERPRINT" in attrs
        # aioice's CHANGE-REQUEST is the raw flags word: 0x4 change IP, 0x2 change port.
        res, came_from = await query({"CHANGE-REQUEST": 0x6})
        attrs = res.attributes  # type: ignore[attr-defined]
        assert came_from == server.other_address == attrs["RESPONSE-ORIGIN"]
        assert attrs["XOR-MAPPED-ADDRESS"] == local


# ---------------------------------------------------------------------- the CLI


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "warpgate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until_serving(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    for _ in range(50):
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving"):
            break
    return "".join(lines)


async def test_warpgate_serve_stun_answers_and_stops_on_sigint() -> None:
    proc = await _spawn("serve", "stun", "--listen", f"{PRIMARY_IP}:0", "--alternate", OTHER_IP)
    try:
        out = await _read_until_serving(proc)
        found = re.search(r"STUN server on 127\.0\.0\.1:(\d+)", out)
        assert found, out
        port = int(found.group(1))
        assert f'"stun_servers": ["127.0.0.1:{port}"]' in out
        assert "RFC 5780: other address 127.0.0.2:" in out
        result = await stun_binding(
            (PRIMARY_IP, port), local_addr=(PRIMARY_IP, 0), change_ip=True, timeout=3
        )
        assert result.response_origin == (OTHER_IP, port)
        assert result.other_address is not None and result.other_address[0] == OTHER_IP
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


async def test_warpgate_serve_stun_bind_error_is_one_line() -> None:
    async with StunServer((PRIMARY_IP, 0)) as taken:
        proc = await _spawn("serve", "stun", "--listen", f"{PRIMARY_IP}:{taken.primary[1]}")
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warpgate: error: cannot listen on")
    assert out == b""


async def test_warpgate_serve_mqtt_prints_its_url_and_stops_on_sigterm() -> None:
    pytest.importorskip("amqtt")
    proc = await _spawn("serve", "mqtt", "--listen", f"{PRIMARY_IP}:0")
    try:
        out = await _read_until_serving(proc)
        found = re.search(r'"mqtt_brokers": \["mqtt://127\.0\.0\.1:(\d+)"\]', out)
        assert found, out
        _, writer = await asyncio.open_connection(PRIMARY_IP, int(found.group(1)))
        writer.close()
        await writer.wait_closed()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, err


def test_warpgate_serve_help_lists_every_service(capsys: pytest.CaptureFixture[str]) -> None:
    from warpgate.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "stun" in out and "mqtt" in out and "pnp" in out
