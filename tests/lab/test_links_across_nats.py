"""Links through real NATs in the lab: each node runs in its host's network namespace
(a thread inside the namespace, its own event loop); the nodes share this process, so the
in-process signal transport carries reverse-connect requests between them."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, ConnectError, Node, auto_connect, dict_child

pytestmark = pytest.mark.lab

TIMEOUT = 20.0


def conf(name: str, **extra: Any) -> dict[str, Any]:
    # Signalling on (the in-process transport), everything else as in tests.
    return dict_child(
        {"identity_name": name, "sig_pipe_no": 1, "plugins": {"signal": ["memory"]}, **extra},
        NODE_TEST_CONF,
    )


async def serve_one(
    name: str, address_out: concurrent.futures.Future[bytes], *, transport: str = "tcp"
) -> dict[str, Any]:
    """Start a node, publish its address, accept one link, echo one message back."""
    async with Node(port=0, conf=conf(name)) as node:
        await node.start()
        address_out.set_result(node.address())
        link = await node.accept(timeout=TIMEOUT)
        msg = await link.recv(timeout=TIMEOUT)
        await link.send(b"echo:" + msg)
        await asyncio.sleep(0.2)  # let the echo leave before closing
        return {"got": msg.decode(), "path": str(link.path), "peer": link.remote_key.hex()}


async def dial(
    name: str,
    address_in: concurrent.futures.Future[bytes],
    *,
    methods: list[str] | None = None,
    transport: str = "tcp",
) -> dict[str, Any]:
    async with Node(port=0, conf=conf(name)) as node:
        await node.start()
        address = await asyncio.wrap_future(address_in)
        link, method = await auto_connect(
            node,
            address,
            methods=methods,
            transport=transport,
            timeout=TIMEOUT,  # type: ignore[arg-type]
        )
        await link.send(b"hello from " + name.encode())
        echo = await link.recv(timeout=TIMEOUT)
        return {
            "method": method,
            "path": str(link.path),
            "echo": echo.decode(),
            "trace": [a.describe() for a in link.trace],
        }


async def run_pair(
    lab: Any, server_host: str, client_host: str, **dial_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A server node in one host, a client node in another; returns both reports."""
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()
    served, dialled = await asyncio.gather(
        lab.arun(server_host, serve_one, f"srv-{server_host}", address, timeout=60),
        lab.arun(client_host, _dial_with, f"cli-{client_host}", address, dial_kwargs, timeout=60),
    )
    return served, dialled


async def _dial_with(
    name: str, address: concurrent.futures.Future[bytes], kwargs: dict[str, Any]
) -> dict[str, Any]:
    return await dial(name, address, **kwargs)


@pytest.mark.parametrize("nat", ["port-restricted", "symmetric"])
async def test_nated_host_connects_to_public_host_directly(lab_factory: Any, nat: str) -> None:
    lab = lab_factory((nat, "open"), servers=False)
    served, dialled = await run_pair(lab, "pub", "a", methods=["direct"])
    assert dialled["method"] == "direct"
    assert dialled["echo"] == "echo:hello from cli-a"
    # The public host saw the connection come from the NAT's WAN address, not 10.x.
    assert lab.wan_address("nat_a") in served["path"]


async def test_nated_host_over_udp_to_public_host(lab_factory: Any) -> None:
    lab = lab_factory(("port-restricted", "open"), servers=False)
    _served, dialled = await run_pair(lab, "pub", "a", methods=["direct"], transport="udp")
    assert dialled["method"] == "direct" and "udp" in dialled["path"]
    assert dialled["echo"] == "echo:hello from cli-a"


async def test_public_host_reaches_nated_host_by_reverse_connect(lab_factory: Any) -> None:
    """The NATed host cannot be dialled; asked through signalling, it dials out."""
    lab = lab_factory(("port-restricted", "open"), servers=False)
    served, dialled = await run_pair(lab, "a", "pub")  # every method: direct has no way in
    assert dialled["method"] == "reverse", dialled["trace"]
    assert dialled["echo"] == "echo:hello from cli-pub"
    assert lab.address("pub") in served["path"]


async def test_direct_alone_cannot_reach_a_nated_host(lab_factory: Any) -> None:
    lab = lab_factory(("port-restricted", "open"), servers=False)
    address: concurrent.futures.Future[bytes] = concurrent.futures.Future()

    async def fail(name: str) -> str:
        async with Node(port=0, conf=conf(name)) as node:
            await node.start()
            try:
                await auto_connect(
                    node, await asyncio.wrap_future(address), methods=["direct"], timeout=3
                )
            except ConnectError as exc:
                return str(exc)
            return "connected?!"

    async def hold(name: str) -> None:
        async with Node(port=0, conf=conf(name)) as node:
            await node.start()
            address.set_result(node.address())
            await asyncio.sleep(4)

    _held, message = await asyncio.gather(
        lab.arun("a", hold, "held", timeout=30), lab.arun("pub", fail, "prober", timeout=30)
    )
    assert "no traversal method can reach" in message


async def test_peers_on_one_lan_connect_over_the_lan(lab_factory: Any) -> None:
    lab = lab_factory("same-lan", servers=False)
    served, dialled = await run_pair(lab, "b", "a", methods=["direct"])
    assert dialled["method"] == "direct"
    assert lab.address("b") in dialled["path"] and "same LAN" in dialled["trace"][0]
    assert lab.address("a") in served["path"]
