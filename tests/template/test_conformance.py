"""warpgate.testing.conformance passes the built-ins and catches broken providers."""

from __future__ import annotations

import pytest

from warpgate import TraversalMethodInfo, hookimpl
from warpgate.interfaces import Candidate
from warpgate.testing.conformance import (
    ConformanceError,
    check_phase_hook,
    check_signal_transport,
    check_traversal_method,
)
from warpgate_plugins.direct import DirectMethod


async def test_builtins_conform() -> None:
    assert "tcp: authenticated link, message round trip" in await check_traversal_method("direct")
    assert "reverse connect works over it" in await check_signal_transport("memory")
    await check_phase_hook("listen_on_ifs")


class Mislabelled(DirectMethod):
    """Dials like direct, but its candidates claim another method's name."""

    name = "mislabelled"

    def candidates(self, peer, *, transport):  # type: ignore[no-untyped-def]
        return [
            Candidate("direct", c.transport, c.remote, c.local_ip, c.cost, c.note, c.family)
            for c in super().candidates(peer, transport=transport)
        ]


class UdpOnlyOnPaper(DirectMethod):
    """Registers TCP only but offers UDP candidates."""

    name = "udp-on-paper"


class _Plugin:
    def __init__(self, info: TraversalMethodInfo) -> None:
        self.info = info

    @hookimpl
    def warpgate_register_traversal_methods(self) -> list[TraversalMethodInfo]:
        return [self.info]


@pytest.mark.parametrize(
    ("info", "complaint"),
    [
        (TraversalMethodInfo(name="mislabelled", factory=Mislabelled), "candidate names method"),
        (
            TraversalMethodInfo(name="udp-on-paper", factory=UdpOnlyOnPaper, transports=("tcp",)),
            "which the record does not list",
        ),
    ],
)
async def test_broken_methods_are_caught(info: TraversalMethodInfo, complaint: str) -> None:
    with pytest.raises(ConformanceError, match=complaint):
        await check_traversal_method(info.name, plugins=[_Plugin(info)])


async def test_a_missing_method_is_named() -> None:
    with pytest.raises(ConformanceError, match="no traversal method 'nope'"):
        await check_traversal_method("nope")
