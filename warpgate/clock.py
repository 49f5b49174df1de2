"""Clocks: the system clock, and one corrected by NTP samples (via ``ntplib``).

Hole punching schedules both peers to act at the same instant, so each node needs
to know how far its clock is from true time (``offset``) and how sure it is
(``uncertainty``).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    offset: float  # seconds to add to the system clock to get true time
    uncertainty: float  # seconds; how wrong ``time()`` may be

    def time(self) -> float:
        """Seconds since the epoch, corrected."""
        ...


@dataclass
class SystemClock:
    """The system clock, taken as it is."""

    offset: float = 0.0
    uncertainty: float = 0.0
    source: str = "system"

    def time(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class NtpSample:
    server: str
    offset: float
    delay: float


def _query(server: str, timeout: float) -> NtpSample:
    import ntplib

    response = ntplib.NTPClient().request(server, version=4, timeout=timeout)
    return NtpSample(server, float(response.offset), float(response.delay))


async def sync_ntp_clock(
    servers: Sequence[str], *, timeout: float = 2.0, samples_per_server: int = 1
) -> SystemClock:
    """Query ``servers`` concurrently and combine the answers.

    The offset is the median of the samples; the uncertainty is half the median
    round-trip delay plus the spread between servers.  Servers that do not answer
    within ``timeout`` are skipped; when none answers, the system clock is returned
    with ``source="system (ntp unavailable)"`` and a warning is logged.
    """
    jobs = [
        asyncio.to_thread(_query, server, timeout)
        for server in servers
        for _ in range(samples_per_server)
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    good = [r for r in results if isinstance(r, NtpSample)]
    for server, result in zip(
        [s for s in servers for _ in range(samples_per_server)], results, strict=True
    ):
        if not isinstance(result, NtpSample):
            log.debug("ntp %s: %s", server, result)
    if not good:
        log.warning(
            "no NTP server answered (%s); using the system clock for punch timing",
            ", ".join(servers) or "none configured",
        )
        return SystemClock(source="system (ntp unavailable)")
    offsets = [s.offset for s in good]
    offset = statistics.median(offsets)
    spread = (max(offsets) - min(offsets)) / 2 if len(offsets) > 1 else 0.0
    uncertainty = statistics.median(s.delay for s in good) / 2 + spread
    return SystemClock(offset=offset, uncertainty=uncertainty, source=f"ntp ({len(good)} samples)")
