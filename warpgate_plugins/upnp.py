"""Phases 9 and 12: port mapping on the home router (UPnP IGD).

Not part of this release yet: when ``enable_upnp`` is on, the phases log that port
mapping is unavailable instead of silently doing nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
async def warpgate_start_background_port_forwarding(node: Node) -> str:
    if not node.conf["enable_upnp"]:
        return "disabled"
    log.warning(
        "UPnP port mapping is unavailable in this warpgate version "
        "(set enable_upnp=False to silence this)"
    )
    return "unavailable"


@hookimpl(trylast=True)
async def warpgate_finalize_port_forwarding(node: Node) -> str:
    return "disabled" if not node.conf["enable_upnp"] else "unavailable"
