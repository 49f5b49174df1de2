"""The ``reverse`` traversal method (connection reversal, RFC 5128 section 3.2).

When we cannot dial the peer (it is behind a NAT) but it can dial us, we ask it through
a signal transport to connect back.  The request carries a random *intent*; the peer's
dial presents it in the link handshake, so the inbound link is matched to this attempt,
and the handshake proves the peer's identity as any link does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import TYPE_CHECKING

from warpgate.connect import auto_connect
from warpgate.errors import WarpgateError
from warpgate.interfaces import Candidate, Transport
from warpgate.plugin import hookimpl
from warpgate.plugin.types import TraversalMethodInfo
from warpgate.sansio.address import HintKind
from warpgate.sansio.link_handshake import LinkAuthError
from warpgate.sansio.signal_messages import (
    REVERSE_CONNECT,
    ReverseConnect,
    SignalMessageError,
    decode_signal_message,
)
from warpgate.sansio.signal_messages import VERSION as SIGNAL_VERSION

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.node.node import Node
    from warpgate.sansio.address import NodeAddress

log = logging.getLogger(__name__)

COST_REVERSE = 5.0
DIAL_BACK_TIMEOUT = 10.0
# Anyone with a key can sign a request, and each dial-back may hold a connection attempt
# for DIAL_BACK_TIMEOUT: bound how many run at once, in all and per requesting key.
MAX_DIAL_BACKS = 64
MAX_DIAL_BACKS_PER_PEER = 16


class ReverseMethod:
    name = "reverse"

    def __init__(self, node: Node) -> None:
        self.node = node
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_peer: dict[bytes, int] = {}
        self.refused = 0  # requests ignored because too many dial-backs were running

    async def start(self) -> None:
        for transport in self.node.signal_transports.values():
            transport.add_handler(self._on_signal)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        if transport != "tcp" or not self.node.signal_transports or not self.node.listeners:
            return []
        return [Candidate(self.name, "tcp", None, None, COST_REVERSE, "peer dials back")]

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        token = secrets.token_bytes(16)
        inbound = self.node.expect_inbound(token)
        request = ReverseConnect(token, _decode_own(self.node)).encode()
        errors = []
        hints = [h.value for h in peer.hints if h.kind == HintKind.SIGNAL]
        try:
            for transport in self.node.signal_transports.values():
                try:
                    await transport.send(peer.public_key, request, hints=hints)
                    break
                except (ConnectionError, WarpgateError, OSError) as exc:
                    errors.append(f"{transport.name}: {exc}")
            else:
                raise ConnectionError("no signal transport reached the peer: " + "; ".join(errors))
            link = await inbound
        finally:
            inbound.cancel()
        if link.remote_key != peer.public_key:
            await link.close("unexpected identity")
            raise LinkAuthError("the peer that dialled back is not the one we asked")
        link.path = dataclasses.replace(link.path, method=self.name)
        return link

    def _on_signal(self, sender: bytes, payload: bytes) -> None:
        if len(payload) >= 2 and payload[0] == SIGNAL_VERSION and payload[1] != REVERSE_CONNECT:
            # Another method's message on the shared transport (hole punching's offers,
            # answers...): its own handler takes it; nothing wrong with it.
            log.debug("reverse: left a signal message of type %d to other handlers", payload[1])
            return
        try:
            request = decode_signal_message(payload)
        except SignalMessageError as exc:
            log.info("ignored a malformed signal message: %s", exc)
            return
        if request.address.public_key != sender:
            log.warning("ignored a reverse-connect request for an address its sender does not own")
            return
        running = self._per_peer.get(sender, 0)
        if len(self._tasks) >= MAX_DIAL_BACKS or running >= MAX_DIAL_BACKS_PER_PEER:
            self.refused += 1
            log.warning(
                "reverse connect: %d dial-backs running (%d for %s...); ignored a request",
                len(self._tasks),
                running,
                sender.hex()[:16],
            )
            return
        task = asyncio.create_task(self._dial_back(request), name="reverse dial-back")
        self._tasks.add(task)
        self._per_peer[sender] = running + 1
        task.add_done_callback(lambda t: self._finished(t, sender))

    def _finished(self, task: asyncio.Task[None], sender: bytes) -> None:
        self._tasks.discard(task)
        left = self._per_peer.pop(sender, 1) - 1
        if left > 0:
            self._per_peer[sender] = left

    async def _dial_back(self, request: ReverseConnect) -> None:
        try:
            link, _ = await auto_connect(
                self.node,
                request.address,
                methods=["direct"],
                intent=request.intent,
                timeout=DIAL_BACK_TIMEOUT,
            )
        except WarpgateError as exc:
            log.info("reverse connect: could not dial back: %s", exc)
            return
        # For this side the link is an inbound one: the peer asked for it.
        self.node.offer_inbound(link)


def _decode_own(node: Node) -> NodeAddress:
    from warpgate.sansio.address import NodeAddress

    return NodeAddress.decode(node.address())


@hookimpl
def warpgate_register_traversal_methods() -> list[TraversalMethodInfo]:
    return [
        TraversalMethodInfo(
            name="reverse",
            factory=ReverseMethod,
            cost=20,
            transports=("tcp",),
            description="ask the peer, through signalling, to dial us back",
        )
    ]
