"""The STUN client against the lab's real coturn, through real NATs.

coturn listens on two addresses, so it answers RFC 5780 tests: OTHER-ADDRESS names its
second address and CHANGE-REQUEST makes the answer come from there.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from warpgate.stun import BindingResult, StunUnavailable, race_bindings, stun_binding

pytestmark = pytest.mark.lab

# Nothing answers here: the lab's fake internet drops what it cannot route, as the real
# one would.
DEAD_SERVER = ("203.0.113.250", 3478)


def test_mapped_address_behind_a_port_restricted_nat(lab_factory: Any) -> None:
    lab = lab_factory(("port-restricted", "symmetric"))
    stun = lab.servers["stun"]
    primary = (stun["host"], stun["port"])
    wan = lab.wan_address("nat_a")

    async def from_a() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["udp"] = await stun_binding(primary, timeout=5)
        out["tcp"] = await stun_binding(primary, transport="tcp", timeout=5)
        start = time.monotonic()
        out["race"] = await race_bindings([DEAD_SERVER, primary], timeout=5)
        out["race_time"] = time.monotonic() - start
        # One socket, both of coturn's addresses: a port-restricted NAT maps
        # independently of the endpoint (EIM), so both see the same external port.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            first = await stun_binding(primary, sock=sock, timeout=5)
            assert first.other_address is not None
            second = await stun_binding(first.other_address, sock=sock, timeout=5)
            out["same_socket"] = (first, second)
            # Its filtering is address- and port-dependent: an answer from coturn's
            # other address is dropped by the NAT.
            start = time.monotonic()
            try:
                await stun_binding(primary, sock=sock, timeout=1.5, change_ip=True)
            except StunUnavailable as exc:
                out["change_ip"] = str(exc)
            out["change_time"] = time.monotonic() - start
        return out

    out = lab.run_async("a", from_a, timeout=40)
    udp: BindingResult = out["udp"]
    assert udp.mapped[0] == wan
    assert udp.response_origin == primary
    assert udp.other_address is not None and udp.other_address[0] == stun["alt_host"]
    assert udp.other_address[1] != 0
    assert udp.local is not None and udp.local[0] == lab.address("a")

    tcp: BindingResult = out["tcp"]
    assert tcp.transport == "tcp"
    assert tcp.mapped[0] == wan

    race: BindingResult = out["race"]
    assert race.server == primary and race.mapped[0] == wan
    assert out["race_time"] < 2  # the dead server did not stall it

    first, second = out["same_socket"]
    assert first.mapped == second.mapped
    assert second.response_origin == first.other_address

    assert "no answer within 1.5s" in out["change_ip"]
    assert out["change_time"] < 2.5

    # And the symmetric NAT maps per destination (APDM): two external ports.
    async def from_b() -> tuple[BindingResult, BindingResult]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            first = await stun_binding(primary, sock=sock, timeout=5)
            assert first.other_address is not None
            return first, await stun_binding(first.other_address, sock=sock, timeout=5)

    first, second = lab.run_async("b", from_b, timeout=20)
    assert first.mapped[0] == second.mapped[0] == lab.wan_address("nat_b")
    assert first.mapped[1] != second.mapped[1]


def test_change_request_is_answered_from_coturns_other_address(lab_factory: Any) -> None:
    lab = lab_factory(("full-cone", "port-restricted"))
    stun = lab.servers["stun"]
    primary = (stun["host"], stun["port"])

    async def probe() -> dict[str, BindingResult]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", 0))
            return {
                "plain": await stun_binding(primary, sock=sock, timeout=5),
                "both": await stun_binding(
                    primary, sock=sock, timeout=5, change_ip=True, change_port=True
                ),
                "port": await stun_binding(primary, sock=sock, timeout=5, change_port=True),
                "ip": await stun_binding(primary, sock=sock, timeout=5, change_ip=True),
            }

    # The public host (no NAT) and a host behind a full-cone NAT (endpoint-independent
    # filtering) both hear the answers from the other address and port.
    for host, external in (("pub", lab.address("pub")), ("a", lab.wan_address("nat_a"))):
        got = lab.run_async(host, probe, timeout=30)
        plain = got["plain"]
        assert plain.mapped[0] == external
        assert plain.response_origin == primary
        other = plain.other_address
        assert other is not None and other[0] == stun["alt_host"] and other[1] != primary[1]
        assert got["both"].response_origin == other
        assert got["port"].response_origin == (primary[0], other[1])
        assert got["ip"].response_origin == (other[0], primary[1])
        for result in got.values():
            assert result.mapped == plain.mapped  # one socket, one mapping
