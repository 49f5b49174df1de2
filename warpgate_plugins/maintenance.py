"""Phase 6, ``start_maintenance_tasks``: background housekeeping.

Watches the node's stop socket pair so :meth:`Node.request_stop` works from any thread
or signal handler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from warpgate.plugin import hookimpl

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


async def _watch_stop_socket(node: Node) -> None:
    loop = asyncio.get_running_loop()
    assert node.stop_rw is not None, "start() creates the stop socket pair"
    sock = node.stop_rw[0]
    sock.setblocking(False)
    data = await loop.sock_recv(sock, 1)
    log.debug("stop requested through stop_rw (%r)", data)
    node._on_stop_requested()


@hookimpl(trylast=True)
async def warpgate_start_maintenance_tasks(node: Node) -> str:
    node.spawn(_watch_stop_socket(node), name="stop watcher")
    return "ok"
