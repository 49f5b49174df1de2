"""Phase 6, ``start_maintenance_tasks``: background housekeeping.

Watches the node's stop socket pair so :meth:`Node.request_stop` works from any thread
or signal handler, and keeps links alive: a link the peer has been quiet on for
``link_keepalive`` seconds is pinged (which also holds a UDP link's NAT mappings open),
and one it has been silent on for ``link_timeout`` seconds is closed, so a peer that
died or lost its network is noticed within ``link_timeout + link_keepalive / 2``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

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


async def _keep_links_alive(node: Node, interval: float, timeout: float) -> None:
    period = min(interval, timeout) / 2
    excused: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for link in list(node.links):
            if link.closed:
                continue
            if link.busy() or link.peer_acked_within(interval):
                # Not a silent peer: our side is behind, or its network stack answers.
                # Remembered apart from last_received, which others read as "heard".
                excused[link] = now
                continue
            quiet = now - max(link.last_received, excused.get(link, 0.0))
            if quiet >= timeout:
                log.info("closing link to %s: the peer is silent for %.0f s", link.path, quiet)
                node.spawn(
                    link.close(f"no answer from the peer for {timeout:g} s"),
                    name="close a silent link",
                )
            elif quiet >= interval and now - link.last_keepalive >= interval:
                node.spawn(link.send_keepalive(), name="link keepalive")


@hookimpl(trylast=True)
async def warpgate_start_maintenance_tasks(node: Node) -> str:
    node.spawn(_watch_stop_socket(node), name="stop watcher")
    interval = float(node.conf["link_keepalive"])
    timeout = float(node.conf["link_timeout"])
    if interval > 0 and timeout > 0:
        node.spawn(_keep_links_alive(node, interval, timeout), name="link keepalives")
    return "ok"
