"""A real Node on this machine: phases, listening sockets, callbacks, teardown.

Traffic goes to loopback only."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from warpgate import (
    IP4,
    NODE_CONF,
    NODE_TEST_CONF,
    AddressError,
    PhaseError,
    PortInUseError,
    auto_connect,
    dict_child,
    hookimpl,
)
from warpgate import Node as NodeType
from warpgate.identity.keystore import Keystore, public_key_bytes
from warpgate.node.node import Node
from warpgate.sansio.address import NodeAddress

LOOPBACK_CONF = NODE_TEST_CONF


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_start_runs_every_phase_and_close_releases_everything() -> None:
    node = Node(port=0, conf=NODE_TEST_CONF)
    lines: list[str] = []
    assert await node.start(out=True, cout=lines.append) is node
    assert [line.split("]")[1].split()[0] for line in lines[:14]] == list(node.phase_times), (
        "one progress line per phase, in order"
    )
    assert lines[0].startswith("[  1/12]") and lines[3].startswith("[ 4a/12]")
    assert node.node_id and len(node.public_key) == 33
    port = node.listen_port
    assert node.listeners and all(lst.port == port for lst in node.listeners)
    await node.close()
    await node.close()  # idempotent
    assert node.closed
    # Everything was released: the same port binds again, TCP and UDP.
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


async def test_address_encodes_identity_and_interfaces(warpgate_home: Any) -> None:
    async with Node(port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        addr = NodeAddress.decode(node.address())
        key = Keystore(warpgate_home).load("node")
        assert addr.public_key == public_key_bytes(key.public_key()) == node.public_key
        assert addr.machine_id == node.machine_id
        assert addr.interfaces and all(i.port == node.listen_port for i in addr.interfaces)
        assert IP4 in node.supported() or node.supported()
        assert not any(i.nic_ip.is_loopback for i in addr.interfaces) or len(node.ifs) == 1


async def test_identity_persists_across_restarts() -> None:
    async with Node(port=0, conf=NODE_TEST_CONF) as first:
        await first.start()
    async with Node(port=0, conf=NODE_TEST_CONF) as second:
        await second.start()
    assert first.node_id == second.node_id
    other = dict_child({"identity_name": "other"}, NODE_TEST_CONF)
    async with Node(port=0, conf=other) as third:
        await third.start()
    assert third.node_id != first.node_id


async def test_address_before_start_is_a_clear_error() -> None:
    with pytest.raises(AddressError, match="start"):
        Node(conf=NODE_TEST_CONF).address()


async def test_messages_on_inbound_links_reach_callbacks() -> None:
    got: asyncio.Queue[tuple[bytes, tuple[str, int], Any]] = asyncio.Queue()

    async def on_message(msg: bytes, client_tup: tuple[str, int], pipe: Any) -> None:
        got.put_nowait((msg, client_tup, pipe))
        await pipe.send(b"ack:" + msg)

    sync_seen: list[bytes] = []
    other = dict_child({"identity_name": "client"}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as server,
        Node(ip="127.0.0.1", port=0, conf=other) as client,
    ):
        server.add_msg_cb(on_message)
        server.add_msg_cb(on_message)  # twice: still called once per message
        server.add_msg_cb(lambda msg, tup, pipe: sync_seen.append(msg))
        await server.start()
        await client.start()
        link, _method = await auto_connect(client, server.address())
        await link.send(b"one")
        await link.send(b"two")
        first = await asyncio.wait_for(got.get(), 2)
        second = await asyncio.wait_for(got.get(), 2)
        assert (first[0], second[0]) == (b"one", b"two")
        assert first[1] == link.path.local, "client_tup is the peer's (ip, port)"
        assert first[2].remote_key == client.public_key, "pipe is the server side link"
        assert await link.recv(2) == b"ack:one" and await link.recv(2) == b"ack:two"
        assert sync_seen == [b"one", b"two"]


async def test_garbage_connection_is_dropped_and_others_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = dict_child({"identity_name": "client"}, NODE_TEST_CONF)
    async with (
        Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as server,
        Node(ip="127.0.0.1", port=0, conf=other) as client,
    ):
        await server.start()
        await client.start()
        bad_r, bad_w = await asyncio.open_connection("127.0.0.1", server.listen_port)
        bad_w.write(b"GET / HTTP/1.1\r\n\r\n")
        await bad_w.drain()
        assert await asyncio.wait_for(bad_r.read(), 2) == b"", "server closed it"
        bad_w.close()
        await bad_w.wait_closed()
        assert server.dropped_connections == 1
        assert "not a warpgate link" in caplog.text
        link, _ = await auto_connect(client, server.address())
        inbound = await server.accept(2)
        await link.send(b"fine")
        assert await inbound.recv(2) == b"fine"


async def test_explicit_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        node = Node(ip="127.0.0.1", port=port, conf=NODE_TEST_CONF)
        with pytest.raises(PortInUseError, match=f"port {port} is already in use"):
            await node.start()
        assert node.closed


async def test_derived_port_falls_back_when_taken() -> None:
    async with Node(ip="127.0.0.1", conf=NODE_TEST_CONF) as first:
        await first.start()
        async with Node(ip="127.0.0.1", conf=NODE_TEST_CONF) as second:
            await second.start()
            assert second.listen_port != first.listen_port
            assert second.machine_id == first.machine_id


async def test_ip_restriction_binds_only_that_address() -> None:
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        assert [lst.local[0] for lst in node.listeners] == ["127.0.0.1"]
        assert node.supported() == [IP4]
    with pytest.raises(Exception, match="198.51.100.1 is not an address"):
        await Node(ip="198.51.100.1", port=0, conf=NODE_TEST_CONF).start()


async def test_request_stop_wakes_wait_stopped_from_another_thread() -> None:
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: loop.run_in_executor(None, node.request_stop))
        await asyncio.wait_for(node.wait_stopped(), 2)


async def test_full_conf_starts_offline_and_says_what_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # NODE_CONF with every server pointed at nothing (loopback, closed ports): start()
    # completes, logging what is missing.  Nothing here relies on the network guard.
    offline = {
        "ntp_servers": [],
        "ntp_timeout": 0.2,
        "mqtt_brokers": [],
        "stun_servers": [],
        "portmap_gateway": "127.0.0.1:9",
        "upnp_root_url": "http://127.0.0.1:9/rootDesc.xml",
        "portmap_timeout": 1.0,
    }
    conf = dict_child(offline, NODE_CONF)
    async with Node(ip="127.0.0.1", port=0, conf=conf) as node:
        await node.start()
    for phrase in (
        "no NTP server answered",
        "STUN clients are unavailable",
        "UPnP",
        "nicknames are unavailable",
    ):
        assert phrase in caplog.text
    assert node.phase_results["load_p2p_stun_clients"] == "unavailable"


class OverrideListen:
    """An in-process plugin that overrides one phase."""

    def __init__(self) -> None:
        self.called = False

    @hookimpl
    async def warpgate_start_maintenance_tasks(self, node: NodeType) -> str:
        self.called = True
        return "custom"


async def test_inline_plugin_overrides_a_phase_for_this_node_only() -> None:
    plugin = OverrideListen()
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF, plugins=[plugin]) as node:
        await node.start()
        assert plugin.called and node.phase_results["start_maintenance_tasks"] == "custom"
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as plain:
        await plain.start()
        assert plain.phase_results["start_maintenance_tasks"] == "ok"


async def test_blocking_a_required_builtin_without_replacement_fails_clearly() -> None:
    conf = dict_child({"plugins": {"disable": ["listen"]}}, NODE_TEST_CONF)
    node = Node(port=0, conf=conf)
    with pytest.raises(PhaseError, match="'listen_on_ifs'.*blocked plugins: listen"):
        await node.start()
    assert node.closed


async def test_failing_phase_closes_what_was_started() -> None:
    class Boom:
        @hookimpl(tryfirst=True)
        async def warpgate_setup_traversal_plugins(self, node: NodeType) -> None:
            raise RuntimeError("kaboom")

    node = Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF, plugins=[Boom()])
    with pytest.raises(Exception, match="kaboom"):
        await node.start()
    port = node.listen_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the listener opened in phase 7 is gone


async def test_observer_hooks_fire() -> None:
    events: list[str] = []

    class Watch:
        @hookimpl
        def warpgate_node_started(self, node: NodeType) -> None:
            events.append("started")

        @hookimpl
        def warpgate_node_stopped(self, node: NodeType) -> None:
            events.append("stopped")

    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF, plugins=[Watch()]) as node:
        await node.start()
    assert events == ["started", "stopped"]


async def test_corrupted_keystore_stops_start_and_is_kept(warpgate_home: Any) -> None:
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()
    key_file = warpgate_home / "keys" / "node.pem"
    key_file.write_text("not a key")
    with pytest.raises(Exception, match="corrupted"):
        await Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF).start()
    assert key_file.read_text() == "not a key"


async def test_wait_for_job_returns_or_cancels_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Node(ip="127.0.0.1", port=0, conf=NODE_TEST_CONF) as node:
        await node.start()

        async def quick() -> str:
            return "mapped"

        assert await node.wait_for_job(node.spawn(quick(), name="quick"), timeout=1, what="x") == (
            "mapped"
        )
        slow = node.spawn(asyncio.sleep(10), name="slow")
        with pytest.raises(TimeoutError):
            await node.wait_for_job(slow, timeout=0.05, what="port mapping")
        assert slow.cancelled()
        assert "port mapping unavailable (no result within 0.1 s)" in caplog.text
