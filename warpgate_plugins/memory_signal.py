"""The ``memory`` signal transport: delivers signal messages between nodes of one
process (any thread, any event loop).

It is what lets reverse connect work in tests, demos and single-process apps before a
network signal transport (MQTT) is installed.  Messages to a node in another process
fail at once, so other transports in the stack are tried.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from warpgate.interfaces import SignalHandler
from warpgate.plugin import hookimpl
from warpgate.plugin.types import SignalTransportInfo

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

_hub: dict[bytes, MemorySignal] = {}
_hub_lock = threading.Lock()


class MemorySignal:
    name = "memory"

    def __init__(self, node: Node) -> None:
        self.node = node
        self._handlers: list[SignalHandler] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with _hub_lock:
            _hub[self.node.public_key] = self

    async def aclose(self) -> None:
        with _hub_lock:
            if _hub.get(self.node.public_key) is self:
                del _hub[self.node.public_key]
        for task in list(self._tasks):
            task.cancel()

    def add_handler(self, handler: SignalHandler) -> None:
        self._handlers.append(handler)

    async def send(self, peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        with _hub_lock:
            target = _hub.get(peer_key)
        if target is None or target._loop is None or target._loop.is_closed():
            raise ConnectionError("the peer is not reachable through in-process signalling")
        sender = self.node.public_key
        target._loop.call_soon_threadsafe(target._dispatch, sender, bytes(payload))

    def _dispatch(self, sender: bytes, payload: bytes) -> None:
        for handler in self._handlers:
            result = handler(sender, payload)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)


@hookimpl
def warpgate_register_signal_transports() -> list[SignalTransportInfo]:
    return [
        SignalTransportInfo(
            name="memory",
            factory=MemorySignal,
            description="between nodes of one process (tests, demos)",
        )
    ]
