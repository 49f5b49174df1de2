"""Conformance checks for providers: does a plugin keep the contracts the kernel and
other plugins rely on?  One async function per role, usable from any test (the
plugin template's tests call them):

* :func:`check_traversal_method` -- registered under its name, ``candidates()`` is
  synchronous and returns well-formed candidates of the asked transport, and every
  transport that has candidates yields an authenticated link to the right peer that
  carries messages both ways;
* :func:`check_name_service` -- a registered name resolves, from another node, to the
  registering node's address; an unknown name raises ``LookupError``; a peer connects
  by the name;
* :func:`check_signal_transport` -- a payload reaches the addressed node's handlers
  intact with the sender's key, and ``reverse`` connect works over it;
* :func:`check_phase_hook` -- a node with the plugin starts, records the phase's
  result, and closes.

Every check also verifies that closing the nodes leaves no task of theirs running.
A failure raises :class:`ConformanceError` saying which promise was broken.
Two nodes run on 127.0.0.1 in this process, keys in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from warpgate.config import dict_child
from warpgate.connect import auto_connect
from warpgate.interfaces import Candidate
from warpgate.node.node import Node
from warpgate.node.node_defs import NODE_TEST_CONF

TIMEOUT = 10.0


class ConformanceError(AssertionError):
    """A provider broke a promise of its role."""


def _require(ok: object, what: str) -> None:
    if not ok:
        raise ConformanceError(what)


@contextlib.asynccontextmanager
async def node_pair(
    plugins: Sequence[object] = (), conf: Mapping[str, Any] | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes on loopback with ``plugins`` and ``conf`` (over
    ``NODE_TEST_CONF`` with in-process signalling); checks no task outlives them."""
    before = asyncio.all_tasks()
    with tempfile.TemporaryDirectory(prefix="warpgate-conformance-") as home:
        base = dict_child(
            {"install_path": home, "sig_pipe_no": 1, "plugins": {"signal": ["memory"]}},
            NODE_TEST_CONF,
        )
        merged = dict_child(dict(conf or {}), base)
        async with (
            Node(
                ip="127.0.0.1", port=0, conf=dict(merged, identity_name="conf-a"), plugins=plugins
            ) as a,
            Node(
                ip="127.0.0.1", port=0, conf=dict(merged, identity_name="conf-b"), plugins=plugins
            ) as b,
        ):
            await a.start()
            await b.start()
            yield a, b
        await asyncio.sleep(0)  # let cancelled tasks finish their last step
        left = [
            t
            for t in asyncio.all_tasks() - before
            if not t.done() and t is not asyncio.current_task()
        ]
        _require(not left, f"tasks still running after the nodes closed: {left}")


async def _echo_once(node: Node) -> None:
    link = await node.accept(TIMEOUT)
    msg = await link.recv(TIMEOUT)
    await link.send(b"echo:" + msg)


async def _round_trip(a: Node, b: Node, dest: object, **kw: Any) -> str:
    server = asyncio.create_task(_echo_once(b))
    try:
        link, method = await auto_connect(a, dest, timeout=TIMEOUT, **kw)
        try:
            _require(link.remote_key == b.public_key, "the link reached the wrong peer")
            await link.send(b"conformance")
            echo = await link.recv(TIMEOUT)
            _require(echo == b"echo:conformance", f"the link garbled a message: {echo!r}")
        finally:
            await link.close()
        await asyncio.wait_for(server, TIMEOUT)
        return method
    finally:
        server.cancel()
        with contextlib.suppress(BaseException):
            await server


async def check_traversal_method(
    name: str, *, plugins: Sequence[object] = (), conf: Mapping[str, Any] | None = None
) -> list[str]:
    """Check traversal method ``name``; returns what was verified, one line each."""
    done: list[str] = []
    async with node_pair(plugins, conf) as (a, b):
        info = a.plugins.providers("traversal").get(name)
        _require(info is not None, f"no traversal method {name!r} is registered")
        provider = a.traversal_methods.get(name)
        if provider is None:  # an explicit check (not _require): it narrows the type
            raise ConformanceError(f"the node did not start traversal method {name!r}")
        _require(getattr(provider, "name", None) == name, "provider.name differs from its record")
        _require(
            not inspect.iscoroutinefunction(provider.candidates), "candidates() must not be async"
        )
        _require(inspect.iscoroutinefunction(provider.attempt), "attempt() must be async")
        from warpgate.sansio.address import NodeAddress

        peer = NodeAddress.decode(b.address())
        transports = tuple(getattr(info, "transports", ("tcp",)))
        worked = 0
        for transport in ("tcp", "udp"):
            cands = provider.candidates(peer, transport=transport)
            _require(isinstance(cands, list), "candidates() must return a list")
            for cand in cands:
                _require(isinstance(cand, Candidate), f"not a Candidate: {cand!r}")
                _require(cand.method == name, f"candidate names method {cand.method!r}")
                _require(cand.transport == transport, f"{cand} is not of transport {transport}")
            if transport not in transports:
                _require(not cands, f"candidates for {transport}, which the record does not list")
                continue
            if not cands:
                done.append(f"{transport}: no candidates on loopback")
                continue
            method = await _round_trip(a, b, b.address(), methods=[name], transport=transport)
            _require(method == name, f"the link says method {method!r}, not {name!r}")
            done.append(f"{transport}: authenticated link, message round trip")
            worked += 1
        _require(worked, f"{name!r} made no link on loopback with any transport")
    done.append("closed without leaving tasks")
    return done


async def check_name_service(
    name: str, *, plugins: Sequence[object] = (), conf: Mapping[str, Any] | None = None
) -> list[str]:
    """Check name backend ``name``; returns what was verified."""
    stack = {"plugins": {"name_service": [name]}}
    async with node_pair(plugins, dict_child(dict(conf or {}), stack)) as (a, b):
        service_a, service_b = a.name_services.get(name), b.name_services.get(name)
        if service_a is None or service_b is None:
            raise ConformanceError(f"{name!r} did not start")
        full = await service_a.register("conformance-alice", a)
        _require(isinstance(full, str) and full, "register() must return the full name")
        _require(await service_b.resolve(full) == a.address(), "resolve() gave another address")
        try:
            await service_b.resolve("nobody-has-this-name")
        except LookupError:
            pass
        else:
            raise ConformanceError("resolving an unknown name must raise LookupError")
        await _round_trip(b, a, full)
    return [
        "register() returns the full name",
        "another node resolves it to the registering node's address",
        "an unknown name raises LookupError",
        "a peer connects by the name",
        "closed without leaving tasks",
    ]


async def check_signal_transport(
    name: str, *, plugins: Sequence[object] = (), conf: Mapping[str, Any] | None = None
) -> list[str]:
    """Check signal transport ``name``; returns what was verified."""
    stack = {"sig_pipe_no": 1, "plugins": {"signal": [name]}}
    async with node_pair(plugins, dict_child(stack, dict(conf or {}))) as (a, b):
        sender, receiver = a.signal_transports.get(name), b.signal_transports.get(name)
        if sender is None or receiver is None:
            raise ConformanceError(f"{name!r} did not start")
        got: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

        def handler(sender_key: bytes, payload: bytes) -> None:
            if payload.startswith(b"conformance:") and not got.done():
                got.set_result((sender_key, payload))

        receiver.add_handler(handler)
        payload = b"conformance:" + bytes(range(256))
        await sender.send(b.public_key, payload)
        key, data = await asyncio.wait_for(got, TIMEOUT)
        _require(data == payload, "the payload changed on the way")
        _require(key == a.public_key, "the handler was given the wrong sender key")
        method = await _round_trip(a, b, b.address(), methods=["reverse"])
        _require(method == "reverse", "reverse connect did not use the transport")
    return [
        "a payload arrives intact with the sender's key",
        "reverse connect works over it",
        "closed without leaving tasks",
    ]


async def check_phase_hook(
    phase: str, *, plugins: Sequence[object] = (), conf: Mapping[str, Any] | None = None
) -> list[str]:
    """Check that nodes with the plugin start, record ``phase``, link and close."""
    async with node_pair(plugins, conf) as (a, b):
        _require(phase in a.phase_results, f"phase {phase!r} did not run")
        await _round_trip(a, b, b.address())
    return [f"nodes start with phase {phase!r} and link", "closed without leaving tasks"]
