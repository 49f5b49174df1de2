"""The NTP clock against fake NTP servers on 127.0.0.1: honest ones, slow ones, dead ones
and liars.  Each fake answers NTP mode-4 packets with the offset it is told to claim."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, dict_child
from warpgate.clock import (
    NtpClock,
    ServerEstimate,
    SystemClock,
    choose,
    split_server,
    sync_ntp_clock,
)
from warpgate.node.node import Node

NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01


def ntp_ts(t: float) -> bytes:
    t += NTP_EPOCH
    return struct.pack("!II", int(t), int((t % 1) * 2**32) & 0xFFFFFFFF)


@dataclass
class Behaviour:
    offset: float = 0.0  # what the server claims: its clock minus ours
    delay: float = 0.0  # seconds on the wire before the server stamps and answers
    stratum: int = 2
    leap: int = 0
    answer: bool = True


class FakeNtp(asyncio.DatagramProtocol):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour
        self.transport: asyncio.DatagramTransport | None = None
        self.queries = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queries += 1
        if not self.b.answer or len(data) < 48:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self.b.delay, self._reply, data[40:48], addr)

    def _reply(self, origin: bytes, addr: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        received = time.time() + self.b.offset
        first = (self.b.leap << 6) | (4 << 3) | 4  # LI, version 4, mode 4 (server)
        head = struct.pack("!BBbbII4s", first, self.b.stratum, 6, -20, 0, 0, b"FAKE")
        sent = time.time() + self.b.offset
        self.transport.sendto(
            head + ntp_ts(received - 10) + origin + ntp_ts(received) + ntp_ts(sent), addr
        )


@contextlib.asynccontextmanager
async def fake_ntp(**behaviour: Any) -> AsyncIterator[tuple[str, FakeNtp]]:
    loop = asyncio.get_running_loop()
    b = Behaviour(**behaviour)
    transport, proto = await loop.create_datagram_endpoint(
        lambda: FakeNtp(b), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        yield f"127.0.0.1:{port}", proto
    finally:
        transport.close()


def warnings_about(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if word in r.getMessage()]


async def test_one_honest_server_gives_its_offset() -> None:
    async with fake_ntp(offset=0.5) as (server, proto):
        clock = await sync_ntp_clock([server], timeout=1.0, samples_per_server=4)
    assert isinstance(clock, NtpClock)
    assert clock.offset == pytest.approx(0.5, abs=0.05)
    assert 0 < clock.uncertainty < 0.05
    assert clock.time() == pytest.approx(time.time() + 0.5, abs=0.05)
    assert clock.source.startswith("ntp")
    assert proto.queries == 4  # several samples per server
    assert clock.used[server].samples >= 1


async def test_a_wild_liar_among_honest_servers_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        fake_ntp(offset=-0.2) as (a, _),
        fake_ntp(offset=-0.21) as (b, _),
        fake_ntp(offset=45.0) as (liar, _),
    ):
        clock = await sync_ntp_clock([a, liar, b], timeout=1.0)
    assert isinstance(clock, NtpClock)
    assert clock.offset == pytest.approx(-0.2, abs=0.05)
    assert set(clock.used) == {a, b}
    assert liar in clock.ignored
    assert any(liar in m for m in warnings_about(caplog, "ignored"))


async def test_a_single_liar_fails_plausibility_and_the_system_clock_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with fake_ntp(offset=3 * 3600) as (liar, _):
        clock = await sync_ntp_clock([liar], timeout=1.0, max_offset=600)
    assert type(clock) is SystemClock
    assert clock.offset == 0 and "unavailable" in clock.source
    assert any("ntp_max_offset" in m for m in warnings_about(caplog, "ignored"))


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [({"leap": 3}, "unsynchronised"), ({"stratum": 0}, "stratum"), ({"stratum": 16}, "stratum")],
)
async def test_unsynchronised_servers_are_ignored(
    behaviour: dict[str, int], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_ntp(**behaviour) as (server, _):
        clock = await sync_ntp_clock([server], timeout=1.0)
    assert "unavailable" in clock.source
    assert any(why in m for m in warnings_about(caplog, "ignored"))


async def test_a_dead_server_is_unavailable_and_does_not_stall(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with fake_ntp(offset=0.1) as (good, _), fake_ntp(answer=False) as (dead, _):
        begin = time.monotonic()
        clock = await sync_ntp_clock([dead, good], timeout=0.5)
        elapsed = time.monotonic() - begin
    assert elapsed < 3  # bounded: about one timeout, not one per sample
    assert clock.offset == pytest.approx(0.1, abs=0.05)
    assert any(dead in m for m in warnings_about(caplog, "unavailable"))


async def test_nobody_answering_gives_the_system_clock(caplog: pytest.LogCaptureFixture) -> None:
    async with fake_ntp(answer=False) as (dead, _):
        clock = await sync_ntp_clock([dead], timeout=0.3)
    assert type(clock) is SystemClock and clock.source == "system (ntp unavailable)"
    assert warnings_about(caplog, "NTP unavailable")


async def test_slow_answers_are_discarded() -> None:
    async with fake_ntp(offset=0.3, delay=0.3) as (slow, _):
        clock = await sync_ntp_clock([slow], timeout=1.0, max_delay=0.1)
    assert "unavailable" in clock.source
    async with fake_ntp(offset=0.3, delay=0.05) as (slowish, _):
        clock = await sync_ntp_clock([slowish], timeout=1.0, max_delay=0.5)
    # The server read its clock somewhere in a 50 ms trip: the uncertainty says so.
    assert clock.offset == pytest.approx(0.3, abs=0.06)
    assert clock.uncertainty >= 0.02


def est(name: str, offset: float, uncertainty: float = 0.01) -> ServerEstimate:
    return ServerEstimate(name, offset, 2 * uncertainty, uncertainty, 4)


def test_choose_keeps_the_largest_agreeing_group() -> None:
    kept, ignored = choose(
        [est("a", 1.0), est("b", 1.02), est("c", 0.99), est("d", -7.0)], agreement=0.05
    )
    assert {e.server for e in kept} == {"a", "b", "c"}
    assert set(ignored) == {"d"} and "disagrees" in ignored["d"]


def test_choose_with_two_disagreeing_servers_trusts_the_one_nearer_the_system_clock() -> None:
    kept, ignored = choose([est("far", 120.0), est("near", 0.3)], agreement=0.25)
    assert [e.server for e in kept] == ["near"] and set(ignored) == {"far"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", 123)),
        ("127.0.0.1:1234", ("127.0.0.1", 1234)),
        ("[::1]:1234", ("::1", 1234)),
        ("[::1]", ("::1", 123)),
        ("::1", ("::1", 123)),
    ],
)
def test_split_server(text: str, expected: tuple[str, int]) -> None:
    assert split_server(text) == expected


def node_conf(**extra: Any) -> dict[str, Any]:
    return dict_child({"init_clock_skew": True, "ntp_timeout": 0.5, **extra}, NODE_TEST_CONF)


async def start(conf: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], Any]:
    async with Node(ip="127.0.0.1", port=0, conf=conf) as node:
        await node.start(**kwargs)
        return dict(node.phase_results), node.clock


async def test_node_start_syncs_its_clock() -> None:
    async with fake_ntp(offset=-1.5) as (server, _):
        results, clock = await start(node_conf(ntp_servers=[server]))
    assert clock.offset == pytest.approx(-1.5, abs=0.05)
    assert results["initialize_system_clock"].startswith("ntp")
    skew_ms = float(results["initialize_punch_coordination"].split()[0])
    assert skew_ms == pytest.approx(-1500, abs=50)


@pytest.mark.parametrize(
    "behaviour", [{"answer": False}, {"offset": 99999.0}], ids=["dead", "liar"]
)
async def test_node_start_completes_when_ntp_is_unavailable(behaviour: dict[str, Any]) -> None:
    async with fake_ntp(**behaviour) as (server, _):
        results, clock = await start(node_conf(ntp_servers=[server]))
    assert results["initialize_system_clock"] == "unavailable"
    assert clock.offset == 0


@pytest.mark.parametrize(
    ("conf", "kwargs", "expected"),
    [
        ({"init_clock_skew": False}, {}, "skipped"),
        ({}, {"sys_clock": SystemClock(offset=2.0, source="mine")}, "given"),
    ],
    ids=["init_clock_skew=False", "sys_clock"],
)
async def test_clock_phase_skips(
    conf: dict[str, Any], kwargs: dict[str, Any], expected: str
) -> None:
    # No server at all: if the phase tried NTP it would report "unavailable".
    results, _ = await start(node_conf(ntp_servers=[], **conf), **kwargs)
    assert results["initialize_system_clock"] == expected
