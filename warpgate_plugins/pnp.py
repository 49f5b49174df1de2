"""The ``pnp`` name backend: nicknames on PNP (Peer Name Protocol) servers.

``register(name, node)`` signs a PUT with the node's identity key and stores the node's
address under ``name`` on every server in ``pnp_servers``, then refreshes it before it
expires; ``resolve("alice.p2p")`` fetches the address back.

The top-level domain names the server set (see docs/names.md): one server → ``.p2p``,
several → ``.peer``.  ``resolve`` accepts a bare name or one with this set's TLD.

An empty ``pnp_servers`` makes the backend unavailable: start-up logs it and goes on,
and an explicit ``node.nickname()`` raises :class:`~warpgate.errors.UnavailableError`.
Automatic registration during ``start()`` never fails the start: a refusal (the name is
taken, the server is down) is logged as a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from warpgate.errors import ConfigError, UnavailableError, WarpgateError
from warpgate.plugin import hookimpl
from warpgate.plugin.types import NameServiceInfo
from warpgate.pnp.client import (
    NameNotFoundError,
    NameTakenError,
    PnpClient,
    PnpRequestError,
    Server,
    parse_server,
)
from warpgate.sansio.pnp import PnpError, normalise_name

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)


def tld_for(servers: list[Server]) -> str:
    """The TLD of a server set: ``"p2p"`` for one server, ``"peer"`` for several."""
    return "p2p" if len(servers) <= 1 else "peer"


class PnpNames:
    name = "pnp"

    def __init__(self, node: Node) -> None:
        self.node = node
        raw = node.conf.get("pnp_servers") or []
        if isinstance(raw, str) or not isinstance(raw, list | tuple):
            raise ConfigError("conf key 'pnp_servers' must be a list of 'host:port' strings")
        self.servers = [parse_server(s) for s in raw]
        self.timeout = float(node.conf.get("pnp_timeout", 3.0))
        self.ttl = int(node.conf.get("pnp_ttl", 86400))
        self.retry = float(node.conf.get("pnp_retry", 30.0))
        if self.timeout <= 0 or self.ttl <= 0 or self.retry <= 0:
            raise ConfigError("conf keys 'pnp_timeout', 'pnp_ttl' and 'pnp_retry' must be positive")
        self.tld = tld_for(self.servers)
        self.client = PnpClient(self.servers, timeout=self.timeout)
        self._refresh: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        # Only worth a warning when the node means to register a name; otherwise a
        # lookup by name will say the same when (and if) one is tried.
        if not self.servers and self.node.conf["enable_nickname"]:
            log.warning(
                "pnp nicknames are unavailable: conf key 'pnp_servers' is empty "
                "(set it to your PNP servers, or enable_nickname=False to silence this)"
            )

    async def aclose(self) -> None:
        tasks = list(self._refresh.values())
        self._refresh.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _bare(self, name: str) -> str:
        text = name.strip().lower()
        if "." in text:
            text, _, tld = text.rpartition(".")
            if tld != self.tld:
                raise LookupError(
                    f"{name!r} is not a name of this PNP server set (its names end in .{self.tld})"
                )
        try:
            return normalise_name(text)
        except PnpError as exc:
            raise LookupError(str(exc)) from None

    async def register(self, name: str, node: object) -> str:
        starting = not getattr(node, "started", True)
        try:
            return await self._register(name, node)
        except (WarpgateError, LookupError) as exc:
            if not starting:
                raise
            log.warning("pnp: the nickname %r was not registered during start-up: %s", name, exc)
            if isinstance(exc, PnpRequestError) and not isinstance(exc, NameTakenError):
                # the servers were down or busy: keep trying in the background
                self._schedule_refresh(self._bare(name), node, 0, len(self.servers), failed=True)
            return ""

    async def _register(self, name: str, node: Any) -> str:
        if not self.servers:
            raise UnavailableError(
                "pnp nicknames need a PNP server: set conf key 'pnp_servers' "
                "(for example ['127.0.0.1:5300'])"
            )
        bare = self._bare(name)
        if node.private_key is None:
            raise RuntimeError("the node has no identity yet: await node.start() first")
        expires_ms, missing = await self._put(bare, node)
        full = f"{bare}.{self.tld}"
        log.info("pnp: registered %s", full)
        self._schedule_refresh(bare, node, expires_ms, missing)
        return full

    async def _put(self, bare: str, node: Any) -> tuple[int, int]:
        """PUT on every server: (earliest expiry in ms, how many servers failed).

        A name is registered when at least one server stored it and no server said it
        belongs to another key; a server that is down or refused for another reason
        is logged and tried again by the refresher, sooner than the next refresh.
        """
        results = await self.client.put_each(bare, node.address(), node.private_key, ttl=self.ttl)
        errors = [r for r in results.values() if isinstance(r, PnpRequestError)]
        for error in errors:
            if isinstance(error, NameTakenError):
                # another key owns the name on some server: do not leave it half
                # registered on the others (best effort; it would expire anyway)
                took = [s for s, r in results.items() if not isinstance(r, PnpRequestError)]
                if took:
                    undone = await self.client.delete_each(bare, node.private_key, took)
                    for server, result in undone.items():
                        if isinstance(result, PnpRequestError):
                            log.warning(
                                "pnp: could not withdraw %r from %s: %s", bare, server, result
                            )
                raise error
        stored = [r.expires_ms for r in results.values() if not isinstance(r, PnpRequestError)]
        if not stored:
            raise (
                errors[0]
                if len(errors) == 1
                else PnpRequestError("; ".join(str(e) for e in errors))
            )
        for error in errors:
            log.warning("pnp: %r is not on every server yet (will retry): %s", bare, error)
        return min(stored), len(errors)

    def _schedule_refresh(
        self, bare: str, node: Any, expires_ms: int, missing: int = 0, *, failed: bool = False
    ) -> None:
        old = self._refresh.pop(bare, None)
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        task = asyncio.create_task(self._refresher(bare, node, expires_ms, missing, failed))
        self._refresh[bare] = task

    async def _refresher(
        self, bare: str, node: Any, expires_ms: int, missing: int, failed: bool
    ) -> None:
        """Re-register at half the remaining lifetime; while a server lacks the name
        (it was down, or refused), retry within ``pnp_retry`` seconds instead."""
        while True:
            remaining = expires_ms / 1000 - time.time()
            wait = max(1.0, remaining / 2)
            if failed:
                wait = self.retry  # every server failed: no tighter loop than this
            elif missing:
                wait = min(wait, self.retry)
            await asyncio.sleep(wait)
            try:
                expires_ms, missing = await self._put(bare, node)
                failed = False
                log.debug("pnp: refreshed %s", bare)
            except NameTakenError as exc:
                # the record expired (the servers were unreachable for its whole
                # lifetime) and another key registered the name: it is theirs now
                log.error("pnp: lost the name %r to another key; not refreshing it: %s", bare, exc)
                if self._refresh.get(bare) is asyncio.current_task():
                    del self._refresh[bare]
                return
            except (WarpgateError, OSError) as exc:
                failed = True
                log.warning("pnp: refreshing %r failed (will retry): %s", bare, exc)

    async def resolve(self, name: str) -> bytes:
        bare = self._bare(name)
        if not self.servers:
            raise UnavailableError("pnp cannot resolve names: conf key 'pnp_servers' is empty")
        try:
            return (await self.client.get(bare)).value
        except NameNotFoundError as exc:
            raise LookupError(str(exc)) from None

    async def unregister(self, name: str) -> None:
        """Delete ``name`` from every server and stop refreshing it."""
        bare = self._bare(name)
        task = self._refresh.pop(bare, None)
        if task is not None:
            task.cancel()
        if self.node.private_key is None:
            raise RuntimeError("the node has no identity yet")
        await self.client.delete(bare, self.node.private_key)


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        "pnp_servers": [],
        "pnp_timeout": 3.0,
        "pnp_ttl": 86400,
        "pnp_retry": 30.0,
    }


@hookimpl
def warpgate_register_name_services() -> list[NameServiceInfo]:
    return [
        NameServiceInfo(
            name="pnp",
            factory=PnpNames,
            description="nicknames on PNP servers (conf pnp_servers)",
        )
    ]
