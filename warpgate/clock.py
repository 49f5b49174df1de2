"""Clocks: the system clock, and one corrected by NTP samples (via ``ntplib``).

Hole punching schedules both peers to act at the same instant, so each node needs
to know how far its clock is from true time (``offset``) and how sure it is
(``uncertainty``).

:func:`sync_ntp_clock` asks every server at once (one thread each), several samples per
server, and trusts little:

* a sample whose round trip is long (over ``max_delay``, or more than twice the best
  round trip to that server plus 5 ms) is dropped: the longer the trip, the less we know
  where in it the server read its clock.  Each server's estimate is its best sample
  (the NTP clock filter's idea), its uncertainty half that round trip plus the server's
  own root distance.
* a server whose answer is implausible (unsynchronised, stratum outside 1..15, an offset
  over ``max_offset``) is ignored, with a log line saying why.
* with several servers, the largest group that agrees (within their uncertainties plus
  ``agreement``) wins; the others are ignored as liars, with a log line.  Two servers
  that disagree: the one nearer the system clock wins.
* nobody answers or everybody is ignored: the system clock, ``source`` says why.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: Drop samples whose round trip exceeds the best one to the same server by this much
#: (relative: twice the best, plus this).
DELAY_SLACK = 0.005
SAMPLE_SPACING = 0.02  # seconds between samples to one server


class Clock(Protocol):
    offset: float  # seconds to add to the system clock to get true time
    uncertainty: float  # seconds; how wrong ``time()`` may be

    def time(self) -> float:
        """Seconds since the epoch, corrected."""
        ...


@dataclass
class SystemClock:
    """The system clock, taken as it is (or shifted by a known ``offset``)."""

    offset: float = 0.0
    uncertainty: float = 0.0
    source: str = "system"

    def time(self) -> float:
        return time.time() + self.offset


@dataclass
class NtpClock(SystemClock):
    """The system clock corrected by NTP; ``used`` and ``ignored`` say who was trusted."""

    used: dict[str, ServerEstimate] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # server -> why


@dataclass(frozen=True)
class NtpSample:
    server: str
    offset: float
    delay: float
    root_distance: float = 0.0  # root_delay / 2 + root_dispersion, from the server


@dataclass(frozen=True)
class ServerEstimate:
    server: str
    offset: float
    delay: float
    uncertainty: float
    samples: int  # kept after filtering


class NtpRejected(ValueError):
    """A server's answer is not believable."""


def split_server(server: str, default_port: int = 123) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6]:port"`` or a bare IPv6 address."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, default_port


def _query(server: str, timeout: float) -> NtpSample:
    import ntplib

    host, port = split_server(server)
    stats: Any = ntplib.NTPClient().request(host, version=4, port=port, timeout=timeout)
    if stats.leap == 3:
        raise NtpRejected("unsynchronised (leap indicator 3)")
    if not 1 <= stats.stratum <= 15:
        raise NtpRejected(f"stratum {stats.stratum}")
    if stats.mode != 4:
        raise NtpRejected(f"mode {stats.mode}, not a server answer")
    delay = float(stats.delay)
    if not 0 <= delay <= 2 * timeout:
        raise NtpRejected(f"impossible round-trip delay {delay:.3f} s")
    distance = float(stats.root_delay) / 2 + float(stats.root_dispersion)
    return NtpSample(server, float(stats.offset), delay, distance)


def _poll(server: str, timeout: float, samples: int, deadline: float) -> list[NtpSample]:
    """Up to ``samples`` answers from one server (blocking; run in a thread).

    The first query failing ends the poll (the server is unavailable or rejected);
    later failures only lose that sample.  Nothing starts after ``deadline``.
    """
    got = [_query(server, timeout)]
    for _ in range(samples - 1):
        left = deadline - time.monotonic()
        if left <= SAMPLE_SPACING:
            break
        time.sleep(SAMPLE_SPACING)
        try:
            got.append(_query(server, min(timeout, left)))
        except Exception as exc:
            log.debug("ntp %s: sample lost: %s", server, exc)
    return got


def estimate(samples: Sequence[NtpSample], *, max_delay: float) -> ServerEstimate:
    """One server's estimate from its samples: the best round trip wins.

    :raises NtpRejected: every sample's round trip exceeds ``max_delay``.
    """
    usable = [s for s in samples if s.delay <= max_delay]
    if not usable:
        worst = min(s.delay for s in samples)
        raise NtpRejected(f"round trip {worst * 1000:.0f} ms over ntp_max_delay")
    best_delay = min(s.delay for s in usable)
    kept = [s for s in usable if s.delay <= 2 * best_delay + DELAY_SLACK]
    best = min(kept, key=lambda s: s.delay)
    spread = max(s.offset for s in kept) - min(s.offset for s in kept)
    jitter = min(spread / 2, best.delay / 2)  # offsets wander only within their trips
    uncertainty = best.delay / 2 + best.root_distance + jitter
    return ServerEstimate(best.server, best.offset, best.delay, uncertainty, len(kept))


def choose(
    estimates: Sequence[ServerEstimate], *, agreement: float
) -> tuple[list[ServerEstimate], dict[str, str]]:
    """The largest group of servers that agree; the rest, with why, as ignored."""
    if len(estimates) <= 1:
        return list(estimates), {}

    def agree(a: ServerEstimate, b: ServerEstimate) -> bool:
        return abs(a.offset - b.offset) <= a.uncertainty + b.uncertainty + agreement

    groups = [[e for e in estimates if agree(c, e)] for c in estimates]
    # Biggest group; ties go to the group nearest the system clock (the only other vote).
    best = min(groups, key=lambda g: (-len(g), abs(statistics.median(e.offset for e in g))))
    centre = statistics.median(e.offset for e in best)
    ignored = {
        e.server: f"offset {e.offset:+.3f} s disagrees with the other servers ({centre:+.3f} s)"
        for e in estimates
        if e not in best
    }
    return best, ignored


async def sync_ntp_clock(
    servers: Sequence[str],
    *,
    timeout: float = 2.0,
    samples_per_server: int = 4,
    max_delay: float = 1.0,
    max_offset: float = 600.0,
    agreement: float = 0.25,
) -> SystemClock:
    """Query ``servers`` concurrently and combine what can be trusted (see module doc).

    Bounded: nothing starts after ``1.5 * timeout``; each query waits ``timeout`` at most.
    Returns an :class:`NtpClock`, or a plain :class:`SystemClock` whose ``source`` says
    why NTP could not be used; it never raises for network trouble.
    """
    servers = list(dict.fromkeys(servers))
    deadline = time.monotonic() + 1.5 * timeout
    jobs = [
        asyncio.to_thread(_poll, server, timeout, max(1, samples_per_server), deadline)
        for server in servers
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    estimates: list[ServerEstimate] = []
    ignored: dict[str, str] = {}
    for server, result in zip(servers, results, strict=True):
        if isinstance(result, NtpRejected):
            ignored[server] = str(result)
            log.warning("NTP server %s ignored: %s", server, result)
            continue
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            ignored[server] = f"unavailable: {_why(result)}"
            log.warning("NTP server %s unavailable: %s", server, _why(result))
            continue
        try:
            est = estimate(result, max_delay=max_delay)
        except NtpRejected as exc:
            ignored[server] = str(exc)
            log.warning("NTP server %s ignored: %s", server, exc)
            continue
        if abs(est.offset) > max_offset:
            why = f"offset {est.offset:+.1f} s is beyond ntp_max_offset ({max_offset:g} s)"
            ignored[server] = why
            log.warning("NTP server %s ignored: %s", server, why)
            continue
        estimates.append(est)
    kept, liars = choose(estimates, agreement=agreement)
    for server, why in liars.items():
        log.warning("NTP server %s ignored: %s", server, why)
    ignored.update(liars)
    if not kept:
        log.warning(
            "no NTP server answered or could be trusted (%s); NTP unavailable, using the "
            "system clock for punch timing",
            "; ".join(f"{s}: {w}" for s, w in ignored.items()) or "no servers configured",
        )
        return SystemClock(source="system (ntp unavailable)")
    offsets = [e.offset for e in kept]
    offset = statistics.median(offsets)
    spread = (max(offsets) - min(offsets)) / 2
    uncertainty = statistics.median(e.uncertainty for e in kept) + spread
    names = ", ".join(e.server for e in kept)
    log.info("NTP: offset %+.1f ms ± %.1f ms from %s", offset * 1000, uncertainty * 1000, names)
    return NtpClock(
        offset=offset,
        uncertainty=uncertainty,
        source=f"ntp ({len(kept)} of {len(servers)} servers)",
        used={e.server: e for e in kept},
        ignored=ignored,
    )


def _why(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) or any(w in text.lower() for w in ("timed out", "no resp")):
        return "no answer (timed out)"
    return text or type(exc).__name__
