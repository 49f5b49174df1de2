"""Relay-first stream links: a TCP link that starts on the relay, moves to a direct TCP
link, and moves back to the relay when the direct link dies, losing, duplicating and
reordering nothing.

Both ends wrap their relayed link in a :class:`MigratingLink` (they agree through the
relay offer).  Every message then carries a header inside the link's encrypted records
(:mod:`warpgate.sansio.stream_migration`): DATA, SWITCH, ACK or RESUME.  The direct link
is a second, separately authenticated link between the same two nodes; each end hands
it to its wrapper with :meth:`MigratingLink.offer_direct`.

**Moving to direct** is one switch per direction: an end sends SWITCH as its last
message on the relay and everything after it on the direct link; the other end reads
the relay up to that SWITCH, then the direct link (whose messages wait in its queue
meanwhile), and answers with its own SWITCH.  Both links are reliable and ordered, so
every message is delivered once, in order.

**Moving back.**  TCP does not say which bytes the peer received, so the wrapper keeps
its own account: the n-th DATA message a side sends is number n; the receiver
acknowledges how many it delivered (ACK, every :data:`ACK_EVERY` messages,
:data:`ACK_BYTES` bytes or :data:`ACK_INTERVAL` s); the sender keeps every
unacknowledged message (at most :data:`MAX_UNACKED` messages and
:data:`MAX_UNACKED_BYTES` bytes; ``send()`` waits while that is full, which is the
backpressure).  The relayed link is *kept open* as a standby
while the direct link carries the data: a TCP allocation is refreshed by the TURN client
anyway, and re-establishing a relayed link after the direct one died would need a new
allocation, a new offer through signalling and a peer that still answers it -- more
round trips and more ways to fail, exactly when the network just broke.  On the direct
link each end pings every :data:`PING_INTERVAL` s; when it has heard nothing on it for
:data:`DEAD_AFTER` s, or the link closes, the end *falls back*: it aborts the direct
link, sends RESUME (the number of its oldest unacknowledged message) on the relay, then
replays every unacknowledged message there and sends everything after them there too.
A RESUME that arrives on the relay makes the other end fall back at once (it need not
wait for its own timer).  The receiver drops the replayed messages it already delivered,
so each message is delivered once and in order.  ``link.path`` follows the sending
direction and the ``warpgate_link_path_changed`` hook fires on every move.

**Moving direct again.**  A fallback ends a *round*; the link then tries again, as
often as it takes, until it closes.  The offering end (the one that made the relay
allocation and dials in round 0) is the only one that dials, so the two ends never race
two direct links.  It waits :data:`RETRY_FIRST` s after the fallback, then
:data:`RETRY_FIRST` doubled per round that failed again, at most :data:`RETRY_MAX` s
(back to :data:`RETRY_FIRST` after a direct link that lasted :data:`RETRY_MAX` s).
Round *n* (n >= 1) starts with ROUND(n) on the relay; the other end reads it after
everything the dialler sent in round n-1 (its RESUME included), resets its per-round
state, begins to expect the direct link of round n (intent derived from the offer's
token and *n*) and echoes ROUND(n); the dialler resets its own state when it reads the
echo -- after everything the other end sent in round n-1 -- and only then dials, under a
timeout, one attempt at a time; from there the round is the first move over again
(SWITCH each way).  Per-round state is the switch flags, the direct link and its
watchers and the fallback flag; the message numbering (sequence numbers,
acknowledgements, the replay buffer) carries on across rounds, which is what lets a
RESUME of any round name any message.  A direct link of an earlier round that arrives
late (or a second one of a round, from a raced dial) is closed, never adopted: each
round's intent stays claimed for :data:`STALE_GRACE` s after the round took its link or
was given up.  A link whose first direct dial failed stays relayed (no direct path is
known to exist); only a link that was direct once keeps trying.

**The standby lost.**  When the relayed link dies while the data runs on the direct
link, the link stays direct (logged) without a standby; if the direct link then dies
too the link closes, saying both reasons.  No new relay allocation is made, so no
further rounds are tried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from warpgate.errors import WarpgateError
from warpgate.link.link import Link, LinkClosed
from warpgate.sansio import stream_migration as sm
from warpgate.sansio.link_records import Record

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

DATA = sm.DATA_HEADER
SWITCH = sm.SWITCH_MESSAGE
#: How long an end that read *switch* waits for its own copy of the direct link.
DIRECT_WAIT = 15.0
#: Unacknowledged messages kept for a replay; ``send()`` waits while either bound is hit.
MAX_UNACKED = 1024
MAX_UNACKED_BYTES = 8 * 1024 * 1024
#: The receiver acknowledges after this many messages or bytes, or this many seconds
#: (bytes: big messages must not wait for the timer, or the window caps throughput).
ACK_EVERY = 64
ACK_BYTES = 1024 * 1024
ACK_INTERVAL = 0.25
#: Liveness of the direct link: a ping every PING_INTERVAL s, dead after DEAD_AFTER s of
#: silence -- back on the relay within DEAD_AFTER + PING_INTERVAL + a relayed round trip.
PING_INTERVAL = 0.5
DEAD_AFTER = 5.0
#: The standby relayed link is pinged this often so NATs and the relay keep it.
STANDBY_KEEPALIVE = 10.0
#: Moving direct again after a fallback: the first try this long after it, doubling per
#: round that failed again, at most RETRY_MAX (read at use, so tests may shorten them).
RETRY_FIRST = 5.0
RETRY_MAX = 60.0
#: How long the dialler waits for the echo of ROUND, and for one direct dial.
ROUND_WAIT = 10.0
DIAL_WAIT = 30.0
#: How long the other end expects a round's direct link (the dialler dials within
#: DIAL_WAIT of the round's start); then it gives the round up.
EXPECT_WAIT = DIAL_WAIT + ROUND_WAIT
#: How long a round's intent stays claimed (late links of it closed) after the round
#: took its direct link or was given up.
STALE_GRACE = 60.0
#: Rounds whose late links are still watched for; older claims are dropped first.
MAX_GUARDS = 4
#: How far ahead of the current round a peer's ROUND may be (the dialler skips a round
#: only when it gave up on its echo); more is refused, and closes the link.
MAX_ROUND_GAP = 8

#: The dialling end: dial the direct link of round n (raises when there is none).
Dial = Callable[[int], Awaitable[Link]]
#: The other end: a future for the inbound direct link of round n.
Expect = Callable[[int], asyncio.Future[Link]]


class MigratingLink(Link[Record]):
    """A link over an inner relayed link that can move to a direct one and back."""

    def __init__(
        self,
        node: Node,
        relayed: Link,
        *,
        dial: Dial | None = None,
        expect: Expect | None = None,
        first_direct: asyncio.Future[Link] | None = None,
    ) -> None:
        """``dial`` on the offering end (it dials every round), ``expect`` and the
        round-0 ``first_direct`` future on the other; neither for a link that only
        moves when :meth:`offer_direct` is called."""
        super().__init__(
            codec=relayed._codec,
            remote_key=relayed.remote_key,
            path=relayed.path,
            initiator=relayed.initiator,
            intent=relayed.intent,
        )
        self.node = node
        self.max_message = relayed.max_message - len(DATA)
        self.relayed = relayed
        self._send_link = relayed
        self._read_link = relayed
        self._direct: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        # Rounds of moving direct (see the module docstring).
        self._dial = dial
        self._expect = expect
        self.direct_round = 0
        self._round_wanted = -1  # the dialler: the round whose echo it waits for
        self._echo: asyncio.Future[None] | None = None
        self._expecting: asyncio.Future[Link] | None = None
        self._guards: list[asyncio.Task[None]] = []  # oldest first
        self._last_round_at = float("-inf")  # when the peer's last ROUND was read
        self._falling: asyncio.Task[None] | None = None
        self._round_over = asyncio.Event()
        self._sent_switch = False
        self._got_switch = False
        self._send_lock = asyncio.Lock()
        # Sending side of the account: messages [_base, _next_seq) are unacknowledged.
        self._unacked: collections.deque[bytes] = collections.deque()
        self._unacked_bytes = 0
        self._base = 0
        self._next_seq = 0
        self._room = asyncio.Event()
        self._room.set()
        # Receiving side: how many DATA messages were delivered, and acknowledged.
        self._delivered = 0
        self._ack_sent = 0
        self._bytes_since_ack = 0
        self._ack_due = asyncio.Event()
        self._skip = 0  # replayed messages still to drop (already delivered)
        # Falling back (once per link).
        self._fallen = False
        self._standby_msg: bytes | None = None
        self._direct_since = 0.0  # when we began reading the direct link
        self._watcher: asyncio.Task[None] | None = None
        #: Diagnostics: how many messages this end replayed, and why it fell back; how
        #: many messages it delivered from each kind of path.
        self.replayed = 0
        self.delivered_from: dict[str, int] = {"relay": 0, "direct": 0}
        self.fallback_reason = ""
        self._reader = asyncio.create_task(self._read(), name="migrating link reader")
        self._tasks = [
            asyncio.create_task(self._acknowledge(), name="migrating link acks"),
            asyncio.create_task(self._watch_direct(), name="migrating link liveness"),
        ]
        if dial is not None:
            self._tasks.append(asyncio.create_task(self._upgrade(), name="moving direct"))
        if first_direct is not None:
            self._take_expected(first_direct, 0)

    # -- moving to direct -----------------------------------------------------------

    def offer_direct(self, link: Link, round: int | None = None) -> None:
        """The direct link of ``round`` (default: the current one) to the same peer
        (authenticated on its own).  A link of another round, or a second one, or one
        that comes after the round fell back, is closed."""
        if link.remote_key != self.remote_key:
            raise ValueError("the direct link goes to another peer")
        if round is None:
            round = self.direct_round
        if round != self.direct_round or self._direct.done() or self.closed or self._fallen:
            log.info(
                "link %s: closed a direct link of round %d (now in round %d)",
                self.remote_key.hex()[:16],
                round,
                self.direct_round,
            )
            self.node.spawn(link.close("not needed"), name="close spare direct link")
            return
        self._direct.set_result(link)

    def _take_expected(self, fut: asyncio.Future[Link], round: int) -> None:
        """The other end: hand the link of ``round`` to the wrapper when it comes."""
        self._expecting = fut

        def arrived(f: asyncio.Future[Link]) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            self.offer_direct(f.result(), round)
            self._guard(round)

        fut.add_done_callback(arrived)
        asyncio.get_running_loop().call_later(EXPECT_WAIT, self._expire, fut)

    def _expire(self, fut: asyncio.Future[Link]) -> None:
        if self._expecting is fut and not fut.done():
            log.info(
                "link %s: no direct link came in round %d",
                self.remote_key.hex()[:16],
                self.direct_round,
            )
            self._give_up_expected()

    def _give_up_expected(self) -> None:
        fut, self._expecting = self._expecting, None
        if fut is not None and not fut.done():
            fut.cancel()
            self._guard(self.direct_round)
            if not self._direct.done():
                # A SWITCH of this round that comes anyway is followed by the dialler's
                # RESUME: the reader must not wait for a link that will not be taken.
                self._direct.cancel()

    def _guard(self, round: int) -> None:
        """Claim ``round``'s intent for STALE_GRACE s: whatever still comes with it
        (a late link of a given-up round, a second link of a raced dial) is closed
        rather than queued for ``accept()``."""
        if self._expect is None or self.closed:
            return
        # A task, not a registration made here: the node drops a cancelled
        # expectation's intent in a callback that runs soon; the task's first step runs
        # after it, so its own claim of the same intent is not dropped with it.
        while len(self._guards) >= MAX_GUARDS:  # the oldest rounds' claims go first
            self._guards.pop(0).cancel()
        task = asyncio.create_task(self._close_stale(round), name="stale direct links")
        self._guards.append(task)
        task.add_done_callback(self._drop_guard)

    def _drop_guard(self, task: asyncio.Task[None]) -> None:
        if task in self._guards:
            self._guards.remove(task)

    async def _close_stale(self, round: int) -> None:
        assert self._expect is not None
        deadline = asyncio.get_running_loop().time() + STALE_GRACE
        for _ in range(64):  # bounded: a flood of stale links ends the guard
            fut = self._expect(round)
            try:
                async with asyncio.timeout_at(deadline):
                    link = await fut
            except TimeoutError:
                return
            finally:
                fut.cancel()
            log.info(
                "link %s: closed a stale direct link of round %d",
                self.remote_key.hex()[:16],
                round,
            )
            self.node.spawn(link.close("stale direct link"), name="close stale direct link")

    async def switch_sending(self) -> None:
        """Send *switch* on the relay and everything after it on the direct link."""
        async with self._send_lock:
            if self._sent_switch or self.closed or self._fallen:
                return
            direct = await self._await_direct()
            if direct is None:  # the direct link died while we waited
                return
            # SWITCH, not a numbered one: both ends know the round (ROUND said it).
            await self.relayed.send(SWITCH)
            self._sent_switch = True
            self._send_link = direct
            self._set_path(direct)

    async def _await_direct(self) -> Link | None:
        """Our copy of the direct link; None once it is no use (a fallback or a close
        cancelled it -- which must not cancel the waiting task).

        :raises TimeoutError: it did not come within DIRECT_WAIT.
        """
        done, _ = await asyncio.wait([self._direct], timeout=DIRECT_WAIT)
        if not done:
            raise TimeoutError("no direct link came")
        if self._direct.cancelled() or self._fallen or self.closed:
            return None
        return self._direct.result()

    def _set_path(self, link: Link) -> None:
        old, self.path = self.path, link.path
        if old == self.path:
            return
        log.info("link %s: moved to %s", self.remote_key.hex()[:16], self.path)
        self.node.plugins.notify(
            "warpgate_link_path_changed", node=self.node, link=self, old=old, new=self.path
        )

    @property
    def on_direct(self) -> bool:
        """Both directions moved to the direct link and it has not died."""
        return self._sent_switch and self._got_switch and not self._fallen

    # -- moving back ------------------------------------------------------------------

    def _direct_link(self) -> Link | None:
        if self._direct.done() and not self._direct.cancelled():
            return self._direct.result()
        return None

    def _request_fallback(self, why: str) -> None:
        """The direct link is dead (or the peer said so): go back to the relay, once."""
        if self._fallen or self.closed:
            return
        self._fallen = True
        self._round_over.set()
        self.fallback_reason = why
        direct = self._direct_link()
        if direct is not None:
            # Abort, not close: a write blocked on a dead connection's full buffer must
            # fail now (a graceful close would wait for that buffer to drain), and the
            # peer must not take a CLOSE record for the end of the whole link.
            transport = getattr(getattr(direct, "_conn", None), "transport", None)
            if transport is not None:
                transport.abort()
            self.node.spawn(direct.close(f"fell back to the relay: {why}"), name="drop direct")
        else:
            self._direct.cancel()
        self._falling = self.node.spawn(self._fall_back(why), name="fall back to the relay")

    async def _fall_back(self, why: str) -> None:
        if self.relayed.closed:
            await self._end(f"(direct link lost: {why}; the relay was lost before)", why)
            return
        try:
            async with self._send_lock:
                # The snapshot and the RESUME that numbers it are taken with no await
                # between them (ACKs trim the buffer concurrently).
                base, replay = self._base, list(self._unacked)
                await self.relayed.send(sm.encode_resume(base))
                for msg in replay:
                    await self.relayed.send(msg)
                self.replayed += len(replay)
                self._send_link = self.relayed
                self._set_path(self.relayed)
        except LinkClosed as exc:
            await self._end(f"(direct link lost: {why}; relay: {exc})", why)
            return
        log.info(
            "link %s: direct link lost (%s); back on the relay, %d messages replayed",
            self.remote_key.hex()[:16],
            why,
            len(replay),
        )

    async def _watch_direct(self) -> None:
        """Ping the direct link while it carries the data; declare it dead after
        DEAD_AFTER s of silence.  Keep the standby relayed link alive meanwhile."""
        standby_ping = time.monotonic()
        while not self.closed:
            await asyncio.sleep(PING_INTERVAL)
            direct = self._direct_link()
            if not self.on_direct or direct is None:
                continue
            now = time.monotonic()
            silent = now - max(direct.last_received, self._direct_since)
            if silent > DEAD_AFTER:
                self._request_fallback(f"nothing heard on it for {silent:.1f} s")
                continue
            self.node.spawn(direct.send_keepalive(), name="direct link ping")
            if now - standby_ping >= STANDBY_KEEPALIVE and not self.relayed.closed:
                standby_ping = now
                self.node.spawn(self.relayed.send_keepalive(), name="standby relay ping")

    async def _watch_standby(self) -> None:
        """While we read the direct link, the relay carries nothing but the peer's
        RESUME when it falls back: take that one message for the reader."""
        try:
            msg = await self.relayed.recv()
        except LinkClosed:
            log.info("link %s: standby relay lost; staying direct", self.remote_key.hex()[:16])
            return
        self._standby_msg = msg
        self._request_fallback("the peer fell back to the relay")

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()  # a cancelled recv() leaves its message in the queue
            await asyncio.gather(watcher, return_exceptions=True)

    # -- moving direct again ---------------------------------------------------------

    async def _upgrade(self) -> None:
        """The dialling end: round 0 at once; after each fallback, another round after
        the backoff, until the link closes (or its relay is gone)."""
        assert self._dial is not None
        round, delay = 0, RETRY_FIRST
        while not self.closed:
            if round > 0:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                if self.relayed.closed:
                    log.info("link %s: no relay left, no more rounds", self.remote_key.hex()[:16])
                    return
                if not await self._start_round(round):
                    round += 1
                    continue
            try:
                async with asyncio.timeout(DIAL_WAIT):
                    direct = await self._dial(round)
            except (WarpgateError, OSError, TimeoutError, LinkClosed) as exc:
                log.info(
                    "link %s: no direct link in round %d: %s",
                    self.remote_key.hex()[:16],
                    round,
                    exc,
                )
                if round == 0:
                    return  # no direct path is known to exist: stay relayed
                round += 1
                continue
            self.offer_direct(direct, round)
            try:
                await self.switch_sending()
            except (TimeoutError, LinkClosed, ConnectionError) as exc:
                log.info("relayed stream link could not move: %s", exc)
            began = time.monotonic()
            closed = asyncio.ensure_future(self._closed.wait())
            over = asyncio.ensure_future(self._round_over.wait())
            try:
                await asyncio.wait([closed, over], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                over.cancel()
            if time.monotonic() - began >= RETRY_MAX:
                delay = RETRY_FIRST  # it was direct for long: a new failure starts over
            round += 1

    async def _settle(self) -> bool:
        """Wait (bounded) until this end's last fallback is done and both directions
        run on the relay."""
        for _ in range(int(DIRECT_WAIT / 0.05)):
            if self.closed or self.relayed.closed:
                return False
            falling = self._falling
            if falling is not None and not falling.done():
                await asyncio.wait([falling], timeout=DIRECT_WAIT)
                continue
            if self._send_link is self.relayed and self._read_link is self.relayed:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _start_round(self, round: int) -> bool:
        """The dialler: ROUND(round) on the relay, then wait for the echo (the reader
        resets the round state when it reads it).  False: no round now."""
        if not await self._settle():
            return False
        self._round_wanted = round
        self._echo = asyncio.get_running_loop().create_future()
        try:
            async with self._send_lock:
                await self.relayed.send(sm.encode_round(round))
            async with asyncio.timeout(ROUND_WAIT):
                await self._echo
        except (TimeoutError, LinkClosed) as exc:
            log.info(
                "link %s: round %d not started: %s",
                self.remote_key.hex()[:16],
                round,
                exc or "no echo",
            )
            return False
        finally:
            self._echo = None
        return True

    async def _on_round(self, round: int) -> None:
        """ROUND read on the relay (everything the peer sent before it was read too)."""
        if self._dial is not None:  # the echo of our ROUND
            echo = self._echo
            if round == self._round_wanted and echo is not None and not echo.done():
                await self._new_round(round)
                # _start_round may have given up on the echo while we waited for the
                # send lock (a sender blocked on a full relay): then it is stale.
                if echo is self._echo and not echo.done():
                    echo.set_result(None)
            return  # an echo we gave up on
        if round <= self.direct_round:
            raise sm.StreamHeaderError(f"round {round} after round {self.direct_round}")
        now = time.monotonic()
        if now - self._last_round_at < RETRY_FIRST / 2:
            # The dialler waits at least RETRY_FIRST between rounds: faster ones are a
            # peer making us set up rounds (expectations, timers, echoes) in a loop.
            raise sm.StreamHeaderError(f"round {round} came too soon after the last")
        self._last_round_at = now
        if round > self.direct_round + MAX_ROUND_GAP:
            # The dialler numbers rounds one by one (a round whose echo it gave up on is
            # skipped): a jump is a peer making us set up work for rounds it never dials.
            raise sm.StreamHeaderError(f"round {round} after round {self.direct_round}: too far")
        if not self._fallen and (self._sent_switch or self._got_switch):
            raise sm.StreamHeaderError(f"round {round} while round {self.direct_round} is direct")
        falling = self._falling
        if falling is not None and not falling.done():
            await asyncio.wait([falling])  # our RESUME goes before our echo
        self._give_up_expected()
        await self._new_round(round)
        if self._expect is not None:
            self._take_expected(self._expect(round), round)
        async with self._send_lock:
            await self.relayed.send(sm.encode_round(round))

    async def _new_round(self, round: int) -> None:
        """Reset the per-round state; the message numbering carries on."""
        await self._stop_watcher()
        async with self._send_lock:
            old = self._direct_link()
            if old is not None:
                self.node.spawn(old.close("a new round"), name="close old direct link")
            elif not self._direct.done():
                self._direct.cancel()
            self._direct = asyncio.get_running_loop().create_future()
            self.direct_round = round
            self._sent_switch = self._got_switch = self._fallen = False
            self._round_over.clear()
            self._standby_msg = None
            self._direct_since = 0.0
            self._falling = None
        log.info("link %s: round %d of moving direct", self.remote_key.hex()[:16], round)

    # -- liveness: the inner links' ------------------------------------------------

    def _inner_links(self) -> list[Link]:
        links = [self.relayed]
        direct = getattr(self, "_direct", None)
        if direct is not None and direct.done() and not direct.cancelled():
            links.append(direct.result())
        return links

    @property
    def last_received(self) -> float:
        """When the peer was last heard from on any inner link (records reach the inner
        links, never this wrapper)."""
        own = self.__dict__.get("_own_last_received", 0.0)
        if "relayed" not in self.__dict__:
            return float(own)
        return max([float(own)] + [getattr(x, "last_received", 0.0) for x in self._inner_links()])

    @last_received.setter
    def last_received(self, value: float) -> None:
        self.__dict__["_own_last_received"] = value

    async def send_keepalive(self) -> None:
        """A keepalive goes on the link that currently carries our messages."""
        probe = getattr(self._send_link, "send_keepalive", None)
        if probe is not None:
            await probe()

    # -- Link -------------------------------------------------------------------

    def _full(self) -> bool:
        return len(self._unacked) >= MAX_UNACKED or self._unacked_bytes >= MAX_UNACKED_BYTES

    async def _send_message(self, data: bytes) -> None:
        msg = DATA + data
        while True:
            while self._full() and not self._closed.is_set():
                self._room.clear()
                await self._room.wait()  # backpressure: the peer has not acknowledged
            if self.closed:
                raise LinkClosed(f"link closed {self._close_reason}".strip())
            async with self._send_lock:
                if self._full():
                    continue  # another sender took the room first
                self._unacked.append(msg)
                self._unacked_bytes += len(msg)
                self._next_seq += 1
                link = self._send_link
                try:
                    await link.send(msg)
                except LinkClosed:
                    if link is self.relayed:
                        raise
                    # The message is kept: the fallback replays it over the relay.
                    self._request_fallback("the direct link closed")
                return

    async def _acknowledge(self) -> None:
        while not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_INTERVAL):
                    await self._ack_due.wait()
            self._ack_due.clear()
            count = self._delivered
            self._bytes_since_ack = 0
            if count <= self._ack_sent:
                continue
            async with self._send_lock:
                link = self._send_link
                try:
                    await link.send(sm.encode_ack(count))
                except LinkClosed:
                    if link is self.relayed:
                        return  # the reader ends the wrapper
                    self._request_fallback("the direct link closed")
                    continue
            self._ack_sent = max(self._ack_sent, count)

    def _on_ack(self, count: int) -> None:
        if count > self._next_seq:
            raise sm.StreamHeaderError(
                f"the peer acknowledged {count} messages, only {self._next_seq} were sent"
            )
        while self._base < count:
            self._unacked_bytes -= len(self._unacked.popleft())
            self._base += 1
        if not self._full():
            self._room.set()

    async def ping(self, timeout: float = 5.0) -> float:
        return await self._send_link.ping(timeout)

    async def close(self, reason: str = "") -> None:
        await self._end(f"(closed by us{': ' + reason if reason else ''})", reason)

    async def _end(self, why: str, reason: str = "") -> None:
        if self.closed:
            return
        self._mark_closed(why)
        self._room.set()
        current = asyncio.current_task()
        for task in [self._reader, self._watcher, *self._tasks, *self._guards]:
            if task is not None and task is not current:
                task.cancel()
        if self._expecting is not None:
            self._expecting.cancel()
        # The standby first: a peer that sees the direct link close by a CLOSE record
        # ends its wrapper too, rather than falling back to a relay we are closing.
        links = [self.relayed]
        direct = self._direct_link()
        if direct is not None:
            links.append(direct)
        else:
            self._direct.cancel()
        for link in links:
            with contextlib.suppress(Exception):
                await link.close(reason)

    async def _shutdown(self, reason: str) -> None:
        await self.close(reason)

    async def _transmit(self, records: list[Record]) -> None:
        raise LinkClosed("a migrating link sends through its inner links")

    # -- receiving -----------------------------------------------------------------

    async def _leave_direct(self, link: Link) -> None:
        """The direct link we read closed: back to reading the relay (unless the peer
        closed the whole link, or the relay is gone too)."""
        why = link._close_reason or "(closed)"
        if why.startswith("(closed by peer"):
            raise LinkClosed(why)  # the peer closed the whole link, not just this path
        if self.relayed.closed:
            raise LinkClosed(
                f"(direct link lost {why}, and the relay before it {self.relayed._close_reason})"
            )
        self._request_fallback("the direct link closed")
        await self._stop_watcher()
        self._read_link = self.relayed

    async def _read(self) -> None:
        reason = ""
        try:
            while True:
                link = self._read_link
                if self._standby_msg is not None and link is self.relayed:
                    msg, self._standby_msg = self._standby_msg, None
                else:
                    try:
                        msg = await link.recv()
                    except LinkClosed:
                        if link is self.relayed:
                            raise
                        await self._leave_direct(link)
                        continue
                if msg[:1] == DATA:  # the common case, without building a Header
                    if self._skip:
                        self._skip -= 1  # replayed, and delivered before
                        continue
                    await self._deliver(msg[1:])
                    continue
                head = sm.decode(msg)
                if head.kind == sm.DATA:
                    if self._skip:
                        self._skip -= 1  # replayed, and delivered before
                        continue
                    await self._deliver(head.body)
                elif head.kind == sm.ACK:
                    self._on_ack(head.value)
                elif head.kind == sm.RESUME:
                    if head.value > self._delivered:
                        raise sm.StreamHeaderError(
                            f"the peer resumes at message {head.value}, "
                            f"but only {self._delivered} arrived"
                        )
                    self._skip = self._delivered - head.value
                    self._request_fallback("the peer fell back to the relay")
                elif head.kind == sm.SWITCH:
                    if self._read_link is self.relayed and not self._got_switch:
                        await self._follow_switch()
                    # A switch that crossed our fallback: the peer's RESUME follows.
                elif head.kind == sm.ROUND:
                    await self._on_round(head.value)
        except LinkClosed as exc:
            if self._read_link is self.relayed:
                reason = self.relayed._close_reason or str(exc)
            else:  # from _leave_direct: says why there is nothing to fall back to
                reason = str(exc)
        except sm.StreamHeaderError as exc:
            reason = f"(protocol error: {exc})"
        except TimeoutError:
            reason = "(the peer switched to a direct link this end never got)"
        finally:
            if not self.closed:
                why = reason or "(inner link closed)"
                self.node.spawn(self._end(why, why.strip("()")), name="close migrating link")

    async def _follow_switch(self) -> None:
        if self._fallen:
            return
        direct = await self._await_direct()
        if direct is None:
            return
        self._read_link = direct
        self._got_switch = True
        self._direct_since = time.monotonic()
        self._watcher = asyncio.create_task(self._watch_standby(), name="standby relay")
        self.node.spawn(self.switch_sending(), name="answer switch")

    async def _deliver(self, data: bytes) -> None:
        self.messages_received += 1
        self.bytes_received += len(data)
        self._delivered += 1
        self.delivered_from["relay" if self._read_link is self.relayed else "direct"] += 1
        self._bytes_since_ack += len(data)
        if self._delivered - self._ack_sent >= ACK_EVERY or self._bytes_since_ack >= ACK_BYTES:
            self._ack_due.set()
        if self._on_message is not None and await self._on_message(data, self):
            return
        await self._queue.put(data)
