"""Shared by the punch lab tests and the punch benchmark: two nodes in two lab hosts,
each classifying its NAT against the lab's coturn, signalling through the in-process
transport; one accepts, the other auto_connects."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from typing import Any

from warpgate import NODE_TEST_CONF, Node, auto_connect, dict_child
from warpgate.connect import ConnectError
from warpgate.testing.echo_node import run_echo_node

TIMEOUT = 20.0


def node_conf(name: str, stun: str, **extra: Any) -> dict[str, Any]:
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["memory"]},
            "enable_stun_clients": True,
            "stun_servers": [stun],
            "stun_timeout": 2.0,
            "stun_cache_ttl": 0,
            **extra,
        },
        NODE_TEST_CONF,
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def serve(
    name: str,
    stun: str,
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    rounds: int,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """Accept ``rounds`` links, echo one message on each; stay up until ``done``."""
    seen = []
    async with Node(port=0, conf=node_conf(name, stun, **extra)) as node:
        await node.start()
        address_out.set_result(node.address())
        for _ in range(rounds):
            try:
                link = await node.accept(timeout=TIMEOUT)
            except TimeoutError:
                break
            msg = await link.recv(timeout=TIMEOUT)
            await link.send(b"echo:" + msg)
            seen.append({"path": str(link.path), "method": link.path.method})
        await asyncio.wrap_future(done)
    return seen


async def dial(
    name: str,
    stun: str,
    address_in: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    tries: list[dict[str, Any]],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    """One auto_connect per entry of ``tries`` (its kwargs), one echo each; a failure is
    recorded, not raised."""
    results = []
    try:
        async with Node(port=0, conf=node_conf(name, stun, **extra)) as node:
            await node.start()
            address = await asyncio.wrap_future(address_in)
            for kwargs in tries:
                begin = time.perf_counter()
                try:
                    link, method = await auto_connect(node, address, **kwargs)
                    await link.send(b"hi")
                    echo = await link.recv(timeout=TIMEOUT)
                    took = time.perf_counter() - begin
                    results.append(
                        {
                            "ok": echo == b"echo:hi",
                            "method": method,
                            "path": str(link.path),
                            "seconds": took,
                            "trace": [a.describe() for a in link.trace],
                        }
                    )
                    await link.close("done")
                except ConnectError as exc:
                    results.append(
                        {
                            "ok": False,
                            "method": None,
                            "error": str(exc),
                            "seconds": time.perf_counter() - begin,
                        }
                    )
    finally:
        if not done.done():
            done.set_result(True)
    return results


async def run_pair(
    lab: Any,
    tries: list[dict[str, Any]],
    *,
    server_host: str = "b",
    client_host: str = "a",
    server_extra: dict[str, Any] | None = None,
    client_extra: dict[str, Any] | None = None,
    accepts: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stun = f"{lab.servers['stun']['host']}:{lab.servers['stun']['port']}"
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    limit = 60 + 25 * len(tries)
    served, dialled = await asyncio.gather(
        lab.arun(
            server_host,
            serve,
            f"srv-{server_host}",
            stun,
            address,
            done,
            len(tries) if accepts is None else accepts,
            server_extra or {},
            timeout=limit,
        ),
        lab.arun(
            client_host,
            dial,
            f"cli-{client_host}",
            stun,
            address,
            done,
            tries,
            client_extra or {},
            timeout=limit,
        ),
    )
    return served, dialled


# --- the NAT matrix: every method competing, as in real use ----------------------------

MATRIX_MODES = ("open", "full-cone", "address-restricted", "port-restricted", "symmetric")
MATRIX_CONNECT_TIMEOUT = 10.0
ECHO_RESEND = 0.1  # UDP links may lose a datagram: the first message is resent


def matrix_conf(lab: Any, name: str, **extra: Any) -> dict[str, Any]:
    """Every installed method on, pointed at the lab's servers: signalling through the
    lab's mosquitto, STUN and TURN from its coturn; no UPnP (the cells compare
    traversal, not port mapping)."""
    stun = lab.servers["stun"]
    server = f"{stun['host']}:{stun['port']}"
    mqtt = lab.servers["mqtt"]
    return dict_child(
        {
            "identity_name": name,
            "sig_pipe_no": 1,
            "plugins": {"signal": ["mqtt"]},
            "mqtt_brokers": [f"mqtt://{mqtt['host']}:{mqtt['port']}"],
            "mqtt_reconnect_initial": 0.1,
            "mqtt_reconnect_max": 0.5,
            "enable_stun_clients": True,
            "stun_servers": [server],
            "stun_timeout": 2.0,
            "stun_cache_ttl": 0,
            "turn_servers": [server],
            "turn_username": stun["username"],
            "turn_password": stun["password"],
            "enable_upnp": False,
            "enable_nickname": False,
            "connect_timeout": MATRIX_CONNECT_TIMEOUT,
            **extra,
        },
        NODE_TEST_CONF,
    )


async def first_echo(link: Any, message: bytes = b"ping") -> bytes:
    """Send ``message`` until the peer's echo comes back (bounded by the caller)."""
    for _ in range(10_000):
        await link.send(message)
        try:
            got: bytes = await link.recv(timeout=ECHO_RESEND)
            return got
        except TimeoutError:
            continue
    raise TimeoutError("no echo")


async def matrix_accept(
    lab: Any,
    name: str,
    address_out: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A fresh node that echoes every message of every link until ``done``."""
    await run_echo_node(matrix_conf(lab, name, **extra), address_out, done, timeout=TIMEOUT + 10)
    return {}


async def matrix_dial(
    lab: Any,
    name: str,
    address_in: concurrent.futures.Future[bytes],
    done: concurrent.futures.Future[bool],
    extra: dict[str, Any],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """A fresh node: ``auto_connect`` (default methods unless ``kwargs`` says), timed from
    the call to the first echoed message; what connected and over which kind of path."""
    out: dict[str, Any] = {"ok": False, "method": None, "kind": None}
    try:
        async with Node(port=0, conf=matrix_conf(lab, name, **extra)) as node:
            await node.start()
            address = await asyncio.wait_for(asyncio.wrap_future(address_in), TIMEOUT)
            begin = time.perf_counter()
            try:
                link, method = await auto_connect(node, address, **kwargs)
                echo = await asyncio.wait_for(first_echo(link), MATRIX_CONNECT_TIMEOUT)
                out.update(
                    ok=echo == b"echo:ping",
                    seconds=time.perf_counter() - begin,
                    method=method,
                    kind=link.path.kind,
                    path=str(link.path),
                    trace=[a.describe() for a in link.trace],
                )
                await link.close("done")
            except (ConnectError, TimeoutError, ConnectionError) as exc:
                out.update(error=str(exc), seconds=time.perf_counter() - begin)
    finally:
        if not done.done():
            done.set_result(True)
    return out


async def matrix_try(
    lab: Any,
    requester: str,
    responder: str,
    *,
    kwargs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One try in a built lab: fresh nodes in both hosts, ``requester`` connects."""
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    done: concurrent.futures.Future[bool] = concurrent.futures.Future()
    limit = TIMEOUT + 40
    try:
        _served, dialled = await asyncio.gather(
            lab.arun(
                responder,
                matrix_accept,
                lab,
                f"m-{responder}",
                address,
                done,
                extra or {},
                timeout=limit,
            ),
            lab.arun(
                requester,
                matrix_dial,
                lab,
                f"m-{requester}",
                address,
                done,
                extra or {},
                kwargs,
                timeout=limit,
            ),
        )
    except Exception as exc:  # a node that could not start is a failed try, not a crash
        return {"ok": False, "method": None, "kind": None, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = dialled
    result["requester"] = requester
    return result


async def expect_failure(node: Any, peer: bytes, **options: Any) -> tuple[str, float]:
    """``auto_connect`` that must fail: its error (or ``"connected?!"``) and how long it
    took, in seconds."""
    loop = asyncio.get_running_loop()
    begin = loop.time()
    try:
        await auto_connect(node, peer, **options)
        outcome = "connected?!"
    except ConnectError as exc:
        outcome = str(exc)
    return outcome, loop.time() - begin
