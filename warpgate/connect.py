"""``auto_connect``: race every way of reaching a peer, keep the first authenticated link.

Candidates come from the selected traversal methods, cheapest first.  They start
staggered, happy-eyeballs style: the next one starts when the previous one fails or
after ``stagger`` seconds, whichever is first, so a dead path never holds up a live one
for long and a live one is rarely raced by needless work.  The first attempt that
completes the authenticated handshake wins; every other attempt is cancelled and any
link it still produced is closed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from warpgate.errors import AddressError, UnavailableError, WarpgateError
from warpgate.interfaces import Candidate, Transport
from warpgate.sansio.address import NodeAddress, is_text_address, parse_address

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

Outcome = Literal["pending", "won", "failed", "cancelled", "not needed"]


@dataclass
class Attempt:
    """One attempt of one candidate, as recorded in a connect trace."""

    candidate: Candidate
    started: float  # seconds since auto_connect was called
    ended: float | None = None
    outcome: Outcome = "pending"
    error: str = ""

    @property
    def method(self) -> str:
        return self.candidate.method

    @property
    def local(self) -> str | None:
        return self.candidate.local_ip

    @property
    def remote(self) -> tuple[str, int] | None:
        return self.candidate.remote

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def describe(self) -> str:
        took = f"{self.duration * 1000:.0f} ms" if self.duration is not None else "-"
        why = f": {self.error}" if self.error else ""
        return f"{self.candidate.describe()} -> {self.outcome} after {took}{why}"


class ConnectError(WarpgateError, ConnectionError):
    """No attempt reached the peer.  ``attempts`` says what was tried and why each
    failed."""

    def __init__(self, message: str, attempts: list[Attempt] | None = None) -> None:
        self.attempts = attempts or []
        lines = [message] + [f"  - {a.describe()}" for a in self.attempts]
        super().__init__("\n".join(lines))


@dataclass
class _Race:
    node: Node
    peer: NodeAddress
    intent: bytes
    attempt_timeout: float
    begin: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)
    running: dict[asyncio.Task[Link], Attempt] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.begin

    def record(self, candidate: Candidate) -> Attempt:
        attempt = Attempt(candidate, started=self.now())
        self.attempts.append(attempt)
        self.node.plugins.notify("warpgate_connect_attempt", node=self.node, attempt=attempt)
        return attempt

    def start(self, candidate: Candidate, provider: object) -> asyncio.Task[Link]:
        attempt = self.record(candidate)
        task = asyncio.create_task(self._run(provider, candidate), name=candidate.describe())
        self.running[task] = attempt
        return task

    async def _run(self, provider: object, candidate: Candidate) -> Link:
        async with asyncio.timeout(self.attempt_timeout):
            return await provider.attempt(self.peer, candidate, intent=self.intent)  # type: ignore[attr-defined]

    async def run_alone(
        self, candidate: Candidate, provider: object, overall: float
    ) -> Link | None:
        """The only candidate: awaited in place, with no task to race it against (a task
        and the wait for it cost two event-loop turns, a large share of a loopback
        connect).  Recorded exactly as a raced attempt: when its deadline is the overall
        one (``overall``, no later), running out of time is the overall deadline's doing."""
        attempt = self.record(candidate)
        try:
            link = await self._run(provider, candidate)
        except TimeoutError as exc:
            attempt.ended = self.now()
            if self.attempt_timeout >= overall and not str(exc):
                attempt.outcome = "cancelled"  # auto_connect says: overall deadline reached
            else:
                self._failed(attempt, exc)
            return None
        except Exception as exc:
            attempt.ended = self.now()
            self._failed(attempt, exc)
            return None
        except asyncio.CancelledError:
            attempt.ended, attempt.outcome = self.now(), "cancelled"
            raise
        attempt.ended, attempt.outcome = self.now(), "won"
        return link

    def finish(self, task: asyncio.Task[Link]) -> Link | None:
        attempt = self.running.pop(task)
        attempt.ended = self.now()
        if task.cancelled():
            attempt.outcome = "cancelled"
            return None
        exc = task.exception()
        if exc is not None:
            self._failed(attempt, exc)
            return None
        return task.result()

    def _failed(self, attempt: Attempt, exc: BaseException) -> None:
        attempt.outcome = "failed"
        attempt.error = (
            f"timed out after {self.attempt_timeout:g} s"
            if isinstance(exc, TimeoutError) and not str(exc)  # the attempt's deadline
            else f"{type(exc).__name__}: {exc}"
            if str(exc)
            else type(exc).__name__
        )
        self.node.plugins.notify(
            "warpgate_connect_failed", node=self.node, attempt=attempt, error=exc
        )

    async def cancel_all(self) -> None:
        if not self.running:
            return
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            attempt = self.running.pop(task)
            attempt.ended = self.now()
            attempt.outcome = "cancelled"
            if not isinstance(result, BaseException):  # finished as we cancelled it
                attempt.outcome = "not needed"
                await result.close("another path won")


# Sorts a path the NAT information says cannot work after hole punching (cost 6) and
# before a relay: it still runs (a port mapping the address cannot show may open it),
# but it no longer holds up punching by a stagger or by its timeout.
DOOMED_PENALTY = 2.5


def _doomed_penalty(node: Node, peer: NodeAddress, cand: Candidate) -> float:
    from warpgate.sansio.punch_plan import direct_hopeless

    if cand.method == "direct" and cand.remote is not None:
        for iface in peer.interfaces:
            if iface.ext_ip is not None and str(iface.ext_ip) == cand.remote[0]:
                if str(iface.nic_ip) != cand.remote[0] and direct_hopeless(
                    iface.nat_type, cand.transport
                ):
                    return DOOMED_PENALTY
    if cand.method == "reverse":
        # The peer dials us back: hopeless when our own NAT filters inbound TCP.
        ours = [r.nat_type for r in node.nat_reports.values()]
        if ours and all(direct_hopeless(t, "tcp") for t in ours):
            return DOOMED_PENALTY
    return 0.0


async def resolve_destination(node: Node, dest: object) -> NodeAddress:
    """Address bytes, a :class:`NodeAddress`, its text form, or a nickname."""
    if isinstance(dest, str) and not is_text_address(dest):
        if not node.name_services:
            raise UnavailableError(
                f"cannot resolve the name {dest!r}: no name service is running (install or "
                "select one, or pass the peer's address instead)"
            )
        errors = []
        for service in node.name_services.values():
            try:
                return parse_address(await service.resolve(dest))
            except (LookupError, AddressError, WarpgateError) as exc:
                errors.append(f"{getattr(service, 'name', service)}: {exc}")
        raise ConnectError(f"no name service knows {dest!r} ({'; '.join(errors)})")
    if isinstance(dest, NodeAddress | bytes | bytearray | memoryview | str):
        return parse_address(dest)
    raise TypeError(f"dest must be address bytes, a NodeAddress, text or a name, not {dest!r}")


async def auto_connect(
    node: Node,
    dest: object,
    *,
    methods: list[str] | None = None,
    transport: Transport = "tcp",
    timeout: float | None = None,
    attempt_timeout: float | None = None,
    stagger: float = 0.25,
    run_all: bool = False,
    intent: bytes = b"",
) -> tuple[Link, str]:
    """Connect to ``dest`` by the first traversal method that works.

    :param dest: the peer's address (bytes, :class:`NodeAddress` or its ``wg1...``
        text) or nickname (``"alice.p2p"``).
    :param methods: traversal method names to use, in order of preference; default:
        every method the node started, in stack order.
    :param transport: ``"tcp"`` (reliable, ordered; the default) or ``"udp"``.
    :param timeout: overall deadline in seconds (default: conf ``connect_timeout``).
    :param attempt_timeout: deadline of each attempt (default: ``timeout``).
    :param stagger: seconds to wait for an attempt before starting the next in parallel.
    :param run_all: run every candidate to its end (diagnostics): the trace then shows
        every method's outcome; the first link still wins and the others are closed.
    :returns: ``(link, method_name)``.  ``link.trace`` lists every attempt.
    :raises ConnectError: nothing worked; its ``attempts`` say what failed and why.
    """
    if not node.started:
        raise RuntimeError("start the node first: await node.start()")
    peer = await resolve_destination(node, dest)
    if peer.public_key == node.public_key:
        raise ConnectError("that address is this node's own")
    timeout = node.conf["connect_timeout"] if timeout is None else timeout
    available = node.traversal_methods
    if methods is not None:
        unknown = [m for m in methods if m not in available]
        if unknown:
            raise ConnectError(
                f"traversal method {', '.join(map(repr, unknown))} is not running on this "
                f"node; running: {', '.join(available) or '(none)'}"
            )
        chosen = {name: available[name] for name in methods}
    else:
        chosen = dict(available)
    ranked: list[tuple[float, int, Candidate, object, bool]] = []
    for order, (_name, provider) in enumerate(chosen.items()):
        for cand in provider.candidates(peer, transport=transport):
            penalty = _doomed_penalty(node, peer, cand)
            ranked.append((cand.cost + penalty, order, cand, provider, penalty > 0))
    ranked.sort(key=lambda r: (r[0], r[1]))
    if not ranked:
        raise ConnectError(
            f"no traversal method can reach this peer over {transport} "
            f"(methods: {', '.join(chosen) or 'none'}; the peer lists "
            f"{len(peer.interfaces)} address(es))"
        )

    race = _Race(node, peer, intent or secrets.token_bytes(8), attempt_timeout or timeout)
    queue = [(cand, provider, doomed) for _c, _o, cand, provider, doomed in ranked]
    winner: Link | None = None
    last_start = -stagger
    # A candidate may ask for a head start (``extra["head_start"]``, seconds): hole
    # punching, whose direct path should not lose to a relay started while it is still
    # probing.  Nothing later starts during it, unless that attempt ends first.
    head_until, head_task = 0.0, cast("asyncio.Task[Link] | None", None)
    try:
        if len(queue) == 1 and race.attempt_timeout <= timeout:
            # One candidate, whose own deadline is the tighter: no race, no outer deadline.
            cand, provider, _doomed = queue.pop()
            winner = await race.run_alone(cand, provider, timeout)
        elif queue:
            async with asyncio.timeout(timeout):
                while queue or race.running:
                    if queue and (
                        not race.running
                        or (race.now() - last_start >= stagger and race.now() >= head_until)
                    ):
                        cand, provider, doomed = queue.pop(0)
                        task = race.start(cand, provider)
                        # An attempt the NAT information says cannot work is not waited
                        # for: the next one (a relay, say) starts at once beside it.
                        last_start = -stagger if doomed else race.now()
                        head = float(cand.extra.get("head_start", 0.0))  # type: ignore[arg-type]
                        if head > 0:
                            head_until, head_task = last_start + head, task
                    wait = (
                        max(stagger - (race.now() - last_start), head_until - race.now())
                        if queue
                        else None
                    )
                    done, _ = await asyncio.wait(
                        race.running,
                        timeout=max(wait, 0) if wait is not None else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for task in done:
                        if task is head_task:
                            head_until = 0.0
                        attempt = race.running[task]
                        link = race.finish(task)
                        if link is None:
                            last_start = -stagger  # a failure frees the next start at once
                            continue
                        if winner is None:
                            winner, attempt.outcome = link, "won"
                        else:
                            attempt.outcome = "not needed"
                            await link.close("another path won")
                    if winner is not None and not run_all:
                        break
    except TimeoutError:
        pass
    finally:
        await race.cancel_all()
        for attempt in race.attempts:
            if attempt.outcome == "cancelled" and winner is None:
                attempt.error = f"overall deadline of {timeout:g} s reached"
    node.last_connect_trace = race.attempts
    if winner is None:
        raise ConnectError(
            f"could not connect to {peer.public_key.hex()[:16]}... within {race.now():.1f} s",
            race.attempts,
        )
    winner.trace = list(race.attempts)
    node.adopt_link(winner, inbound=False)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "connected to %s by %s in %.1f ms",
            peer.public_key.hex()[:16],
            winner.path,
            race.now() * 1000,
        )
    return winner, winner.path.method
