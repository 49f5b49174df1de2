"""Phase 4b, ``load_p2p_stun_clients``.

STUN clients (external address and NAT behaviour per interface) are not part of this
release yet: when enabled, the phase says so in the log and leaves the NAT type
unknown, rather than pretending to have classified anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
async def warpgate_load_p2p_stun_clients(node: Node) -> str:
    if not node.conf["enable_stun_clients"]:
        return "disabled"
    log.warning(
        "STUN clients are unavailable in this warpgate version: external addresses and "
        "NAT types stay unknown (set enable_stun_clients=False to silence this)"
    )
    return "unavailable"
