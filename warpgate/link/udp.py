"""Links over UDP: datagram links, authenticated and encrypted like TCP links.

UDP links are **unreliable and unordered**: a message is one datagram, it may be lost,
duplicated by the network (the replay window drops duplicates) or arrive out of order.
``auto_connect`` uses TCP unless asked for ``transport="udp"``.  Datagrams go from and
to the node's listening UDP sockets, so NAT mappings are the ones the node advertises.

Wire format, first byte:

==========  ================================================================
``0xD0``    handshake 1: sender index u32 | Noise message 1
``0xD1``    handshake 2: sender index u32 | receiver index u32 | Noise message 2
``0xD2``    handshake 3: sender index u32 | receiver index u32 | Noise message 3
``0xD3``    handshake 3 acknowledged: receiver index u32
``0xD4``    data: receiver index u32 | nonce u64 | record (see ``link_records``)
==========  ================================================================

The initiator retransmits handshake messages 1 and 3 (250 ms, doubling to 1 s) until
answered; the responder answers a repeated message with its cached reply.  The initiator
has its link once it sends message 3 (one round trip, like TCP's); message 3 is repeated
in the background until acknowledged, or until the peer speaks on the link.  Message 1 is
padded (zero bytes in its Noise payload) to ``HS1_MIN_SIZE``, and shorter ones are dropped,
so an answer is never larger than the datagram that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warpgate.link.link import Addr, Link, LinkClosed, LinkPath
from warpgate.sansio.link_handshake import LinkHandshake, LinkProtocolError
from warpgate.sansio.link_records import DatagramRecordCodec

if TYPE_CHECKING:
    from warpgate.net.servers import Listener
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

HS1, HS2, HS3, HS3_ACK, DATA = 0xD0, 0xD1, 0xD2, 0xD3, 0xD4
KINDS = frozenset({HS1, HS2, HS3, HS3_ACK, DATA})
_U32 = struct.Struct(">I")
RETRANSMIT_FIRST = 0.25
RETRANSMIT_MAX = 1.0
MAX_PENDING_RESPONSES = 256  # half-open inbound handshakes kept at once
# A first handshake datagram must be at least this large.  The answer (about 215 bytes)
# goes to a source address nobody has verified yet: were the request smaller, anyone could
# make a node send more to a forged address than they send themselves (amplification).
HS1_MIN_SIZE = 256


class UdpLink(Link[bytes]):
    """A link over UDP datagrams between two listening sockets."""

    def __init__(
        self,
        *,
        send_datagram: Callable[[bytes], None],
        local_index: int,
        remote_index: int,
        codec: DatagramRecordCodec,
        remote_key: bytes,
        path: LinkPath,
        initiator: bool,
        intent: bytes,
        on_shutdown: Callable[[int], None],
    ) -> None:
        super().__init__(
            codec=codec, remote_key=remote_key, path=path, initiator=initiator, intent=intent
        )
        self._send_datagram = send_datagram
        self.local_index = local_index
        self.remote_index = remote_index
        self._header = bytes([DATA]) + _U32.pack(remote_index)
        self._on_shutdown = on_shutdown
        self._drop_when_full = True

    async def _transmit(self, records: list[bytes]) -> None:
        if self.closed:
            raise LinkClosed(f"link closed {self._close_reason}".strip())
        for record in records:
            self._send_datagram(self._header + record)

    def _is_sign_of_life(self, event: object) -> bool:
        # A datagram that opened to nothing was forged, replayed or stale: anyone can
        # send those, so they must not keep a dead peer's link open.
        return event is not None

    async def _shutdown(self, reason: str) -> None:
        self._mark_closed(reason)
        self._on_shutdown(self.local_index)

    async def datagram_received(self, record: bytes) -> None:
        try:
            if not await self._handle_record(record):
                await self._shutdown(self._close_reason or "(closed by peer)")
        except LinkProtocolError as exc:
            log.warning("closing udp link to %s: %s", self.path.remote, exc)
            await self._shutdown(f"(protocol error: {exc})")


@dataclass
class _Dial:
    hs: LinkHandshake
    remote: Addr
    listener: Listener
    method: str
    got_reply: asyncio.Future[tuple[int, bytes]]
    acked: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Respond:
    hs: LinkHandshake
    remote: Addr
    listener: Listener
    peer_index: int
    reply: bytes
    created: float = field(default_factory=time.monotonic)
    # Data that overtook (or outlived a lost) handshake message 3: the dialler sends
    # right behind it.  Opened, and so authenticated, once the link exists.
    early: list[bytes] = field(default_factory=list)


class UdpLinks:
    """The node's UDP link endpoint: handshakes in both directions and the demux of
    data datagrams to links, by receiver index."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._dials: dict[int, _Dial] = {}
        self._responses: dict[int, _Respond] = {}
        self._by_peer: dict[tuple[Addr, int], int] = {}
        self.links: dict[int, UdpLink] = {}
        self.dropped = 0

    def _new_index(self) -> int:
        while True:
            index = secrets.randbits(32)
            if index and index not in self._dials and index not in self._responses:
                if index not in self.links:
                    return index

    @staticmethod
    def _send(listener: Listener, data: bytes, remote: Addr) -> None:
        if listener.udp is not None and not listener.udp.is_closing():
            listener.udp.sendto(data, remote)

    # -- initiator ------------------------------------------------------------------

    async def dial(
        self,
        listener: Listener,
        remote: Addr,
        *,
        expected_identity: bytes,
        intent: bytes,
        method: str,
    ) -> UdpLink:
        """Handshake with ``remote`` from ``listener``'s socket; the caller bounds the
        time (``asyncio.timeout``)."""
        node = self.node
        hs = LinkHandshake(
            node.link_identity,
            initiator=True,
            expected_identity=expected_identity,
            intent=intent,
            plaintext=not node.conf["link_encryption"],
        )
        index = self._new_index()
        dial = _Dial(hs, remote, listener, method, asyncio.get_running_loop().create_future())
        self._dials[index] = dial
        link: UdpLink | None = None
        confirming = False
        try:
            first = bytes([HS1]) + _U32.pack(index) + hs.start(padding=HS1_MIN_SIZE - 5 - 32)
            peer_index, msg2 = await self._until(dial.got_reply, listener, first, remote)
            msg3 = hs.receive(msg2)
            assert msg3 is not None
            link = self._make_link(hs, index, peer_index, listener, remote, method)
            third = bytes([HS3]) + _U32.pack(index) + _U32.pack(peer_index) + msg3
            self._send(listener, third, remote)
            # The link is ours now (the peer proved its identity in message 2), and the
            # peer has it as soon as message 3 arrives; datagrams sent right behind it
            # normally arrive behind it.  Waiting for the acknowledgement would cost a
            # whole round trip before the first byte, so message 3 is repeated in the
            # background instead, until acknowledged.
            self.node.spawn(self._confirm(index, dial, link, third), name="udp link confirm")
            confirming = True
            return link
        except BaseException:
            if link is not None:
                await link._shutdown("(handshake not finished)")
            raise
        finally:
            if not confirming:
                self._dials.pop(index, None)

    async def _confirm(self, index: int, dial: _Dial, link: UdpLink, third: bytes) -> None:
        """Repeat handshake message 3 until the peer acknowledges it or speaks on the link
        (which proves it has the link too); close the link if neither happens within
        ``handshake_timeout``."""
        deadline = time.monotonic() + float(self.node.conf["handshake_timeout"])
        delay = RETRANSMIT_FIRST
        try:
            while not link.closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await dial.acked.wait()
                    return
                if link.last_received > link.created:
                    return
                if time.monotonic() >= deadline:
                    await link._shutdown("(the peer never confirmed the handshake)")
                    return
                self._send(dial.listener, third, dial.remote)
                delay = min(delay * 2, RETRANSMIT_MAX)
        finally:
            self._dials.pop(index, None)

    async def _until(self, waiter: asyncio.Future, listener: Listener, packet: bytes, remote: Addr):
        delay = RETRANSMIT_FIRST
        try:
            while True:
                self._send(listener, packet, remote)
                done, _ = await asyncio.wait({waiter}, timeout=delay)
                if done:
                    return waiter.result()
                delay = min(delay * 2, RETRANSMIT_MAX)
        finally:
            if not waiter.done():
                waiter.cancel()

    # -- both sides --------------------------------------------------------------------

    def _make_link(
        self,
        hs: LinkHandshake,
        local_index: int,
        remote_index: int,
        listener: Listener,
        remote: Addr,
        method: str,
    ) -> UdpLink:
        codec = DatagramRecordCodec(
            *hs.transport_ciphers(), max_message=self.node.conf["udp_max_message"]
        )
        assert hs.remote_identity is not None
        link = UdpLink(
            send_datagram=lambda data: self._send(listener, data, remote),
            local_index=local_index,
            remote_index=remote_index,
            codec=codec,
            remote_key=hs.remote_identity,
            # A TURN relay endpoint stands in for a listener and says it relays.
            path=LinkPath(
                method, "udp", listener.local, remote, getattr(listener, "relayed", False)
            ),
            initiator=hs.initiator,
            intent=hs.intent,
            on_shutdown=self._forget,
        )
        self.links[local_index] = link
        return link

    def _forget(self, index: int) -> None:
        self.links.pop(index, None)

    async def close(self) -> None:
        for link in list(self.links.values()):
            with contextlib.suppress(Exception):
                await link.close("node closing")

    # -- the demux ------------------------------------------------------------------

    async def datagram_received(self, data: bytes, remote: Addr, listener: Listener) -> bool:
        """Handle a datagram if it is ours; False when it is not a UDP-link datagram."""
        if not data or data[0] not in KINDS:
            return False
        try:
            await self._dispatch(data, remote, listener)
        except (LinkProtocolError, struct.error, IndexError) as exc:
            self.dropped += 1
            log.debug("dropped udp link datagram from %s: %s", remote, exc)
        except Exception as exc:  # a hostile datagram must never take the endpoint down
            self.dropped += 1
            log.info("dropped udp link datagram from %s: %s: %s", remote, type(exc).__name__, exc)
        return True

    async def _dispatch(self, data: bytes, remote: Addr, listener: Listener) -> None:
        kind = data[0]
        if kind == DATA:
            index = _U32.unpack_from(data, 1)[0]
            link = self.links.get(index)
            if link is None:
                pending = self._responses.get(index)
                if pending is not None and pending.remote == remote and len(pending.early) < 4:
                    pending.early.append(data[5:])
                else:
                    self.dropped += 1
                return
            await link.datagram_received(data[5:])
        elif kind == HS1:
            if len(data) < HS1_MIN_SIZE:
                self.dropped += 1  # unpadded: answering it would amplify (HS1_MIN_SIZE)
                return
            self._on_hs1(_U32.unpack_from(data, 1)[0], data[5:], remote, listener)
        elif kind == HS2:
            sender, receiver = _U32.unpack_from(data, 1)[0], _U32.unpack_from(data, 5)[0]
            dial = self._dials.get(receiver)
            if dial is not None and not dial.got_reply.done() and remote == dial.remote:
                dial.got_reply.set_result((sender, data[9:]))
        elif kind == HS3:
            sender, receiver = _U32.unpack_from(data, 1)[0], _U32.unpack_from(data, 5)[0]
            self._on_hs3(sender, receiver, data[9:], remote, listener)
        elif kind == HS3_ACK:
            dial = self._dials.get(_U32.unpack_from(data, 1)[0])
            if dial is not None and remote == dial.remote:
                dial.acked.set()

    def _on_hs1(self, peer_index: int, msg1: bytes, remote: Addr, listener: Listener) -> None:
        known = self._by_peer.get((remote, peer_index))
        if known is not None and known in self._responses:
            self._send(listener, self._responses[known].reply, remote)  # a retransmission
            return
        self._expire_responses()
        if len(self._responses) >= MAX_PENDING_RESPONSES:
            # Evict the oldest half-open handshake rather than refuse the new one: with
            # refusal, a few hundred spoofed first messages would lock every real peer
            # out for handshake_timeout; with eviction a real peer only needs its third
            # message back within the time the attacker takes to send this many.
            oldest = next(iter(self._responses))
            stale = self._responses.pop(oldest)
            self._by_peer.pop((stale.remote, stale.peer_index), None)
            self.dropped += 1
        hs = LinkHandshake(
            self.node.link_identity,
            initiator=False,
            plaintext=not self.node.conf["link_encryption"],
        )
        msg2 = hs.receive(msg1)
        assert msg2 is not None
        index = self._new_index()
        reply = bytes([HS2]) + _U32.pack(index) + _U32.pack(peer_index) + msg2
        self._responses[index] = _Respond(hs, remote, listener, peer_index, reply)
        self._by_peer[(remote, peer_index)] = index
        self._send(listener, reply, remote)

    def _on_hs3(
        self, peer_index: int, index: int, msg3: bytes, remote: Addr, listener: Listener
    ) -> None:
        ack = bytes([HS3_ACK]) + _U32.pack(peer_index)
        link = self.links.get(index)
        if link is not None and link.remote_index == peer_index:
            self._send(listener, ack, remote)  # our ack was lost: say it again
            return
        pending = self._responses.get(index)
        if pending is None or pending.remote != remote or pending.peer_index != peer_index:
            self.dropped += 1
            return
        del self._responses[index]
        self._by_peer.pop((remote, peer_index), None)
        pending.hs.receive(msg3)
        link = self._make_link(pending.hs, index, peer_index, listener, remote, "inbound")
        self._send(listener, ack, remote)
        self.node.adopt_link(link, inbound=True)
        for record in pending.early:
            self.node.spawn(link.datagram_received(record), name="udp link early datagram")

    def _expire_responses(self) -> None:
        limit = time.monotonic() - self.node.conf["handshake_timeout"]
        for index, pending in list(self._responses.items()):
            if pending.created < limit:
                del self._responses[index]
                self._by_peer.pop((pending.remote, pending.peer_index), None)
