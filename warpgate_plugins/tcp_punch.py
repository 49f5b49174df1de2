"""The ``tcp_punch`` traversal method: TCP simultaneous open between two NATed peers,
coordinated through signalling (offer, answer, sync).  The method itself lives in
:mod:`warpgate.punch.tcp_method`; see ``docs/punching.md``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo
from warpgate.punch.method import CONF_DEFAULTS
from warpgate.punch.tcp_method import TcpPunchMethod


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return CONF_DEFAULTS


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="tcp_punch",
            factory=TcpPunchMethod,
            cost=30,
            transports=("tcp",),
            kind="punch",
            description="TCP simultaneous open through both NATs, coordinated through signalling",
        )
    ]
