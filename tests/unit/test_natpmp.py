"""NAT-PMP / PCP: the sans-IO codec (golden vectors laid out as in RFC 6886 / 6887,
round trips, fuzzing) and the async client and node phases against a fake gateway on
127.0.0.1.  Nothing here touches a real gateway: UPnP is pointed at a closed port."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warpgate import NODE_TEST_CONF, dict_child
from warpgate.node.node import Node
from warpgate.portmap import PortMapError, map_ports, port_mappings
from warpgate.sansio import natpmp as codec
from warpgate.sansio.natpmp import NatPmpError

NONCE = bytes(range(1, 13))
DEAD_UPNP = "http://127.0.0.1:1/rootDesc.xml"  # connection refused at once

# ---------------------------------------------------------------- golden vectors


def test_natpmp_external_address_request_and_response() -> None:
    assert codec.encode_natpmp_external_request() == bytes.fromhex("0000")
    # version 0, opcode 128, result 0, epoch 3600, 203.0.113.5
    wire = bytes.fromhex("0080 0000 00000e10 cb007105")
    answer = codec.decode_natpmp_response(wire)
    assert answer == codec.NatPmpExternalResponse(0, 3600, ipaddress.IPv4Address("203.0.113.5"))
    assert codec.encode_natpmp_external_response(0, 3600, "203.0.113.5") == wire


def test_natpmp_map_request_and_response() -> None:
    # version 0, opcode 1 (UDP), reserved, internal 4500, suggested 4500, lifetime 7200
    assert codec.encode_natpmp_map_request("udp", 4500, 4500, 7200) == bytes.fromhex(
        "0001 0000 1194 1194 00001c20"
    )
    assert codec.encode_natpmp_map_request("tcp", 80, 0, 0) == bytes.fromhex(
        "0002 0000 0050 0000 00000000"
    )
    wire = bytes.fromhex("0081 0000 00000e10 1194 1195 00001c20")
    assert codec.decode_natpmp_response(wire) == codec.NatPmpMapResponse(
        "udp", 0, 3600, 4500, 4501, 7200
    )
    assert codec.encode_natpmp_map_response("udp", 0, 3600, 4500, 4501, 7200) == wire


def test_natpmp_error_answers() -> None:
    # A NAT-PMP gateway answering a PCP request: version 0, opcode 128+1, result 1.
    short = bytes.fromhex("0081 0001 00000005")
    answer = codec.decode_natpmp_response(short)
    assert answer == codec.NatPmpVersionResponse(1, 1, 5)
    assert codec.result_name(0, 2) == "NOT_AUTHORIZED"
    assert codec.result_name(2, 8) == "NO_RESOURCES"
    assert codec.result_name(2, 99) == "result 99"
    refused = codec.decode_natpmp_response(bytes.fromhex("0082 0002 00000005 0050 0000 00000000"))
    assert isinstance(refused, codec.NatPmpMapResponse) and refused.result == 2


PCP_MAP_REQUEST = bytes.fromhex(
    "02 01 0000 00001c20"  # version 2, R=0 opcode MAP, reserved, lifetime 7200
    "00000000 00000000 0000ffff c0a80102"  # client ::ffff:192.168.1.2
    "0102030405060708090a0b0c"  # nonce
    "11 000000 1194 1194"  # UDP, reserved, internal 4500, suggested external 4500
    "00000000 00000000 0000ffff 00000000"  # suggested external ::ffff:0.0.0.0
)
PCP_MAP_RESPONSE = bytes.fromhex(
    "02 81 00 00 00001c20 00000e10"  # version, R=1 MAP, reserved, SUCCESS, lifetime, epoch
    "000000000000000000000000"  # reserved
    "0102030405060708090a0b0c"
    "11 000000 1194 1195"
    "00000000 00000000 0000ffff cb007105"  # ::ffff:203.0.113.5
)


def test_pcp_map_request_and_response() -> None:
    request = codec.encode_pcp_map_request(
        nonce=NONCE, protocol="udp", internal_port=4500, lifetime=7200,
        client_ip="192.168.1.2", external_port=4500,
    )  # fmt: skip
    assert request == PCP_MAP_REQUEST and len(request) == 60
    answer = codec.decode_pcp_response(PCP_MAP_RESPONSE)
    assert answer == codec.PcpMapResponse(
        0, 7200, 3600, NONCE, 17, 4500, 4501, ipaddress.IPv4Address("203.0.113.5")
    )
    assert PCP_MAP_RESPONSE == codec.encode_pcp_map_response(
        result=0, lifetime=7200, epoch=3600, nonce=NONCE, protocol=17,
        internal_port=4500, external_port=4501, external_ip="203.0.113.5",
    )  # fmt: skip
    assert codec.decode_response(PCP_MAP_RESPONSE) == answer


def test_pcp_ipv6_and_error_header_only() -> None:
    request = codec.encode_pcp_map_request(
        nonce=NONCE, protocol="tcp", internal_port=22, lifetime=0, client_ip="2001:db8::1"
    )
    assert request[8:24] == ipaddress.IPv6Address("2001:db8::1").packed
    assert request[36] == 6
    # An error may come with the header alone.
    header = bytes.fromhex("02 81 00 02 00000000 00000005") + bytes(12)
    assert codec.decode_pcp_response(header) == codec.PcpErrorResponse(1, 2, 0, 5)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00",
        bytes.fromhex("0001 0000 1194 1194 00001c20"),  # a request, not a response
        bytes.fromhex("0080 0000 00000e10"),  # external response cut short
        bytes.fromhex("0081 0000 00000e10 1194"),  # map response cut short
        bytes.fromhex("0085 0000 00000e10 00000000"),  # unknown opcode, success
        bytes.fromhex("01 80 0000"),  # unknown version
        PCP_MAP_REQUEST,  # a PCP request, not a response
        PCP_MAP_RESPONSE[:40],  # MAP success cut short
        PCP_MAP_RESPONSE + b"\x00",  # not a multiple of 4
        PCP_MAP_RESPONSE[:20],
    ],
)
def test_malformed_input_raises_natpmp_error(wire: bytes) -> None:
    with pytest.raises(NatPmpError):
        codec.decode_response(wire)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nonce": b"short"},
        {"protocol": "sctp"},
        {"internal_port": 70000},
        {"internal_port": 0},
        {"lifetime": -1},
    ],
)
def test_bad_requests_are_refused(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "nonce": NONCE, "protocol": "udp", "internal_port": 1, "lifetime": 1, "client_ip": "::1",
    }  # fmt: skip
    with pytest.raises(NatPmpError):
        codec.encode_pcp_map_request(**{**args, **kwargs})


@pytest.mark.parametrize(
    "args", [("sctp", 1, 1, 1), ("udp", 0, 1, 1), ("udp", 1, 70000, 1), ("tcp", 1, 1, 2**32)]
)
def test_bad_natpmp_requests_are_refused(args: tuple[str, int, int, int]) -> None:
    with pytest.raises(NatPmpError):
        codec.encode_natpmp_map_request(*args)


def test_retransmit_schedule_doubles_from_250_ms() -> None:
    assert codec.retransmit_schedule(attempts=4) == [0.25, 0.5, 1.0, 2.0]
    assert sum(codec.retransmit_schedule()) == pytest.approx(127.75)  # RFC 6886's nine


# ---------------------------------------------------------------- fuzzing


@given(st.binary(max_size=1200))
def test_decoding_random_bytes_raises_only_natpmp_error(data: bytes) -> None:
    with contextlib.suppress(NatPmpError):
        codec.decode_response(data)


@given(
    st.sampled_from(["udp", "tcp"]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 5),
)
def test_natpmp_map_response_round_trip(
    proto: str, internal: int, external: int, result: int, epoch: int, lifetime: int, _: int
) -> None:
    wire = codec.encode_natpmp_map_response(proto, result, epoch, internal, external, lifetime)
    answer = codec.decode_natpmp_response(wire)
    assert answer == codec.NatPmpMapResponse(proto, result, epoch, internal, external, lifetime)


@given(
    st.binary(min_size=12, max_size=12),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.binary(max_size=64).map(lambda b: b[: len(b) // 4 * 4]),
)
def test_pcp_map_response_round_trip_with_options_skipped(
    nonce: bytes,
    proto: int,
    internal: int,
    external: int,
    result: int,
    lifetime: int,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    options: bytes,
) -> None:
    wire = codec.encode_pcp_map_response(
        result=result, lifetime=lifetime, epoch=7, nonce=nonce, protocol=proto,
        internal_port=internal, external_port=external, external_ip=ip,
    )  # fmt: skip
    answer = codec.decode_pcp_response(wire + options)
    assert isinstance(answer, codec.PcpMapResponse)
    assert (answer.nonce, answer.protocol, answer.internal_port) == (nonce, proto, internal)
    assert (answer.external_port, answer.result, answer.lifetime) == (external, result, lifetime)
    # An IPv4-mapped IPv6 address comes back as the IPv4 address (PCP cannot tell them apart).
    assert answer.external_ip in (ip, getattr(ip, "ipv4_mapped", None))


@given(
    st.binary(min_size=12, max_size=12),
    st.sampled_from(["udp", "tcp"]),
    st.integers(1, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
)
def test_pcp_map_request_layout(
    nonce: bytes,
    proto: str,
    internal: int,
    external: int,
    lifetime: int,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    wire = codec.encode_pcp_map_request(
        nonce=nonce, protocol=proto, internal_port=internal, lifetime=lifetime,
        client_ip=client, external_port=external,
    )  # fmt: skip
    assert len(wire) == 60 and wire[:2] == b"\x02\x01"
    assert int.from_bytes(wire[4:8]) == lifetime and wire[24:36] == nonce
    assert int.from_bytes(wire[40:42]) == internal and int.from_bytes(wire[42:44]) == external


# ---------------------------------------------------------------- a fake gateway


class FakeGateway(asyncio.DatagramProtocol):
    """Answers NAT-PMP and (unless ``natpmp_only``) PCP; ``mode`` picks how it behaves:
    "ok", "refuse" (NOT_AUTHORIZED), "liar" (success, but external port 0), "silent"."""

    EXTERNAL = "203.0.113.77"

    def __init__(self, mode: str = "ok", *, natpmp_only: bool = False) -> None:
        self.mode = mode
        self.natpmp_only = natpmp_only
        self.transport: asyncio.DatagramTransport | None = None
        self.mappings: dict[tuple[int, int], int] = {}  # (proto, internal) -> external
        self.requests: list[bytes] = []
        self.start = time.monotonic()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests.append(data)
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def answer(self, data: bytes) -> bytes | None:
        if self.mode == "silent" or len(data) < 2:
            return None
        epoch = int(time.monotonic() - self.start)
        if data[0] == 2 and self.natpmp_only:
            return bytes((0, 128 + data[1])) + (1).to_bytes(2) + epoch.to_bytes(4)
        if data[0] == 0 and data[1] == 0:
            return codec.encode_natpmp_external_response(0, epoch, self.EXTERNAL)
        if data[0] == 0:
            proto = 17 if data[1] == 1 else 6
            internal = int.from_bytes(data[4:6])
            lifetime = int.from_bytes(data[8:12])
            name = "udp" if proto == 17 else "tcp"
            result, external = self._map(proto, internal, lifetime)
            return codec.encode_natpmp_map_response(
                name, result, epoch, internal, external, lifetime if not result else 0
            )
        lifetime = int.from_bytes(data[4:8])
        nonce, proto = data[24:36], data[36]
        internal = int.from_bytes(data[40:42])
        result, external = self._map(proto, internal, lifetime)
        return codec.encode_pcp_map_response(
            result=8 if result == 4 else result, lifetime=lifetime if not result else 0,
            epoch=epoch, nonce=nonce, protocol=proto, internal_port=internal,
            external_port=external, external_ip=self.EXTERNAL,
        )  # fmt: skip

    def _map(self, proto: int, internal: int, lifetime: int) -> tuple[int, int]:
        if self.mode == "refuse":
            return 2, 0
        if lifetime == 0:
            self.mappings.pop((proto, internal), None)
            return 0, 0
        if self.mode == "liar":
            return 0, 0
        self.mappings[proto, internal] = self.external_for(internal)
        return 0, self.external_for(internal)

    @staticmethod
    def external_for(internal: int) -> int:
        return internal % 50000 + 10000


@contextlib.asynccontextmanager
async def fake_gateway(mode: str = "ok", **kwargs: Any) -> AsyncIterator[tuple[str, FakeGateway]]:
    loop = asyncio.get_running_loop()
    gw = FakeGateway(mode, **kwargs)
    transport, _ = await loop.create_datagram_endpoint(lambda: gw, local_addr=("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}", gw
    finally:
        transport.close()


def split(address: str) -> tuple[str, int]:
    host, port = address.split(":")
    return host, int(port)


@pytest.mark.parametrize(
    ("natpmp_only", "method"), [(False, "pcp"), (True, "natpmp")], ids=["pcp", "fallback"]
)
async def test_pcp_maps_and_unmaps_or_falls_back_to_natpmp(natpmp_only: bool, method: str) -> None:
    async with fake_gateway(natpmp_only=natpmp_only) as (address, gw):
        host, port = split(address)
        mapper = await map_ports(
            4500, methods=["pcp"], gateway=host, gateway_port=port, lifetime=60, timeout=3
        )
        assert mapper.method == method
        assert [(m.protocol, m.external_port) for m in mapper.mappings] == [
            ("udp", 14500),
            ("tcp", 14500),
        ]
        assert all(m.external_ip == gw.EXTERNAL and m.lifetime == 60 for m in mapper.mappings)
        assert gw.mappings == {(17, 4500): 14500, (6, 4500): 14500}
        await mapper.refresh()
        await mapper.unmap()
        assert gw.mappings == {}


@pytest.mark.parametrize(
    ("mode", "why"),
    [("refuse", "NOT_AUTHORIZED"), ("liar", "claims success"), ("silent", "no answer")],
)
async def test_gateway_trouble_is_a_clear_error(mode: str, why: str) -> None:
    async with fake_gateway(mode) as (address, _):
        host, port = split(address)
        with pytest.raises(PortMapError, match=why):
            await map_ports(
                4500, methods=["pcp"], gateway=host, gateway_port=port,
                lifetime=60, timeout=3, natpmp_attempts=2,
            )  # fmt: skip


async def test_no_gateway_and_unknown_methods() -> None:
    with pytest.raises(PortMapError, match="no default gateway"):
        await map_ports(4500, methods=["pcp"], gateway=None)
    with pytest.raises(PortMapError, match="unknown port mapping methods"):
        await map_ports(4500, methods=["carrier-pigeon"])


async def test_the_race_survives_a_dead_upnp_and_names_every_failure() -> None:
    async with fake_gateway() as (address, _):
        host, port = split(address)
        mapper = await map_ports(
            4500, methods=["upnp", "pcp"], gateway=host, gateway_port=port,
            upnp_root_url=DEAD_UPNP, timeout=3,
        )  # fmt: skip
        assert mapper.method == "pcp"
        await mapper.unmap()
    with pytest.raises(PortMapError, match=r"upnp: .*; natpmp: "):
        await map_ports(
            4500, methods=["upnp", "natpmp"], gateway="127.0.0.1", gateway_port=9,
            upnp_root_url=DEAD_UPNP, timeout=2, natpmp_attempts=2,
        )  # fmt: skip


def node_conf(gateway: str, **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "enable_upnp": True,
            "portmap_gateway": gateway,
            "upnp_root_url": DEAD_UPNP,
            "portmap_timeout": 3.0,
            "natpmp_attempts": 2,
            **extra,
        },
        NODE_TEST_CONF,
    )


async def test_node_maps_its_listen_port_refreshes_and_unmaps_on_close() -> None:
    async with fake_gateway() as (address, gw):
        node = Node(ip="127.0.0.1", port=0, conf=node_conf(address, portmap_lease=2))
        try:
            await node.start()
            port = node.listen_port
            assert node.phase_results["start_background_port_forwarding"] == "started"
            assert node.phase_results["finalize_port_forwarding"] == (
                f"pcp {gw.EXTERNAL}:{gw.external_for(port)}"
            )
            mappings = port_mappings(node)
            assert {(m.protocol, m.internal_port, m.external_port) for m in mappings} == {
                ("udp", port, gw.external_for(port)),
                ("tcp", port, gw.external_for(port)),
            }
            sent = len(gw.requests)
            await asyncio.sleep(1.5)  # a 2 s lease is renewed after 1 s
            assert len(gw.requests) > sent
        finally:
            await node.close()
        assert gw.mappings == {}


@pytest.mark.parametrize("mode", ["refuse", "liar", "silent"])
async def test_node_start_completes_when_the_gateway_misbehaves(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with fake_gateway(mode) as (address, _):
        async with Node(ip="127.0.0.1", port=0, conf=node_conf(address)) as node:
            await node.start()
            assert node.phase_results["finalize_port_forwarding"] == "unavailable"
            assert port_mappings(node) == []
    assert any("port mapping unavailable" in r.getMessage() for r in caplog.records)


async def test_disabled_by_default_in_tests() -> None:
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        assert node.phase_results["finalize_port_forwarding"] == "disabled"
        assert port_mappings(node) == []
