"""Port mapping against the lab's miniupnpd on router ``nat_a``: a node in host ``a``
maps its listen port (UPnP IGD, PCP, NAT-PMP, or the race of them), the forwarding rule
appears in the router's nft table, the public host reaches the node through it, and the
rule is gone once the node closes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from typing import Any

import pytest

from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.lab.servers import UPNP_TABLE
from warpgate.portmap import port_mappings
from warpgate.sansio.address import NodeAddress

pytestmark = pytest.mark.lab

SSDP = "239.255.255.250"


@pytest.fixture(autouse=True)
def allow_ssdp(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes run inside the lab's namespaces, where SSDP multicast reaches only the
    lab's LAN: let the network guard pass the SSDP group (UPnP discovery asks it first)."""
    guarded = socket.getaddrinfo

    def allowing(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == SSDP:
            return _real_getaddrinfo(host, *args, **kwargs)
        return guarded(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", allowing)


_real_getaddrinfo = socket.getaddrinfo  # taken at import, before the guard is installed


async def hold_node(
    methods: list[str] | None,
    root_url: str | None,
    info: concurrent.futures.Future[dict[str, Any]],
    release: concurrent.futures.Future[None],
) -> dict[str, Any]:
    """Start a node with port mapping on, report its mappings, wait, close; report again."""
    extra: dict[str, Any] = {"enable_upnp": True, "upnp_discover_delay": 0.5}
    if methods is not None:
        extra["portmap_methods"] = methods
    if root_url is not None:
        extra["upnp_root_url"] = root_url
    node = Node(port=0, conf=dict_child(extra, NODE_TEST_CONF))
    try:
        await node.start()
        info.set_result(
            {
                "result": node.phase_results["finalize_port_forwarding"],
                "port": node.listen_port,
                "mappings": port_mappings(node),
                "address": NodeAddress.decode(node.address()),
            }
        )
        await asyncio.wait_for(asyncio.wrap_future(release), 60)
        return {"dropped_datagrams": node.dropped_datagrams}
    except BaseException as exc:
        if not info.done():
            info.set_exception(exc)
        raise
    finally:
        await node.close()


def rules(lab: Any) -> str:
    return str(lab.exec("nat_a", ["nft", "list", "table", "inet", UPNP_TABLE], check=True).stdout)


def tcp_reaches(lab: Any, address: tuple[str, int]) -> bool:
    with lab.socket("pub", type=socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(address)
        except OSError:
            return False
        return True


@pytest.mark.parametrize(
    ("methods", "given_url", "expected"),
    [
        (["upnp"], False, {"upnp"}),
        (["upnp"], True, {"upnp"}),
        (["pcp"], False, {"pcp"}),
        (["natpmp"], False, {"natpmp"}),
        (None, False, {"upnp", "pcp"}),
    ],
    ids=["upnp-ssdp", "upnp-url", "pcp", "natpmp", "race"],
)
async def test_node_maps_its_port_on_miniupnpd(
    lab: Any, methods: list[str] | None, given_url: bool, expected: set[str]
) -> None:
    igd = lab.servers["upnp:nat_a"]
    root_url = f"http://{igd['host']}:{igd['port']}/rootDesc.xml" if given_url else None
    info: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
    release: concurrent.futures.Future[None] = concurrent.futures.Future()
    job = asyncio.ensure_future(
        lab.arun("a", hold_node, methods, root_url, info, release, timeout=90)
    )
    try:
        got = await asyncio.wait_for(asyncio.wrap_future(info), 60)
        port, mappings = got["port"], got["mappings"]
        assert {m.protocol for m in mappings} == {"udp", "tcp"}, got
        assert {m.method for m in mappings} <= expected and len({m.method for m in mappings}) == 1
        for m in mappings:
            assert m.internal_ip == lab.address("a") and m.internal_port == port
            assert m.external_ip == lab.wan_address("nat_a")
        external = mappings[0].external_port
        assert got["result"].endswith(f"{lab.wan_address('nat_a')}:{external}")
        # The node's address was encoded again after mapping: it carries the mapped port.
        udp_mapping = {m.protocol: m for m in mappings}["udp"]
        (iface,) = [i for i in got["address"].interfaces if str(i.nic_ip) == lab.address("a")]
        assert (str(iface.ext_ip), iface.ext_port) == (
            udp_mapping.external_ip,
            udp_mapping.external_port,
        )

        table = await asyncio.to_thread(rules, lab)
        assert f"dport {external}" in table and f"dnat ip to {lab.address('a')}:{port}" in table

        # The public host reaches the node through the mapping: TCP connects to its
        # listener, and a stray UDP datagram arrives (the node counts and drops it).
        target = (lab.wan_address("nat_a"), external)
        assert await asyncio.to_thread(tcp_reaches, lab, target)
        udp = {m.protocol: m for m in mappings}["udp"]
        with lab.socket("pub") as sock:
            sock.sendto(b"not a warpgate datagram", (udp.external_ip, udp.external_port))
        await asyncio.sleep(0.5)
    finally:
        if not release.done():
            release.set_result(None)
        report = await job
    assert report["dropped_datagrams"] >= 1

    # Closed: the rule is gone, the port no longer reachable.
    table = await asyncio.to_thread(rules, lab)
    assert f"dport {external}" not in table, table
    assert not await asyncio.to_thread(tcp_reaches, lab, target)


async def start_logging(
    port: int, methods: list[str] | None
) -> tuple[str, list[Any], list[str], float]:
    """Start a node on ``port`` in the current host; its result, mappings, warnings."""
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Grab(logging.WARNING)
    logger = logging.getLogger("warpgate_plugins.upnp")
    logger.addHandler(handler)
    extra: dict[str, Any] = {"enable_upnp": True, "upnp_discover_delay": 0.5}
    if methods is not None:
        extra["portmap_methods"] = methods
    conf = dict_child({**extra, "portmap_timeout": 5.0}, NODE_TEST_CONF)
    begin = time.monotonic()
    try:
        async with Node(port=port, conf=conf) as node:
            await node.start()
            result = node.phase_results["finalize_port_forwarding"]
            return result, port_mappings(node), records, time.monotonic() - begin
    finally:
        logger.removeHandler(handler)


async def test_a_refusing_router_leaves_start_complete(lab: Any) -> None:
    """The lab's miniupnpd allows ports 1024-65535 only: UPnP on port 900 is refused."""
    result, mappings, records, _ = await lab.arun("a", start_logging, 900, ["upnp"], timeout=60)
    assert result == "unavailable" and mappings == []
    assert records == [
        "port mapping unavailable (upnp: UPnP AddPortMapping UDP 900 refused: "
        "Action not authorized)"
    ]


HUNG_ROUTER_RUN = """
import asyncio, json, logging, time
from warpgate import NODE_TEST_CONF, Node, dict_child
from warpgate.portmap import port_mappings

records = []
class Grab(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("warpgate_plugins.upnp").addHandler(Grab(logging.WARNING))

async def main():
    conf = dict_child(
        {"enable_upnp": True, "upnp_discover_delay": 0.5, "portmap_timeout": 5.0},
        NODE_TEST_CONF,
    )
    begin = time.monotonic()
    async with Node(port=900, conf=conf) as node:
        await node.start()
        result = node.phase_results["finalize_port_forwarding"]
        mapped = len(port_mappings(node))
    return result, mapped, time.monotonic() - begin

result, mapped, elapsed = asyncio.run(main())
print(json.dumps({"result": result, "mapped": mapped, "elapsed": elapsed, "records": records}))
"""


async def test_a_hung_router_costs_one_bounded_wait(lab: Any) -> None:
    """miniupnpd 2.3.1 asked by NAT-PMP/PCP for a port its rules deny stops answering
    altogether (it searches for another port and never returns): every method fails,
    start() still completes within portmap_timeout, with one warning naming each.

    Runs in its own interpreter: a UPnP call left stuck on the hung router must not be
    able to stall the test process (it did, about once in seven runs, in a thread)."""
    out = await asyncio.to_thread(lab.run_python, "a", HUNG_ROUTER_RUN, timeout=60)
    assert out["result"] == "unavailable" and out["mapped"] == 0
    records = out["records"]
    assert len(records) == 1 and "port mapping unavailable" in records[0], records
    assert "upnp:" in records[0] and "pcp:" in records[0]
    assert out["elapsed"] < 5.0 + 2.0 + 3.0  # the bound, plus the other phases
    assert "dport 900" not in await asyncio.to_thread(rules, lab)
