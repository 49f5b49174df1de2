"""Every hook a warpgate plugin can implement.

There are four kinds:

* **Phase hooks** -- one per start-up phase of :meth:`warpgate.Node.start`, named
  ``warpgate_<phase>``.  Async, ``firstresult``: implementations run one after another
  in pluggy's order (``tryfirst`` first, the built-in -- always ``trylast`` -- last) and
  the first to return something other than ``None`` ends the phase.  Override a phase by
  implementing its hook and returning a value, or extend it by doing your work and
  returning ``None`` so the built-in runs too.  Blocking the built-in plugin removes its
  implementation altogether.
* **Registration hooks** -- sync, return an iterable of provider records
  (:mod:`warpgate.plugin.types`) for the three roles: traversal methods, name
  services, signal transports.  They must not do I/O; the work happens in the provider
  objects the records' factories create.
* **Observer hooks** -- sync notifications (node started/stopped, connect attempt,
  link established, connect failed).  Every implementation is called; return values are
  ignored; they must not block.  Use them for metrics, logging and tests.
* **Configuration hooks** -- sync; declare the conf keys a plugin reads.

The kernel checks at registration that an implementation is ``async def`` exactly when
its spec is, and bounds each async implementation with the ``plugin_timeout`` conf key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from warpgate.plugin import PROJECT_NAME

if TYPE_CHECKING:
    from warpgate.node.node import Node
    from warpgate.plugin.types import NameServiceInfo, SignalTransportInfo, TraversalMethodInfo

_spec = pluggy.HookspecMarker(PROJECT_NAME)

# ---------------------------------------------------------------------------
# Phase hooks, in the order Node.start() runs them.  Phases 4a-4c run concurrently.
# ---------------------------------------------------------------------------


@_spec(firstresult=True)
async def warpgate_load_network_interfaces(node: Node) -> Any | None:
    """Phase 1: discover the NICs and addresses the node will use.

    Fill ``node.ifs`` with :class:`warpgate.net.interfaces.Interface` records, honouring
    ``node.ifs_wanted`` (names given to ``Node(ifs=...)``) and ``node.ip_wanted``
    (``Node(ip=...)``).

    :param node: the node being started.
    :returns: anything but ``None`` to end the phase; ``None`` lets the next
        implementation run.

    Example -- pin a node to one fixed interface list::

        @hookimpl
        async def warpgate_load_network_interfaces(node):
            node.ifs = [my_interface]
            return True
    """


@_spec(firstresult=True)
async def warpgate_load_machine_identity(node: Node) -> Any | None:
    """Phase 2: load or create the node's keypair and machine id; pick the listen port.

    Sets ``node.machine_id``, ``node.private_key`` and ``node.listen_port`` (unless the
    user gave ``Node(port=...)``).

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example -- keep keys in a hardware token::

        @hookimpl(tryfirst=True)
        async def warpgate_load_machine_identity(node):
            node.private_key = await my_token.load_key()
            return None  # let the built-in derive the machine id and port
    """


@_spec(firstresult=True)
async def warpgate_load_cryptography_and_auth(node: Node) -> Any | None:
    """Phase 3: derive ``node.public_key`` bytes and ``node.node_id`` from the keypair.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_load_cryptography_and_auth(node):
            log.info("starting as %s", node.node_id)  # observe, let the built-in run
    """


@_spec(firstresult=True)
async def warpgate_initialize_system_clock(node: Node) -> Any | None:
    """Phase 4a (concurrent with 4b, 4c): set ``node.clock`` (skipped when
    ``init_clock_skew`` is false or a clock was passed to ``start(sys_clock=...)``).
    The built-in starts the NTP sync in the background; phase 12 waits for it.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_initialize_system_clock(node):
            node.clock = MyPtpClock()
            return True
    """


@_spec(firstresult=True)
async def warpgate_load_p2p_stun_clients(node: Node) -> Any | None:
    """Phase 4b: create STUN clients per interface (when ``enable_stun_clients``).

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_load_p2p_stun_clients(node):
            node.stun_clients = {}  # this app never punches
            return True
    """


@_spec(firstresult=True)
async def warpgate_setup_router_and_signal(node: Node) -> Any | None:
    """Phase 4c: start the selected signal transports (``sig_pipe_no`` > 0).

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_setup_router_and_signal(node):
            if node.conf.get("offline"):
                return "skipped"
    """


@_spec(firstresult=True)
async def warpgate_initialize_punch_coordination(node: Node) -> Any | None:
    """Phase 5: prepare punch timing (the built-in logs the clock skew).

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_initialize_punch_coordination(node):
            metrics.gauge("clock_offset", node.clock.offset)
    """


@_spec(firstresult=True)
async def warpgate_start_maintenance_tasks(node: Node) -> Any | None:
    """Phase 6: start background housekeeping with ``node.spawn(coro, name=...)``.

    Tasks started with ``node.spawn`` are cancelled by ``node.close()``.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_start_maintenance_tasks(node):
            node.spawn(report_health(node), name="health")
    """


@_spec(firstresult=True)
async def warpgate_listen_on_ifs(node: Node) -> Any | None:
    """Phase 7: bind the TCP and UDP servers on every selected address, on
    ``node.listen_port``.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example -- listen on loopback only::

        @hookimpl(tryfirst=True)
        async def warpgate_listen_on_ifs(node):
            node.ip_wanted = ["127.0.0.1"]
            return None  # the built-in binds, now restricted
    """


@_spec(firstresult=True)
async def warpgate_build_node_address(node: Node) -> Any | None:
    """Phase 8: serialise identity and interfaces into ``node.addr_bytes``.

    Runs again at the end of phase 12 when the background work (STUN tests, port
    mapping) changed what goes into the address: implementations must be safe to call
    twice.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_build_node_address(node):
            node.address_hints.append(Hint(HintKind.RELAY, "turn:198.51.100.7:3478"))
            return None  # the built-in encodes, hint included
    """


@_spec(firstresult=True)
async def warpgate_start_background_port_forwarding(node: Node) -> Any | None:
    """Phase 9: start port mapping (UPnP / NAT-PMP / PCP) in the background when
    ``enable_upnp``; phase 12 awaits the result.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_start_background_port_forwarding(node):
            node.spawn(my_pcp_mapping(node), name="pcp")
            return True
    """


@_spec(firstresult=True)
async def warpgate_setup_nickname_service(node: Node) -> Any | None:
    """Phase 10: start the selected name services and, when ``enable_nickname``,
    register the node's own name.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_setup_nickname_service(node):
            return "skipped"  # this deployment has no names
    """


@_spec(firstresult=True)
async def warpgate_setup_traversal_plugins(node: Node) -> Any | None:
    """Phase 11: create the selected traversal-method providers into
    ``node.traversal_methods`` (an ordered ``{name: provider}`` dict).

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_setup_traversal_plugins(node):
            log.info("methods: %s", list(node.plugins.selected("traversal")))
    """


@_spec(firstresult=True)
async def warpgate_finalize_port_forwarding(node: Node) -> Any | None:
    """Phase 12: wait (bounded) for the port mapping started in phase 9.

    :param node: the node being started.
    :returns: non-``None`` to end the phase.

    Example::

        @hookimpl
        async def warpgate_finalize_port_forwarding(node):
            return "skipped"  # never wait for UPnP
    """


# ---------------------------------------------------------------------------
# Registration hooks: hand the kernel provider records for the three roles.
# ``| None``: pluggy leaves ``None`` out of a hook's results, so an implementation
# with nothing to offer may return it (and these docstring-only specs, which pluggy
# never calls, type-check).
# ---------------------------------------------------------------------------


@_spec
def warpgate_register_traversal_methods() -> Iterable[TraversalMethodInfo] | None:
    """Offer traversal methods (ways to reach a peer).

    :returns: an iterable of :class:`~warpgate.plugin.types.TraversalMethodInfo`.
        Names must be unique across all installed plugins.

    Example::

        @hookimpl
        def warpgate_register_traversal_methods():
            return [TraversalMethodInfo(name="carrier-pigeon", factory=PigeonMethod,
                                        cost=900, description="very slow, very direct")]
    """


@_spec
def warpgate_register_name_services() -> Iterable[NameServiceInfo] | None:
    """Offer name-service backends (nickname registration and lookup).

    :returns: an iterable of :class:`~warpgate.plugin.types.NameServiceInfo`.

    Example::

        @hookimpl
        def warpgate_register_name_services():
            return [NameServiceInfo(name="hosts-file", factory=HostsFileNames)]
    """


@_spec
def warpgate_register_signal_transports() -> Iterable[SignalTransportInfo] | None:
    """Offer signal transports (reach a peer before any link exists).

    :returns: an iterable of :class:`~warpgate.plugin.types.SignalTransportInfo`.

    Example::

        @hookimpl
        def warpgate_register_signal_transports():
            return [SignalTransportInfo(name="websocket", factory=WebsocketSignal)]
    """


# ---------------------------------------------------------------------------
# Configuration hooks (``| None`` as for the registration hooks).
# ---------------------------------------------------------------------------


@_spec
def warpgate_conf_defaults() -> Mapping[str, Any] | None:
    """Declare the conf keys this plugin reads, with their defaults.

    Keys declared here are accepted by ``Node(conf=...)`` without the unknown-key
    warning and are filled in with these defaults when absent.  Prefix keys with the
    plugin name to avoid clashes.

    :returns: a mapping of key to default value.

    Example::

        @hookimpl
        def warpgate_conf_defaults():
            return {"pigeon_speed_kmh": 80}
    """


# ---------------------------------------------------------------------------
# Observer hooks: sync, every implementation is called, results ignored.
# ---------------------------------------------------------------------------


@_spec
def warpgate_node_started(node: Node) -> None:
    """The node finished ``start()``; ``node.address()`` is ready.

    Example::

        @hookimpl
        def warpgate_node_started(node):
            log.info("node %s up on port %d", node.node_id, node.listen_port)
    """


@_spec
def warpgate_node_stopped(node: Node) -> None:
    """The node finished ``close()``: its servers, tasks and providers are gone.

    Example::

        @hookimpl
        def warpgate_node_stopped(node):
            metrics.increment("nodes_stopped")
    """


@_spec
def warpgate_connect_attempt(node: Node, attempt: Any) -> None:
    """A traversal method started an attempt to reach a peer.

    :param attempt: a record with at least ``method``, ``local`` and ``remote``.

    Example::

        @hookimpl
        def warpgate_connect_attempt(node, attempt):
            log.debug("trying %s", attempt.method)
    """


@_spec
def warpgate_link_established(node: Node, link: Any) -> None:
    """An authenticated link to a peer is ready (either direction).

    :param link: the new link; ``link.path`` says how it got there.

    Example::

        @hookimpl
        def warpgate_link_established(node, link):
            metrics.increment("links", tags={"method": link.path.method})
    """


@_spec
def warpgate_link_path_changed(node: Node, link: Any, old: Any, new: Any) -> None:
    """A link moved to another path: from a relay to a proven direct path (a
    relay-first link upgrading), or back to the relay when the direct path went silent.

    :param link: the link; ``link.path`` is already ``new``.
    :param old: the previous :class:`~warpgate.link.link.LinkPath`.
    :param new: the current one; ``new.kind`` is ``"relay"`` or ``"direct"``.

    Example::

        @hookimpl
        def warpgate_link_path_changed(node, link, old, new):
            log.info("link %s: %s -> %s", link.remote_key.hex()[:8], old.kind, new.kind)
    """


@_spec
def warpgate_connect_failed(node: Node, attempt: Any, error: BaseException) -> None:
    """An attempt to reach a peer failed.

    :param attempt: the attempt record (as in :func:`warpgate_connect_attempt`).
    :param error: why it failed.

    Example::

        @hookimpl
        def warpgate_connect_failed(node, attempt, error):
            log.info("%s failed: %s", attempt.method, error)
    """


PHASES: tuple[str, ...] = (
    "load_network_interfaces",
    "load_machine_identity",
    "load_cryptography_and_auth",
    "initialize_system_clock",
    "load_p2p_stun_clients",
    "setup_router_and_signal",
    "initialize_punch_coordination",
    "start_maintenance_tasks",
    "listen_on_ifs",
    "build_node_address",
    "start_background_port_forwarding",
    "setup_nickname_service",
    "setup_traversal_plugins",
    "finalize_port_forwarding",
)
"""The phases in start order, as named in spec/nodes.md."""

CONCURRENT_PHASES: frozenset[str] = frozenset(
    {"initialize_system_clock", "load_p2p_stun_clients", "setup_router_and_signal"}
)
"""Phase group 4: run together with ``asyncio.TaskGroup``."""

REQUIRED_PHASES: frozenset[str] = frozenset(
    {
        "load_network_interfaces",
        "load_machine_identity",
        "load_cryptography_and_auth",
        "listen_on_ifs",
        "build_node_address",
        "setup_traversal_plugins",
    }
)
"""Phases a node cannot run without: if no implementation claims one (the built-in
was blocked and nothing replaced it) start() fails and says so."""
