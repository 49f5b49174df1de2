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
from typing import TYPE_CHECKING, Any

from warpgate.config import check_core_conf, check_port, dict_child, warn_unknown_keys
from warpgate.errors import AddressError, FrameError, PhaseError, UnavailableError
from warpgate.net.interfaces import Interface, IPv4, IPv6
from warpgate.node.node_defs import NODE_CONF
from warpgate.plugin.manager import WarpgatePluginManager, make_plugin_manager
from warpgate.plugin.spec import CONCURRENT_PHASES, PHASES, REQUIRED_PHASES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from warpgate.clock import Clock
    from warpgate.net.servers import Listener, ServerPipe
    from warpgate.sansio.address import Hint

log = logging.getLogger(__name__)

MsgCallback = Callable[[bytes, tuple[str, int], "ServerPipe"], Awaitable[None] | None]


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
        self.signal_transports: dict[str, Any] = {}
        self.name_services: dict[str, Any] = {}
        self.traversal_methods: dict[str, Any] = {}
        self.listeners: list[Listener] = []
        self.address_hints: list[Hint] = []
        self.addr_bytes: bytes = b""
        self.phase_times: dict[str, float] = {}
        self.phase_results: dict[str, Any] = {}

        self._msg_cbs: list[MsgCallback] = []
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
        """Call ``cb(msg, client_tup, pipe)`` for every message on every server socket.

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

    # -- message delivery (used by the listen plugin) ------------------------------------

    async def deliver_message(
        self, msg: bytes, client_tup: tuple[str, int], pipe: ServerPipe
    ) -> None:
        """Hand one received message to every callback; a failing callback is logged
        and does not stop the others."""
        for cb in list(self._msg_cbs):
            try:
                result = cb(msg, client_tup, pipe)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("message callback %r failed", cb)

    async def handle_tcp_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: ServerPipe
    ) -> None:
        """Read length-prefixed frames from an inbound connection until it closes."""
        from warpgate.sansio.framing import FrameDecoder

        decoder = FrameDecoder(max_size=self.conf["max_message_size"])
        while True:
            data = await reader.read(65536)
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                log.warning("dropping connection from %s: %s", pipe.remote, exc)
                return
            for frame in frames:
                await self.deliver_message(frame, pipe.remote, pipe)

    async def handle_datagram(self, data: bytes, addr: tuple[str, int], pipe: ServerPipe) -> None:
        await self.deliver_message(data, addr, pipe)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "started" if self.started else "new"
        return f"<Node {self.node_id[:16] or '?'} port={self.listen_port} {state}>"
