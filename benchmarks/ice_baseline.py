"""The ICE baseline of the NAT matrix: two ``aioice`` agents in two lab hosts.

aioice (RFC 5245, asyncio, the ICE stack of aiortc) with the lab's coturn as its STUN
and TURN server.  One try is what a WebRTC-style application does to reach a peer:

1. the controlling agent (host ``a``) gathers its candidates (host, server-reflexive,
   relayed: aioice has no trickle, so gathering finishes first) and sends an offer;
2. the controlled agent (host ``b``) gathers on receiving it and answers;
3. both run the connectivity checks (``connect()``); the controlling agent nominates;
4. ``a`` sends a datagram until ``b``'s echo comes back.

The offer and answer go through an in-process future (zero signalling cost, in ICE's
favour).  Measured on ``a``: time to the first echoed byte from step 1, the part after
both candidate lists are known (checks + echo), and the nominated pair's candidate
types (``relay`` on either end means the data is relayed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aioice

#: How often the first datagram is sent again while no echo came back (UDP loses it).
RESEND = 0.1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IceServers:
    """The STUN/TURN server both agents use (the lab's coturn)."""

    host: str
    port: int
    username: str
    password: str

    @classmethod
    def from_lab(cls, lab: Any) -> IceServers:
        stun = lab.servers["stun"]
        return cls(stun["host"], int(stun["port"]), stun["username"], stun["password"])


def _agent(servers: IceServers, controlling: bool) -> aioice.Connection:
    return aioice.Connection(
        ice_controlling=controlling,
        components=1,
        stun_server=(servers.host, servers.port),
        turn_server=(servers.host, servers.port),
        turn_username=servers.username,
        turn_password=servers.password,
        use_ipv6=False,  # the lab is IPv4-only; v6 link-local addresses only add checks
    )


def _description(conn: aioice.Connection) -> dict[str, Any]:
    return {
        "username": conn.local_username,
        "password": conn.local_password,
        "candidates": [c.to_sdp() for c in conn.local_candidates],
    }


async def _use_description(conn: aioice.Connection, desc: dict[str, Any]) -> None:
    conn.remote_username = desc["username"]
    conn.remote_password = desc["password"]
    for sdp in desc["candidates"]:
        await conn.add_remote_candidate(aioice.Candidate.from_sdp(sdp))
    await conn.add_remote_candidate(None)  # end of candidates: failure is reported


def _pair_types(conn: aioice.Connection) -> tuple[str, str]:
    pair = conn._nominated.get(1)  # aioice exposes the nominated pair only here
    if pair is None:
        return ("", "")
    return (pair.local_candidate.type, pair.remote_candidate.type)


async def controlling(
    servers: IceServers,
    offer_out: concurrent.futures.Future[dict[str, Any]],
    answer_in: concurrent.futures.Future[dict[str, Any]],
    done: concurrent.futures.Future[bool],
    timeout: float,
) -> dict[str, Any]:
    """Host ``a``: offer, connect, time the first echoed datagram."""
    conn = _agent(servers, True)
    begin = time.perf_counter()
    out: dict[str, Any] = {"ok": False, "kind": None}
    try:
        async with asyncio.timeout(timeout):
            await conn.gather_candidates()
            out["gathered"] = time.perf_counter() - begin
            offer_out.set_result(_description(conn))
            await _use_description(conn, await asyncio.wrap_future(answer_in))
            checks = time.perf_counter()
            await conn.connect()
            echo = await _first_echo(conn)
            now = time.perf_counter()
            local, remote = _pair_types(conn)
            out.update(
                ok=echo == b"echo:ping",
                seconds=now - begin,
                checks_seconds=now - checks,
                pair=f"{local}->{remote}",
                kind="relay" if "relay" in (local, remote) else "direct",
            )
    except (TimeoutError, ConnectionError, OSError) as exc:
        out.update(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - begin)
    finally:
        if not offer_out.done():
            offer_out.set_exception(ConnectionError("the controlling agent gave up"))
        if not done.done():
            done.set_result(True)
        await conn.close()
    return out


async def _first_echo(conn: aioice.Connection) -> bytes:
    """Send ``ping`` until something comes back (bounded by the caller's timeout)."""
    for _ in range(10_000):
        await conn.send(b"ping")
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(conn.recv(), RESEND)
    raise TimeoutError("no echo")


async def controlled(
    servers: IceServers,
    offer_in: concurrent.futures.Future[dict[str, Any]],
    answer_out: concurrent.futures.Future[dict[str, Any]],
    done: concurrent.futures.Future[bool],
    timeout: float,
) -> dict[str, Any]:
    """Host ``b``: answer the offer, connect, echo every datagram until ``a`` is done."""
    conn = _agent(servers, False)
    out: dict[str, Any] = {"ok": False}
    try:
        async with asyncio.timeout(timeout):
            offer = await asyncio.wrap_future(offer_in)
            await conn.gather_candidates()
            answer_out.set_result(_description(conn))
            await _use_description(conn, offer)
            await conn.connect()
            echoing = asyncio.create_task(_echo(conn))
            try:
                await asyncio.wrap_future(done)
            finally:
                echoing.cancel()
            local, remote = _pair_types(conn)
            out.update(ok=True, pair=f"{local}->{remote}")
    except (TimeoutError, ConnectionError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if not answer_out.done():
            answer_out.set_exception(ConnectionError("the controlled agent gave up"))
        await conn.close()
    return out


async def _echo(conn: aioice.Connection) -> None:
    for _ in range(100_000):
        data = await conn.recv()
        await conn.send(b"echo:" + data)


async def ice_try(lab: Any, servers: IceServers, timeout: float = 15.0) -> dict[str, Any]:
    """One ICE session from host ``a`` (controlling) to host ``b``; the result of ``a``."""
    offer: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
    answer: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    dialled, _answered = await asyncio.gather(
        lab.arun("a", controlling, servers, offer, answer, done, timeout, timeout=timeout + 10),
        lab.arun("b", controlled, servers, offer, answer, done, timeout, timeout=timeout + 10),
    )
    return dialled
