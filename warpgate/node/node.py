"""The Node kernel: it orders the start-up phases, owns the node's state and tears it
down.  Everything that touches the network is done by plugins through the hooks in
:mod:`warpgate.plugin.spec`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from warpgate.config import check_core_conf, check_port, dict_child, warn_unknown_keys
from warpgate.errors import AddressError, PhaseError, UnavailableError
from warpgate.link.link import Link
from warpgate.link.udp import UdpLinks
from warpgate.net.interfaces import Interface, IPv4, IPv6
from warpgate.node.node_defs import NODE_CONF
from warpgate.plugin.manager import WarpgatePluginManager, make_plugin_manager
from warpgate.plugin.spec import CONCURRENT_PHASES, PHASES, REQUIRED_PHASES
from warpgate.sansio import stun
from warpgate.sansio.link_handshake import LinkIdentity
from warpgate.sansio.link_resumption import ResumptionTickets

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from warpgate.clock import Clock
    from warpgate.net.servers import Listener, ServerPipe
    from warpgate.portmap import PortMapping
    from warpgate.sansio.address import Hint
    from warpgate.stun.client import BindingTransaction
    from warpgate.stun.nat import NatReport

log = logging.getLogger(__name__)

T = TypeVar("T")
INBOUND_BACKLOG = 128  # inbound links waiting for accept(); more are refused

MsgCallback = Callable[[bytes, tuple[str, int], "Link"], Awaitable[None] | None]


def _phase_labels() -> dict[str, str]:
    """'1', '2', '3', '4a', '4b', '4c', '5', ... as in spec/nodes.md."""
    labels: dict[str, str] = {}
    number, letter = 0, 0
    for phase in PHASES:
        if phase in CONCURRENT_PHASES:
            if letter == 0:
                number += 1
            labels[phase] = f"{number}{'abc'[letter]}"
            letter += 1
        else:
            letter = 0
            number += 1
            labels[phase] = str(number)
    return labels


PHASE_LABELS = _phase_labels()


class Node:
    """A warpgate node: identity, servers, connections and the traversal engine.

    :param ifs: pre-loaded :class:`~warpgate.net.interfaces.Interface` records, or
        interface names (``["eth0"]``) to restrict discovery to.  Empty: auto-discover.
    :param ip: restrict listening to this address or these addresses.
    :param port: TCP/UDP listen port.  ``None`` derives it from the machine id
        (falling back to other derived ports when taken); ``0`` takes any free port.
    :param stop_rw: a ``socket.socketpair()`` used to ask the node to stop from any
        thread or signal handler (:meth:`request_stop`).  Created when ``None``.
    :param conf: configuration dict; defaults to ``NODE_CONF``.  Missing keys are taken
        from ``NODE_CONF`` and from the defaults plugins declare.
    :param plugins: extra plugin objects (modules or instances with ``@hookimpl``
        functions) registered for this node only.
    """

    def __init__(
        self,
        ifs: Sequence[Interface | str] | None = None,
        ip: str | Sequence[str] | None = None,
        port: int | None = None,
        stop_rw: tuple[socket.socket, socket.socket] | None = None,
        conf: dict[str, Any] | None = None,
        *,
        plugins: Sequence[object] = (),
    ) -> None:
        user_conf = NODE_CONF if conf is None else conf
        disable = (user_conf.get("plugins") or {}).get("disable") or ()
        self.plugins: WarpgatePluginManager = make_plugin_manager(disable=disable, inline=plugins)
        plugin_defaults = self.plugins.conf_defaults()
        warn_unknown_keys(user_conf, {*NODE_CONF, *plugin_defaults}, stacklevel=2)
        self.conf: dict[str, Any] = dict_child(user_conf, dict_child(plugin_defaults, NODE_CONF))
        check_core_conf(self.conf)

        ifs = list(ifs or [])
        self.ifs: list[Interface] = [i for i in ifs if isinstance(i, Interface)]
        self.ifs_wanted: list[str] = [i for i in ifs if isinstance(i, str)]
        self.ip_wanted: list[str] = [ip] if isinstance(ip, str) else list(ip or [])
        self.port: int | None = check_port(port)
        self.listen_port: int = port or 0

        # Created in start() when not given, so a Node that never starts holds no sockets.
        self._own_stop_rw = stop_rw is None
        self.stop_rw: tuple[socket.socket, socket.socket] | None = stop_rw

        # Filled in by the phases (see warpgate.plugin.spec for who sets what).
        self.machine_id: bytes = b""
        self.private_key: ec.EllipticCurvePrivateKey | None = None
        self.public_key: bytes = b""
        self.node_id: str = ""
        self.clock: Clock | None = None
        self.stun_clients: dict[Any, Any] = {}
        # STUN Binding transactions sent from a listening socket, by transaction id
        # (see warpgate.stun.node_binding), and the NAT reports by listener IP.
        self.stun_transactions: dict[bytes, BindingTransaction] = {}
        # Extra consumers of datagrams on the listening UDP sockets (hole-punching probes):
        # each returns True when it took the datagram.
        self.datagram_taps: list[Callable[[bytes, tuple[str, int], Listener], bool]] = []
        self.nat_reports: dict[str, NatReport] = {}
        self.port_mappings: list[PortMapping] = []  # filled by phases 9/12 (port mapping)
        self.signal_transports: dict[str, Any] = {}
        self.name_services: dict[str, Any] = {}
        self.traversal_methods: dict[str, Any] = {}
        self.listeners: list[Listener] = []
        self.address_hints: list[Hint] = []
        self.addr_bytes: bytes = b""
        self.phase_times: dict[str, float] = {}
        self.phase_results: dict[str, Any] = {}

        self._msg_cbs: list[MsgCallback] = []
        self._link_identity: LinkIdentity | None = None
        self._link_tickets: ResumptionTickets | None = None
        self.links: set[Link] = set()
        self._inbound: asyncio.Queue[Link] = asyncio.Queue(INBOUND_BACKLOG)
        self._awaited_intents: dict[bytes, asyncio.Future[Link]] = {}
        self.last_connect_trace: list[Any] = []
        self._udp: UdpLinks | None = None
        self.dropped_connections = 0
        self.dropped_datagrams = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cleanups = contextlib.AsyncExitStack()
        self._stopped = asyncio.Event()
        self.started = False
        self.closed = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(
        self,
        sys_clock: Clock | None = None,
        out: bool = False,
        cout: Callable[[str], object] = print,
    ) -> Node:
        """Run the start-up phases in order (group 4 concurrently) and return self.

        :param sys_clock: reuse an existing clock instead of syncing a new one.
        :param out: print one progress line per phase through ``cout``.
        :raises PhaseError: a required phase had no implementation.
        :raises WarpgateError: a phase failed; everything started so far is closed.
        """
        if self.closed:
            raise RuntimeError("this node was closed; create a new Node")
        if self.started:
            return self
        if sys_clock is not None:
            self.clock = sys_clock
        if self.stop_rw is None:
            self.stop_rw = socket.socketpair()
        begin = time.perf_counter()
        try:
            index = 0
            while index < len(PHASES):
                phase = PHASES[index]
                if phase in CONCURRENT_PHASES:
                    group = [p for p in PHASES[index:] if p in CONCURRENT_PHASES]
                    async with asyncio.TaskGroup() as tg:
                        for p in group:
                            tg.create_task(self._run_phase(p, out, cout))
                    index += len(group)
                else:
                    await self._run_phase(phase, out, cout)
                    index += 1
        except BaseException as exc:
            await self.close()
            # TaskGroup wraps failures of the concurrent phases; surface the first.
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0] from None
            raise
        self.started = True
        total = (time.perf_counter() - begin) * 1000
        if out:
            cout(f"node {self.node_id[:16]} started in {total:.1f} ms on port {self.listen_port}")
        log.info("node %s started in %.1f ms, port %d", self.node_id, total, self.listen_port)
        self.plugins.notify("warpgate_node_started", node=self)
        return self

    async def _run_phase(self, phase: str, out: bool, cout: Callable[[str], object]) -> None:
        begin = time.perf_counter()
        result = await self.plugins.acall(
            f"warpgate_{phase}", timeout=self.conf["plugin_timeout"], node=self
        )
        elapsed = time.perf_counter() - begin
        self.phase_times[phase] = elapsed
        self.phase_results[phase] = result
        if result is None and phase in REQUIRED_PHASES:
            blocked = [r.name for r in self.plugins.records.values() if r.status == "blocked"]
            raise PhaseError(
                f"no plugin completed the start-up phase {phase!r}"
                + (f" (blocked plugins: {', '.join(blocked)})" if blocked else "")
                + "; a node cannot start without it",
                phase=phase,
            )
        status = result if isinstance(result, str) else "ok"
        log.debug("phase %s: %s in %.2f ms", phase, status, elapsed * 1000)
        if out:
            label = PHASE_LABELS[phase]
            cout(f"[{label:>3}/12] {phase:<34} {status:<12} {elapsed * 1000:7.1f} ms")

    async def close(self) -> None:
        """Stop everything the node started: tasks, servers, providers.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for link in list(self.links):
            with contextlib.suppress(Exception):
                await link.close("node closing")
        for fut in self._awaited_intents.values():
            fut.cancel()
        try:
            await self._cleanups.aclose()
        finally:
            if self._own_stop_rw and self.stop_rw is not None:
                for sock in self.stop_rw:
                    sock.close()
            self._stopped.set()
            was_started, self.started = self.started, False
            if was_started:
                self.plugins.notify("warpgate_node_stopped", node=self)

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def request_stop(self) -> None:
        """Ask the node to stop; safe from any thread or a signal handler.

        Wakes :meth:`wait_stopped`; the owner then calls :meth:`close`.
        """
        if self.stop_rw is None:
            self._stopped.set()  # not started: nothing is watching the socket pair yet
            return
        with contextlib.suppress(OSError):
            self.stop_rw[1].send(b"\x00")

    async def wait_stopped(self) -> None:
        """Wait until :meth:`request_stop` is called or the node is closed."""
        await self._stopped.wait()

    def _on_stop_requested(self) -> None:
        self._stopped.set()

    # -- helpers for plugins -----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the node closes."""
        task = asyncio.create_task(coro, name=f"warpgate {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def wait_for_job(self, task: asyncio.Task[T], *, timeout: float, what: str) -> T:
        """Wait at most ``timeout`` seconds for a background job started with
        :meth:`spawn` (phase 12 waits for start-up's network work this way).

        :raises TimeoutError: the job did not finish in time; it has been cancelled and
            a warning naming ``what`` logged, so the caller only records the outcome.
        """
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            log.warning("%s unavailable (no result within %.1f s)", what, timeout)
            raise

    def add_cleanup(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Call ``callback()`` (async) when the node closes, last added first."""
        self._cleanups.push_async_callback(callback)

    # -- user API ----------------------------------------------------------------------

    def address(self) -> bytes:
        """The serialised node address (see docs/address.md) to share with peers."""
        if not self.addr_bytes:
            raise AddressError("the node has no address yet: await node.start() first")
        return self.addr_bytes

    def supported(self) -> list[int]:
        """The address families in use: ``[IP4]``, ``[IP6]`` or ``[IP4, IP6]``."""
        families = {af for iface in self.ifs for af in iface.families}
        return [af for af in (IPv4, IPv6) if af in families]

    def add_msg_cb(self, cb: MsgCallback) -> None:
        """Call ``cb(msg, client_tup, pipe)`` for every message that arrives on an
        inbound link (from any server socket) not yet taken with :meth:`accept`;
        ``pipe`` is that link.

        ``cb`` may be a plain or an async function.  Adding the same callback twice
        has no effect.
        """
        if cb not in self._msg_cbs:
            self._msg_cbs.append(cb)

    def remove_msg_cb(self, cb: MsgCallback) -> None:
        with contextlib.suppress(ValueError):
            self._msg_cbs.remove(cb)

    async def nickname(self, name: str) -> str:
        """Register ``name`` for this node with the name services; returns the full
        name (``"alice.p2p"``).

        :raises UnavailableError: no name service is selected.
        """
        if not self.name_services:
            raise UnavailableError(
                "nicknames need a name service, and none is running: install or select "
                "one (conf['plugins']['name_service']) and keep enable_nickname on"
            )
        full = ""
        for service in self.name_services.values():
            full = await service.register(name, self)
        return full

    # -- links --------------------------------------------------------------------------

    @property
    def link_identity(self) -> LinkIdentity:
        """This process's signed Noise key for link handshakes (made on first use)."""
        if self._link_identity is None:
            if self.private_key is None:
                raise RuntimeError("the node has no identity yet: await node.start() first")
            self._link_identity = LinkIdentity.create(self.private_key, self.public_key)
        return self._link_identity

    @property
    def link_tickets(self) -> ResumptionTickets:
        """Resumption tickets from this node's full link handshakes (conf
        ``link_resumption``): a later TCP link to the same peer resumes one."""
        if self._link_tickets is None:
            if self.public_key is None:
                raise RuntimeError("the node has no identity yet: await node.start() first")
            self._link_tickets = ResumptionTickets(
                self.public_key, lifetime=float(self.conf["link_resumption"])
            )
        return self._link_tickets

    async def connect(self, dest: object, **options: Any) -> Link:
        """Connect to a peer (address bytes, text or nickname); see
        :func:`warpgate.auto_connect` for the options.  Returns the link."""
        from warpgate.connect import auto_connect

        link, _method = await auto_connect(self, dest, **options)
        return link

    async def accept(self, timeout: float | None = None) -> Link:
        """The next inbound link (one a peer opened to us).

        Messages on a link taken here go to its ``recv()``; before that, they go to the
        :meth:`add_msg_cb` callbacks (or wait for ``accept()`` if there are none).
        """
        async with asyncio.timeout(timeout):
            link = await self._inbound.get()
        link._accepted = True
        return link

    def expect_inbound(self, intent: bytes) -> asyncio.Future[Link]:
        """A future for the inbound link that will carry ``intent`` (reverse connect)."""
        fut: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        self._awaited_intents[intent] = fut

        def done(_f: asyncio.Future[Link]) -> None:
            # Only this expectation's own entry: a newer one for the same intent stays.
            if self._awaited_intents.get(intent) is fut:
                del self._awaited_intents[intent]

        fut.add_done_callback(done)
        return fut

    def adopt_link(self, link: Link, *, inbound: bool) -> None:
        """Track a new link: closed with the node, announced to observers, and for an
        inbound link, routed to a waiting reverse connect or to :meth:`accept`."""
        self.links.add(link)
        link._on_closed = self.links.discard
        self.plugins.notify("warpgate_link_established", node=self, link=link)
        if not inbound:
            return
        waiter = self._awaited_intents.get(link.intent) if link.intent else None
        if waiter is not None and not waiter.done():
            waiter.set_result(link)
            return
        self.offer_inbound(link)

    def offer_inbound(self, link: Link) -> None:
        """Queue ``link`` for :meth:`accept` (and route its messages to the callbacks
        until accepted)."""
        link._accepted = False
        link._on_message = self._on_inbound_message
        link._on_message_wanted = self._has_message_callbacks
        try:
            self._inbound.put_nowait(link)
        except asyncio.QueueFull:
            log.warning("inbound backlog full: refusing link from %s", link.path.remote)
            self.spawn(link.close("backlog full"), name="close refused link")

    def _has_message_callbacks(self) -> bool:
        return bool(self._msg_cbs)

    async def _on_inbound_message(self, msg: bytes, link: Link) -> bool:
        """Deliver to the message callbacks; True when nobody else will read it."""
        if not self._msg_cbs:
            return False
        await self.deliver_message(msg, link.path.remote, link)
        return not link._accepted

    async def deliver_message(self, msg: bytes, client_tup: tuple[str, int], pipe: Any) -> None:
        """Hand one received message to every callback; a failing callback is logged
        and does not stop the others."""
        for cb in list(self._msg_cbs):
            try:
                result = cb(msg, client_tup, pipe)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("message callback %r failed", cb)

    def tcp_protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for the listening TCP sockets: each connection must
        complete a link handshake within ``handshake_timeout``, or is dropped with a log
        line."""
        from warpgate.link.tcp import responder_factory

        return responder_factory(
            lambda: self.link_identity,
            max_message=self.conf["max_message_size"],
            encrypt=self.conf["link_encryption"],
            handshake_timeout=lambda: self.conf["handshake_timeout"],
            on_link=lambda link: self.adopt_link(link, inbound=True),
            on_failure=self._connection_dropped,
            tickets=lambda: self.link_tickets,
        )

    def _connection_dropped(self, reason: str, peer: tuple[str, int]) -> None:
        self.dropped_connections += 1
        log.warning("dropped connection from %s:%s: %s", peer[0], peer[1], reason)

    @property
    def udp(self) -> UdpLinks:
        """The UDP link endpoint (handshakes and demux on the listening sockets)."""
        if self._udp is None:
            self._udp = UdpLinks(self)
        return self._udp

    async def handle_datagram(self, data: bytes, addr: tuple[str, int], pipe: ServerPipe) -> None:
        """A datagram on a listening UDP socket: to a pending STUN transaction, else to
        the UDP links, else dropped."""
        if self.stun_transactions and stun.is_stun(data):
            txn = self.stun_transactions.get(data[8:20])
            if txn is not None and txn.feed(data, addr):
                return
        # Pipes of listening sockets always have their listener; the UDP links answer
        # through it, so a pipe without one has nothing here to go to.
        listener = pipe.listener
        if listener is not None:
            for tap in self.datagram_taps:
                if tap(data, addr, listener):
                    return
            if await self.udp.datagram_received(data, addr, listener):
                return
        self.dropped_datagrams += 1
        log.debug("dropped %d-byte datagram from %s", len(data), addr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "started" if self.started else "new"
        return f"<Node {self.node_id[:16] or '?'} port={self.listen_port} {state}>"
