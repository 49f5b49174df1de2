"""``Gate``: the high-level API.  A node with a stable, named identity, started for you,
with inbound links as an async iterator, torn down on exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from warpgate.config import dict_child
from warpgate.connect import auto_connect
from warpgate.interfaces import Transport
from warpgate.link.link import Link
from warpgate.node.node import Node
from warpgate.node.node_defs import NODE_CONF

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerHandle:
    """A peer named by nickname (``peer.find("bob")``)."""

    name: str

    def __str__(self) -> str:
        return self.name


class PeerFinder:
    """``peer.find(name)`` -> a :class:`PeerHandle`.

    A bare name (``"bob"``) is looked up by every running name service in its own
    namespace (``bob.p2p`` for one PNP server, ``bob.peer`` for several, ``bob.lan`` in a
    names file); a full name (``"bob.p2p"``) only by the service whose TLD it has.
    ``tld`` appends a suffix to a bare name.
    """

    def find(self, name: str, tld: str | None = None) -> PeerHandle:
        name = name.strip()
        if not name:
            raise ValueError("a peer name cannot be empty")
        if tld and "." not in name:
            name += tld if tld.startswith(".") else "." + tld
        return PeerHandle(name)


peer = PeerFinder()


class Gate:
    """A node with a stable identity from the keystore, as an async context manager.

    :param name: identity name (the keystore entry, and the nickname registered when a
        name service is running).
    :param conf: configuration (default ``NODE_CONF``); ``identity_name`` is set from
        ``name``.
    :param ip: / :param port: / :param plugins: as for :class:`~warpgate.Node`.

    ::

        async with Gate("alice") as alice:
            async for link in alice:          # inbound links
                print(await link.recv())
    """

    peer = peer

    def __init__(
        self,
        name: str = "gate",
        conf: dict[str, Any] | None = None,
        *,
        ip: str | Sequence[str] | None = None,
        port: int | None = None,
        plugins: Sequence[object] = (),
    ) -> None:
        self.name = name
        self.node = Node(
            ip=ip,
            port=port,
            conf=dict_child({"identity_name": name}, conf if conf is not None else NODE_CONF),
            plugins=plugins,
        )
        self._listeners: set[asyncio.Task[None]] = set()

    @property
    def full_name(self) -> str | None:
        """The registered nickname (``"alice.p2p"``), or ``None`` without a name service."""
        result = self.node.phase_results.get("setup_nickname_service")
        return result if isinstance(result, str) and "." in result else None

    def address(self) -> bytes:
        return self.node.address()

    async def __aenter__(self) -> Gate:
        await self.node.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._listeners):
            task.cancel()
        if self._listeners:
            await asyncio.gather(*self._listeners, return_exceptions=True)
        await self.node.close()

    async def connect(
        self,
        target: PeerHandle | str | bytes,
        *,
        timeout: float | None = None,
        methods: list[str] | None = None,
        transport: Transport = "tcp",
    ) -> Link:
        """A link to ``target`` (a :class:`PeerHandle`, nickname, address bytes or
        text).  Raises :class:`~warpgate.ConnectError` when nothing works."""
        dest = target.name if isinstance(target, PeerHandle) else target
        link, _method = await auto_connect(
            self.node, dest, timeout=timeout, methods=methods, transport=transport
        )
        return link

    async def accept(self, timeout: float | None = None) -> Link:
        """The next inbound link."""
        return await self.node.accept(timeout)

    def __aiter__(self) -> AsyncIterator[Link]:
        return self._inbound()

    async def _inbound(self) -> AsyncIterator[Link]:
        while not self.node.closed:
            yield await self.node.accept()

    def listen(self, handler: Callable[[Link], Awaitable[None]]) -> asyncio.Task[None]:
        """Call ``handler(link)`` in its own task for every inbound link until the gate
        closes.  A handler that raises is logged; its link is closed."""

        async def serve() -> None:
            async with asyncio.TaskGroup() as tg:
                async for link in self:
                    tg.create_task(self._handle(handler, link))

        task = asyncio.create_task(serve(), name=f"gate {self.name} listen")
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)
        return task

    @staticmethod
    async def _handle(handler: Callable[[Link], Awaitable[None]], link: Link) -> None:
        try:
            await handler(link)
        except Exception:
            log.exception("link handler failed for %s", link)
        finally:
            with contextlib.suppress(Exception):
                await link.close()
