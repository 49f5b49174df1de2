"""Port mapping on the home router: UPnP IGD (``miniupnpc``) raced against PCP / NAT-PMP.

:func:`map_ports` tries every method at once and keeps the first that maps all the
requested protocols; the losers are cancelled (a UPnP call already running in its thread
is waited for, bounded, and whatever it mapped is removed).  The winner is returned as a
:class:`PortMapper`, which refreshes the lease and removes the mappings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from warpgate.portmap.natpmp import NatPmpSession
from warpgate.portmap.types import PortMapError, PortMapping
from warpgate.portmap.upnp import UpnpSession

__all__ = ["METHODS", "PortMapError", "PortMapper", "PortMapping", "map_ports", "port_mappings"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run blocking ``fn(*args)`` (miniupnpc) in its own daemon thread.

    Not ``asyncio.to_thread``: miniupnpc has no timeout on its HTTP calls, and a router
    that stops answering (miniupnpd 2.3.1 does, see docs/portmap.md) would keep an
    executor thread forever, which ``asyncio.run()`` then waits for at shutdown.  A
    daemon thread can be abandoned: callers bound the future with ``wait_for``.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="warpgate upnp", daemon=True).start()
    return future


METHODS = ("upnp", "pcp", "natpmp")


class PortMapper:
    """The winning method's mappings, with refresh and removal."""

    def __init__(self, method: str, session: Any, timeout: float) -> None:
        self.method = method
        self.session = session
        self.timeout = timeout
        self.mappings: list[PortMapping] = list(session.mappings)
        # Losers of the race that may still hold (or still be making) mappings.
        self._stragglers: list[tuple[Any, asyncio.Future[Any] | None]] = []

    async def settle(self) -> None:
        """Wait (bounded) for the race's losers and remove what they mapped, except the
        rules the winner shares with them (same router, same port: one rule)."""
        keep = {(m.protocol, m.external_port, m.internal_port) for m in self.mappings}
        while self._stragglers:
            session, job = self._stragglers[0]
            if job is not None:
                with contextlib.suppress(Exception, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(job), self.timeout + 10)
            session.mappings = [
                m
                for m in session.mappings
                if (m.protocol, m.external_port, m.internal_port) not in keep
            ]
            if session.mappings:
                log.debug("portmap: removing what the losing %s mapped", type(session).__name__)
                loser = PortMapper("loser", session, self.timeout)
                await loser.unmap()
            self._stragglers.pop(0)

    async def refresh(self) -> list[PortMapping]:
        if isinstance(self.session, UpnpSession):
            coro = in_daemon_thread(self.session.refresh)
        else:
            coro = self.session.refresh()
        self.mappings = list(await asyncio.wait_for(coro, self.timeout))
        return self.mappings

    async def unmap(self) -> None:
        await self.settle()
        if isinstance(self.session, UpnpSession):
            coro = in_daemon_thread(self.session.unmap)
        else:
            coro = self.session.unmap()
        try:
            await asyncio.wait_for(coro, self.timeout)
        except (PortMapError, TimeoutError, OSError) as exc:
            log.warning("portmap: could not remove %s mappings: %s", self.method, exc)
        else:
            if self.method != "loser":
                log.info("portmap: %s mappings removed", self.method)
        self.mappings = []


async def _upnp(
    session: UpnpSession,
    jobs: dict[Any, asyncio.Future[Any]],
    internal_port: int,
    protocols: tuple[str, ...],
    *,
    timeout: float,
) -> PortMapper:
    # The thread cannot be stopped: when this loses or times out, map_ports hands the
    # job to the winner, which waits for it and removes whatever it mapped.
    job = jobs[session] = asyncio.ensure_future(
        in_daemon_thread(session.map, internal_port, protocols)
    )
    await asyncio.wait_for(asyncio.shield(job), timeout)
    return PortMapper("upnp", session, timeout)


async def _natpmp(session: NatPmpSession, timeout: float) -> PortMapper:
    await asyncio.wait_for(session.map(), timeout)
    return PortMapper(session.method, session, timeout)


async def map_ports(
    internal_port: int,
    *,
    methods: Sequence[str] = ("upnp", "pcp"),
    protocols: tuple[str, ...] = ("udp", "tcp"),
    lifetime: int = 3600,
    timeout: float = 8.0,
    gateway: str | None = None,
    gateway_port: int = 5351,
    upnp_root_url: str | None = None,
    upnp_discover_delay: float = 1.0,
    natpmp_attempts: int = 4,
) -> PortMapper:
    """Race ``methods`` and return the first that mapped every protocol.

    :raises PortMapError: every method failed; the message names each failure.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PortMapError(f"unknown port mapping methods {unknown} (known: {list(METHODS)})")
    tasks: dict[asyncio.Task[PortMapper], str] = {}
    sessions: dict[asyncio.Task[PortMapper], Any] = {}
    jobs: dict[Any, asyncio.Future[Any]] = {}
    failures: dict[str, str] = {}
    for method in dict.fromkeys(methods):
        session: Any
        if method == "upnp":
            session = UpnpSession(
                root_url=upnp_root_url, discover_delay=upnp_discover_delay, lifetime=lifetime
            )
            coro = _upnp(session, jobs, internal_port, protocols, timeout=timeout)
        elif gateway is None:
            failures[method] = "no default gateway"
            continue
        elif method == "natpmp" and "pcp" in methods:
            continue  # pcp already falls back to NAT-PMP on the same gateway
        else:
            session = NatPmpSession(
                gateway, gateway_port, natpmp_attempts, internal_port, protocols, lifetime,
                pcp=method == "pcp",
            )  # fmt: skip
            coro = _natpmp(session, timeout)
        task = asyncio.create_task(coro, name=f"portmap {method}")
        tasks[task], sessions[task] = method, session
    winner: PortMapper | None = None
    winning_task: asyncio.Task[PortMapper] | None = None
    pending = set(tasks)
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is None and winner is None:
                    winner, winning_task = task.result(), task
                elif exc is not None:
                    failures[tasks[task]] = _reason(exc)
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        stragglers = [(sessions[t], jobs.get(sessions[t])) for t in tasks if t is not winning_task]
        if winner is not None:
            winner._stragglers = stragglers
        else:  # nobody won: still take back anything a slow loser mapped
            cleaner = PortMapper("loser", NatPmpSession("", 0, 1, 0, (), 0, False), timeout)
            cleaner._stragglers = stragglers
            with contextlib.suppress(Exception):
                await cleaner.settle()
    if winner is None:
        raise PortMapError("; ".join(f"{m}: {why}" for m, why in failures.items()) or "no method")
    for method, why in failures.items():
        log.debug("portmap: %s failed: %s", method, why)
    return winner


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def port_mappings(node: object) -> list[PortMapping]:
    """The mappings a node holds (``node.port_mappings``), empty when none."""
    return list(getattr(node, "port_mappings", None) or [])
