"""What an offer from anyone can make us do is bounded: where probes may go, and how
many sessions (and birthday sessions) run at once."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from warpgate.punch.session import (
    MAX_BIRTHDAYS,
    MAX_PER_PEER,
    Coordinator,
    PunchAborted,
    unreachable_target,
)
from warpgate.sansio.address import NatType
from warpgate.sansio.punch_messages import Endpoint, PunchTransport


def ep(ip: str) -> Endpoint:
    return Endpoint(ipaddress.ip_address(ip), 4000, 4000, NatType.PORT_RESTRICTED)


PUBLIC_US = [ep("8.8.4.4")]  # an address ipaddress counts as global; nothing is sent
LAB_US = [ep("203.0.113.5")]  # the lab's fake public range is not "global"


@pytest.mark.parametrize("target", ["127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.1.1", "::1"])
def test_never_a_target(target: str) -> None:
    assert unreachable_target(PUBLIC_US, [ep(target)])
    assert unreachable_target(LAB_US, [ep(target)])


@pytest.mark.parametrize("target", ["192.168.1.10", "10.0.0.1", "100.64.0.1", "198.51.100.9"])
def test_a_private_target_only_when_we_are_private_too(target: str) -> None:
    assert "private" in unreachable_target(PUBLIC_US, [ep(target)])
    assert unreachable_target(LAB_US, [ep(target)]) == ""


def test_a_public_target_is_fine() -> None:
    assert unreachable_target(PUBLIC_US, [ep("9.9.9.9")]) == ""


async def test_sessions_are_capped_per_peer_per_id_and_for_birthdays() -> None:
    coordinator = Coordinator(node=Any, transport=PunchTransport.UDP, on_offer=lambda *a: None)  # type: ignore[arg-type]
    peer, other = b"\x02" + bytes(32), b"\x03" + bytes(32)
    first = coordinator.open(peer, b"s" * 16)
    with pytest.raises(PunchAborted, match="already running"):
        coordinator.open(other, b"s" * 16)  # a session id in use cannot be taken over
    for _ in range(MAX_PER_PEER - 1):
        coordinator.open(peer)
    with pytest.raises(PunchAborted, match="that peer"):
        coordinator.open(peer)
    for n in range(MAX_BIRTHDAYS):
        coordinator.open(bytes([4 + n]) * 33, birthday=True)
    with pytest.raises(PunchAborted, match="birthday"):
        coordinator.open(b"\x09" * 33, birthday=True)
    coordinator.open(b"\x09" * 33)  # an ordinary session is still fine
    coordinator.close(first)
    assert first.id not in coordinator.sessions
