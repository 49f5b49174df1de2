"""STUN from the node's listening socket, and the STUN phase, against a local RFC 5780
responder on 127.0.0.1 and 127.0.0.2 (built from the codec; never a public server)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from warpgate import Node
from warpgate.sansio import stun
from warpgate.sansio.address import NatType, NodeAddress, PortAllocation
from warpgate.sansio.stun import Attr, ChangeRequest, StunClass, StunMessage, StunMethod
from warpgate.stun import StunUnavailable
from warpgate.stun.nat import Filtering, Mapping
from warpgate.stun.node_binding import CACHE, binding_from_listener

from .conftest import conf

PRIMARY_IP, OTHER_IP = "127.0.0.1", "127.0.0.2"


class Responder:
    """A STUN Binding responder with four sockets: {127.0.0.1, 127.0.0.2} x {p1, p2}.

    ``mode``: ``"ok"`` answers everything (CHANGE-REQUEST from the changed socket);
    ``"firewall"`` never answers a CHANGE-REQUEST (as if a firewall dropped it);
    ``"garbage"`` answers with the right transaction id and a broken FINGERPRINT;
    ``"plain"`` is a pre-RFC 5780 server: no OTHER-ADDRESS, CHANGE-REQUEST ignored.
    """

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.socks: dict[tuple[str, int], socket.socket] = {}
        self.requests = 0
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        for _ in range(20):
            try:
                self._bind_all()
                return
            except OSError:
                self.close()
        raise RuntimeError("no free port pair on 127.0.0.1/127.0.0.2")

    def _bind_all(self) -> None:
        first = self._bind(PRIMARY_IP, 0)
        p1 = first.getsockname()[1]
        second = self._bind(PRIMARY_IP, 0)
        p2 = second.getsockname()[1]
        self.socks = {(PRIMARY_IP, p1): first, (PRIMARY_IP, p2): second}
        for port in (p1, p2):
            self.socks[(OTHER_IP, port)] = self._bind(OTHER_IP, port)
        self.p1, self.p2 = p1, p2

    def _bind(self, ip: str, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((ip, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.socks[(ip, port)] = sock
        return sock

    @property
    def primary(self) -> tuple[str, int]:
        return (PRIMARY_IP, self.p1)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks = {}

    async def __aenter__(self) -> Responder:
        self.open()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._serve(addr, s)) for addr, s in self.socks.items()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.close()

    async def _serve(self, here: tuple[str, int], sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, peer = await loop.sock_recvfrom(sock, 2048)
            try:
                msg = stun.decode(data)
            except stun.StunError:
                continue
            if msg.cls is not StunClass.REQUEST:
                continue
            self.requests += 1
            change = msg.get(Attr.CHANGE_REQUEST)
            ip, port = here
            if isinstance(change, ChangeRequest) and self.mode != "plain":
                if self.mode == "firewall" and (change.change_ip or change.change_port):
                    continue
                if change.change_ip:
                    ip = OTHER_IP if ip == PRIMARY_IP else PRIMARY_IP
                if change.change_port:
                    port = self.p2 if port == self.p1 else self.p1
            origin = (ip, port)
            other = (
                OTHER_IP if here[0] == PRIMARY_IP else PRIMARY_IP,
                self.p2 if here[1] == self.p1 else self.p1,
            )
            answer = StunMessage(
                StunMethod.BINDING,
                StunClass.SUCCESS,
                msg.transaction_id,
                (
                    (Attr.XOR_MAPPED_ADDRESS, (peer[0], peer[1])),
                    (Attr.RESPONSE_ORIGIN, origin),
                    (Attr.OTHER_ADDRESS, other),
                ),
            )
            if self.mode == "plain":
                answer = StunMessage(
                    StunMethod.BINDING,
                    StunClass.SUCCESS,
                    msg.transaction_id,
                    ((Attr.XOR_MAPPED_ADDRESS, (peer[0], peer[1])),),
                )
            wire = stun.encode(answer)
            if self.mode == "garbage":
                wire = wire[:-1] + bytes([wire[-1] ^ 0xFF])
            await loop.sock_sendto(self.socks[origin], wire, peer)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    CACHE.clear()


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    async with Responder() as r:
        yield r


def stun_conf(name: str, servers: list[str], **extra: Any) -> dict[str, Any]:
    return conf(
        name,
        enable_stun_clients=True,
        stun_servers=servers,
        stun_timeout=extra.pop("stun_timeout", 3.0),
        stun_cache_ttl=extra.pop("stun_cache_ttl", 0),
        **extra,
    )


async def test_binding_from_the_listening_socket(responder: Responder) -> None:
    async with Node(ip="127.0.0.1", port=0, conf=conf("stun-hook")) as node:
        await node.start()
        listener = node.listeners[0]
        result = await binding_from_listener(node, listener, responder.primary, timeout=2)
        assert result.mapped == listener.local  # the listening socket's own mapping
        assert result.response_origin == responder.primary
        assert result.other_address == (OTHER_IP, responder.p2)
        changed = await binding_from_listener(
            node, listener, responder.primary, change_ip=True, change_port=True, timeout=2
        )
        assert changed.response_origin == (OTHER_IP, responder.p2)
        assert not node.stun_transactions  # unregistered afterwards
        assert node.dropped_datagrams == 0


async def test_binding_from_listener_times_out_and_unregisters() -> None:
    async with Responder("garbage") as bad, Node(ip="127.0.0.1", port=0, conf=conf("s2")) as node:
        await node.start()
        with pytest.raises(StunUnavailable, match="no answer within 0.6s"):
            await binding_from_listener(node, node.listeners[0], bad.primary, timeout=0.6)
        assert not node.stun_transactions
        assert bad.requests >= 1


async def test_stray_stun_datagram_is_dropped_not_crashing() -> None:
    async with Node(ip="127.0.0.1", port=0, conf=conf("s3")) as node:
        await node.start()
        msg = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, attributes=())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(stun.encode(msg), node.listeners[0].local)
        for _ in range(50):
            if node.dropped_datagrams:
                break
            await asyncio.sleep(0.02)
        assert node.dropped_datagrams == 1


async def test_phase_classifies_an_open_loopback(responder: Responder) -> None:
    servers = [f"{PRIMARY_IP}:{responder.p1}"]
    async with Node(ip="127.0.0.1", port=0, conf=stun_conf("stun-open", servers)) as node:
        await node.start()
        report = node.nat_reports["127.0.0.1"]
        assert report.mapping is Mapping.NONE
        assert report.filtering is Filtering.NONE
        assert report.nat_type is NatType.OPEN
        assert report.port_allocation is PortAllocation.PRESERVING
        assert report.external == node.listeners[0].local
        assert report.rfc5780
        (entry,) = NodeAddress.decode(node.address()).interfaces
        assert str(entry.ext_ip) == "127.0.0.1"
        assert entry.ext_port == node.listen_port
        assert entry.nat_type is NatType.OPEN
        assert entry.port_allocation is PortAllocation.PRESERVING
        assert node.phase_results["load_p2p_stun_clients"] == "1 servers"


async def test_phase_sees_a_firewall_when_changed_answers_never_come() -> None:
    async with Responder("firewall") as fw:
        servers = [f"{PRIMARY_IP}:{fw.p1}"]
        async with Node(ip="127.0.0.1", port=0, conf=stun_conf("stun-fw", servers)) as node:
            await node.start()
            report = node.nat_reports["127.0.0.1"]
            assert (report.mapping, report.filtering) == (Mapping.NONE, Filtering.APDF)
            assert report.nat_type is NatType.UDP_FIREWALL


async def test_unreachable_servers_leave_the_nat_unknown(caplog: pytest.LogCaptureFixture) -> None:
    # A closed port on loopback: nothing answers over UDP or TCP.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((PRIMARY_IP, 0))
        dead = probe.getsockname()[1]
    servers = [f"{PRIMARY_IP}:{dead}", "not a server:x"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with Node(
        ip="127.0.0.1", port=0, conf=stun_conf("stun-dead", servers, stun_timeout=1.0)
    ) as node:
        await node.start()
        assert loop.time() - start < 5
        report = node.nat_reports["127.0.0.1"]
        assert report.nat_type is NatType.UNKNOWN
        assert report.external is None
        (entry,) = NodeAddress.decode(node.address()).interfaces
        assert entry.nat_type is NatType.UNKNOWN and entry.ext_ip is None
    assert "unknown" in caplog.text
    assert "skipped" in caplog.text  # the unparsable server


async def test_garbage_answers_leave_the_nat_unknown() -> None:
    async with Responder("garbage") as bad:
        servers = [f"{PRIMARY_IP}:{bad.p1}"]
        async with Node(
            ip="127.0.0.1", port=0, conf=stun_conf("stun-bad", servers, stun_timeout=1.0)
        ) as node:
            await node.start()
            report = node.nat_reports["127.0.0.1"]
            assert report.nat_type is NatType.UNKNOWN
            assert bad.requests >= 1
            assert node.addr_bytes


async def test_servers_without_rfc5780_give_the_address_but_no_guess() -> None:
    async with Responder("plain") as plain:
        servers = [f"{PRIMARY_IP}:{plain.p1}", f"{OTHER_IP}:{plain.p1}"]
        async with Node(ip="127.0.0.1", port=0, conf=stun_conf("stun-plain", servers)) as node:
            await node.start()
            report = node.nat_reports["127.0.0.1"]
            assert not report.rfc5780
            assert report.external == node.listeners[0].local
            assert (report.mapping, report.filtering) == (Mapping.NONE, Filtering.UNKNOWN)
            assert report.nat_type is NatType.UNKNOWN  # open or a firewall: cannot tell
            (entry,) = NodeAddress.decode(node.address()).interfaces
            assert str(entry.ext_ip) == "127.0.0.1" and entry.ext_port == node.listen_port


async def test_reports_are_cached_for_the_ttl(responder: Responder) -> None:
    servers = [f"{PRIMARY_IP}:{responder.p1}"]
    async with Node(
        ip="127.0.0.1", port=0, conf=stun_conf("stun-cache", servers, stun_cache_ttl=60)
    ) as node:
        await node.start()
        first = node.nat_reports["127.0.0.1"]
        asked = responder.requests
        discovery = node.stun_clients["nat"]
        await discovery.measure(node)
        assert node.nat_reports["127.0.0.1"] is first
        assert responder.requests == asked


async def test_stun_disabled_means_no_reports() -> None:
    async with Node(ip="127.0.0.1", port=0, conf=conf("stun-off")) as node:
        await node.start()
        assert node.nat_reports == {}
        assert node.phase_results["load_p2p_stun_clients"] == "disabled"


async def test_warpgate_nat_json_and_table(
    responder: Responder, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from warpgate.cli import build_parser
    from warpgate.cli.nat import _run

    server = f"{PRIMARY_IP}:{responder.p1}"
    args = build_parser().parse_args(["nat", "--ip", "127.0.0.1", "--stun", server, "--json"])
    assert await _run(args) == 0
    data = json.loads(capsys.readouterr().out)
    (iface,) = data["interfaces"]
    assert iface["nat_type"] == "open" and iface["mapping"] == "none"
    assert iface["external"] == iface["local"]
    assert data["servers"] == [server]
    assert data["clock"] is None and data["port_mapping"] == "disabled"

    CACHE.clear()
    args = build_parser().parse_args(["nat", "--ip", "127.0.0.1", "--stun", server])
    assert await _run(args) == 0
    out = capsys.readouterr().out
    assert "NAT type        open" in out and "port allocation preserving" in out
    assert "port mapping      disabled" in out


def test_warpgate_nat_fails_clearly_when_nothing_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from warpgate.cli import main

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((PRIMARY_IP, 0))
        dead = probe.getsockname()[1]
    argv = ["nat", "--ip", "127.0.0.1", "--stun", f"{PRIMARY_IP}:{dead}", "--timeout", "0.8"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warpgate: error: no STUN server answered")
