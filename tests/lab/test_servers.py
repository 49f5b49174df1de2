"""Every lab server answers a real client, from behind a NAT."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from warpgate.lab import _stun
from warpgate.lab.servers import UPNP_TABLE

pytestmark = pytest.mark.lab


async def test_mqtt_publish_subscribe_through_mosquitto(lab) -> None:
    import aiomqtt

    mqtt = lab.servers["mqtt"]
    subscribed = threading.Event()

    async def subscriber() -> str:
        async with aiomqtt.Client(mqtt["host"], mqtt["port"], identifier="sub-b") as client:
            await client.subscribe("lab/greeting")
            subscribed.set()
            async for message in client.messages:
                return bytes(message.payload).decode()
        raise AssertionError("no message")

    async def publisher() -> None:
        # Bounded wait for the subscriber, on a thread so this loop stays responsive.
        assert await asyncio.to_thread(subscribed.wait, 10)
        async with aiomqtt.Client(mqtt["host"], mqtt["port"], identifier="pub-a") as client:
            await client.publish("lab/greeting", b"hello from behind nat_a", qos=1)

    received, _ = await asyncio.gather(
        lab.arun("b", subscriber, timeout=20), lab.arun("a", publisher, timeout=20)
    )
    assert received == "hello from behind nat_a"


def test_stun_binding_through_coturn(lab) -> None:
    stun = lab.servers["stun"]

    def binding() -> dict[str, tuple[str, int]]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            return _stun.binding(sock, (stun["host"], stun["port"]))

    answer = lab.call("a", binding)
    assert answer["mapped"][0] == lab.wan_address("nat_a")
    # Two listening addresses: coturn advertises RFC 5780's OTHER-ADDRESS.
    assert answer["other"][0] == stun["alt_host"]
    assert lab.call("pub", binding)["mapped"][0] == lab.address("pub")


def test_ntp_query_through_chrony(lab) -> None:
    import ntplib

    ntp = lab.servers["ntp"]

    def query() -> ntplib.NTPStats:
        return ntplib.NTPClient().request(ntp["host"], port=ntp["port"], version=4, timeout=2)

    stats = lab.call("b", query)
    assert stats.stratum in range(1, 16)
    assert abs(stats.offset) < 5  # chrony serves this machine's own clock (-x: untouched)


@pytest.mark.parametrize(
    "lab",
    [("port-restricted", "open"), ("symmetric", "open"), ("full-cone", "open")],
    ids=["port-restricted", "symmetric", "full-cone"],
    indirect=True,
)
def test_upnp_port_mapping_through_miniupnpd(lab) -> None:
    import miniupnpc

    port = 41234

    def map_port() -> tuple[str, str, bool]:
        upnp = miniupnpc.UPnP()
        upnp.discoverdelay = 500
        assert upnp.discover() >= 1
        upnp.selectigd()
        ok = upnp.addportmapping(port, "UDP", upnp.lanaddr, port, "warpgate lab test", "")
        return upnp.externalipaddress(), upnp.lanaddr, ok

    external, lanaddr, ok = lab.call("a", map_port)
    assert ok
    assert lanaddr == lab.address("a")
    assert external == lab.wan_address("nat_a")
    rules = lab.exec("nat_a", ["nft", "list", "table", "inet", UPNP_TABLE], check=True).stdout
    assert f"dport {port}" in rules and f"dnat ip to {lanaddr}:{port}" in rules

    # And the rule really forwards: unsolicited UDP from the public host reaches `a`.
    with lab.socket("a") as inside, lab.socket("pub") as outside:
        inside.bind(("0.0.0.0", port))
        inside.settimeout(2)
        outside.sendto(b"through the mapping", (external, port))
        data, _ = inside.recvfrom(100)
    assert data == b"through the mapping"


def test_turn_allocation_with_long_term_credentials(lab_factory) -> None:
    lab = lab_factory(("symmetric", "port-restricted"))
    stun = lab.servers["stun"]
    server = (stun["host"], stun["port"])

    def allocate_and_release() -> tuple[str, int]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            relayed, state = _stun.allocate(sock, server, stun["username"], stun["password"])
            _stun.release(sock, server, state)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            with pytest.raises(ValueError, match="refused"):
                _stun.allocate(sock, server, stun["username"], "wrong password")
        return relayed

    relayed = lab.call("a", allocate_and_release)
    assert relayed[0] == stun["host"]
    assert 49152 <= relayed[1] <= 65535


@pytest.mark.slow
def test_upnp_behind_a_symmetric_cgnat_refuses_port_mappings(lab_factory) -> None:
    """As a real home router would: miniupnpd's STUN test finds the restrictive CGNAT
    above it (that takes it ~9 s) and then refuses to map ports."""
    import miniupnpc

    from warpgate.lab import NatMode, Router, Topology
    from warpgate.lab.topology import Host

    topo = Topology(
        routers=(
            Router("cgn", NatMode.SYMMETRIC),
            Router("home", NatMode.FULL_CONE, parent="cgn", upnp=True),
        ),
        hosts=(Host("a", "home"),),
    )
    lab = lab_factory(topo)

    def try_mapping() -> tuple[str, str]:
        upnp = miniupnpc.UPnP()
        upnp.discoverdelay = 500
        assert upnp.discover() >= 1
        upnp.selectigd()
        try:
            upnp.addportmapping(40000, "UDP", upnp.lanaddr, 40000, "warpgate lab test", "")
        except Exception as exc:  # miniupnpc raises plain Exception("Action Failed")
            return upnp.externalipaddress(), str(exc)
        return upnp.externalipaddress(), "mapped"

    external, outcome = lab.call("a", try_mapping)
    assert external == lab.wan_address("cgn")  # what STUN told it
    assert outcome == "Action Failed"
