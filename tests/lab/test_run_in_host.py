"""Running code inside a lab host: a subprocess, a thread, or a whole asyncio loop."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from warpgate.lab import LabError, single

pytestmark = pytest.mark.lab


def test_run_python_returns_json(lab_factory) -> None:
    lab = lab_factory(single("port-restricted"), servers=False)
    code = (
        "import json, socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect(('198.51.100.1', 9))\n"
        "print('noise first')\n"
        "print(json.dumps({'local': s.getsockname()[0]}))\n"
        "s.close()\n"
    )
    assert lab.run_python("a", code) == {"local": lab.address("a")}
    with pytest.raises(LabError, match="ZeroDivisionError"):
        lab.run_python("a", "1/0")
    with pytest.raises(LabError, match="did not finish"):
        lab.run_python("a", "import time; time.sleep(10)", timeout=0.5)


def test_exec_and_spawn(lab_factory) -> None:
    lab = lab_factory(single("open"), servers=False)
    out = lab.exec("a", ["ip", "-4", "-o", "addr", "show", "eth0"], check=True).stdout
    assert lab.address("a") in out
    proc = lab.spawn("a", ["sleep", "30"])
    assert proc.poll() is None
    lab.down()  # stops tracked processes by PID
    assert proc.poll() is not None


def test_call_creates_sockets_in_the_namespace(lab_factory) -> None:
    lab = lab_factory(single("symmetric"), servers=False)

    def netns_inode() -> int:
        return os.stat("/proc/thread-self/ns/net").st_ino

    def local_address() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("198.51.100.1", 9))  # a route lookup only: nothing is sent
            return s.getsockname()[0]

    assert lab.call("a", local_address) == lab.address("a")
    assert lab.call("a", netns_inode) == os.stat(f"/run/netns/{lab.netns('a')}").st_ino
    # The calling thread itself never left its own namespace.
    assert netns_inode() != lab.call("a", netns_inode)
    with lab.socket("a") as sock:  # a socket made there stays there, used from here
        sock.connect(("198.51.100.1", 9))
        assert sock.getsockname()[0] == lab.address("a")


async def test_asyncio_nodes_in_two_hosts(lab_factory) -> None:
    """An asyncio UDP echo server on the public host, an asyncio client behind a NAT."""
    lab = lab_factory(single("full-cone"), servers=False)
    other = lab_factory(single("open"), servers=False)  # labs coexist independently
    assert other.prefix != lab.prefix

    async def echo_server(stop_after: float) -> int:
        loop = asyncio.get_running_loop()
        served = 0

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):  # type: ignore[no-untyped-def]
                self.transport = transport

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                nonlocal served
                served += 1
                self.transport.sendto(data + b" @" + addr[0].encode(), addr)

        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("198.51.100.10", 7000))
        try:
            await asyncio.sleep(stop_after)
        finally:
            transport.close()
        return served

    async def client() -> bytes:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=("198.51.100.10", 7000)
        )
        try:
            for _ in range(20):  # the server may still be binding: retry, bounded
                transport.sendto(b"ping")
                try:
                    return await asyncio.wait_for(asyncio.shield(got), 0.1)
                except TimeoutError:
                    continue
            raise AssertionError("no echo")
        finally:
            transport.close()

    served, reply = await asyncio.gather(lab.arun("inet", echo_server, 1.0), lab.arun("a", client))
    assert reply == b"ping @" + lab.wan_address("nat_a").encode()
    assert served >= 1
