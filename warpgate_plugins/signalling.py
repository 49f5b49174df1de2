"""Phase 4c, ``setup_router_and_signal``: start the selected signal transports.

``sig_pipe_no`` = 0 turns signalling off (``NODE_TEST_CONF``).  Otherwise every
provider in the ``signal`` stack is created and started; with none installed the node
still starts and the log says which features cannot work.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl
from warpgate.plugin.stack import start_providers

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
async def warpgate_setup_router_and_signal(node: Node) -> str:
    if node.conf["sig_pipe_no"] == 0:
        return "disabled"
    node.signal_transports = await start_providers(node, "signal")
    if not node.signal_transports:
        log.warning(
            "signalling is unavailable: no signal transport plugin is installed, so "
            "reverse connect, hole punching and relays cannot reach peers "
            "(set sig_pipe_no=0 to silence this)"
        )
        return "unavailable"
    return ", ".join(node.signal_transports)
