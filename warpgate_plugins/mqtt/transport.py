"""The ``mqtt`` signal transport: signed, encrypted signal messages through MQTT brokers.

Each node subscribes to ``warpgate/v1/<hex public key>`` on the brokers rendezvous
hashing picks for its key (``sig_pipe_no`` of them) and advertises them as signal
hints in its address.  A sender publishes each message, sealed in a
:mod:`warpgate.sansio.envelope`, on every broker the peer listens on (its hints, the
brokers it was last heard through, or the same rendezvous ranking), and waits for the
recipient's receipt (an HMAC only the recipient can compute, see
:mod:`warpgate.sansio.envelope`), retransmitting with backoff until a deadline.  Every
broker connection also subscribes to the node's own topic, so receipts and replies come back on
whichever broker the message went out on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import secrets
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiomqtt

from warpgate.errors import ConfigError, WarpgateError
from warpgate.interfaces import SignalHandler
from warpgate.sansio.address import Hint, HintKind
from warpgate.sansio.envelope import (
    ENVELOPE_OVERHEAD,
    PAIRED_OVERHEAD,
    EnvelopeBadSignature,
    EnvelopeDecryptError,
    EnvelopeError,
    EnvelopeMalformed,
    EnvelopeReplayed,
    EnvelopeStale,
    EnvelopeTooLarge,
    EnvelopeWrongRecipient,
    PairKeys,
    ReplayCache,
    make_receipt,
    open_envelope,
    parse_receipt,
    seal_envelope_with_reply_key,
    seal_paired_envelope,
    verify_receipt,
)
from warpgate_plugins.mqtt.brokers import BrokerUrl, hrw_select, parse_broker_url
from warpgate_plugins.mqtt.messages import (
    ID_SIZE,
    Kind,
    Message,
    MessageError,
    Status,
    decode_message,
    decode_response,
    encode_response,
)

if TYPE_CHECKING:
    from warpgate.node.node import Node

log = logging.getLogger(__name__)

TOPIC_PREFIX = "warpgate/v1/"
MAX_HINTS = 4  # an address holds 8 hints in all; leave room for relays and name servers
_DROP_REASONS: dict[type[EnvelopeError], str] = {
    EnvelopeTooLarge: "oversized",
    EnvelopeMalformed: "malformed",
    EnvelopeWrongRecipient: "wrong_recipient",
    EnvelopeStale: "stale",
    EnvelopeBadSignature: "forged",
    EnvelopeDecryptError: "forged",
    EnvelopeReplayed: "replayed",
}

RequestHandler = Callable[[bytes, bytes], Awaitable[bytes | None] | bytes | None]


class SignalDeliveryError(WarpgateError, ConnectionError):
    """A signal message was not acknowledged by the peer before the deadline."""


class SignalRequestError(WarpgateError, ConnectionError):
    """A request got no (successful) response."""


def topic_for(public_key: bytes) -> str:
    """The topic a node with this key listens on."""
    return TOPIC_PREFIX + public_key.hex()


def _close_leaked_sockets(exc: BaseException) -> None:
    """Close sockets left open by a failed connection attempt.

    paho-mqtt (2.x) does not close its socket when the TLS handshake fails; the socket
    survives only in the frames of the original exception, which aiomqtt chains behind
    its ``MqttError``.  Left alone it is closed by the garbage collector with a
    ``ResourceWarning``; closing a socket twice is harmless.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, socket.socket):
                    value.close()
            tb = tb.tb_next
        current = current.__context__ or current.__cause__


def _release(client: aiomqtt.Client | None) -> None:
    """Close the socket a failed or finished client still holds, while our loop runs.

    paho-mqtt closes it in ``Client.__del__`` otherwise, through aiomqtt's socket-close
    callback, which needs the event loop: after the loop has closed that raises, and the
    garbage collector reports it wherever it happens to run (seen in CI as a failure of
    an unrelated test).  The attributes are private ones of aiomqtt and paho, so their
    absence is tolerated."""
    paho = getattr(client, "_client", None)
    reset = getattr(paho, "_reset_sockets", None)
    if reset is not None:
        with contextlib.suppress(Exception):
            reset()


class _Broker:
    """One broker connection, kept up in the background with reconnect backoff."""

    def __init__(self, owner: MqttSignal, url: BrokerUrl) -> None:
        self.owner = owner
        self.url = url
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connects = 0
        self.failures = 0
        self.last_error = ""
        self.last_used = time.monotonic()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"warpgate mqtt {self.url}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _client(self) -> aiomqtt.Client:
        conf = self.owner.conf
        tls: ssl.SSLContext | None = None
        if self.url.tls:
            tls = ssl.create_default_context(cafile=conf["mqtt_ca_file"])
        return aiomqtt.Client(
            self.url.host,
            self.url.port,
            username=self.url.username,
            password=self.url.password,
            identifier="wg-" + secrets.token_hex(8),
            clean_session=True,
            keepalive=int(conf["mqtt_keepalive"]),
            timeout=float(conf["mqtt_connect_timeout"]),
            tls_context=tls,
            max_queued_incoming_messages=int(conf["mqtt_max_queued"]),
            logger=logging.getLogger(f"{__name__}.paho"),
            # Signal messages are small and latency-bound: never wait to coalesce them.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        conf = self.owner.conf
        delay = float(conf["mqtt_reconnect_initial"])
        while True:
            client: aiomqtt.Client | None = None
            try:
                client = self._client()
                async with asyncio.timeout(float(conf["mqtt_connect_timeout"])):
                    await client.__aenter__()
                try:
                    await client.subscribe(self.owner.topic, qos=0)
                    self.client = client
                    self.connects += 1
                    self.connected.set()
                    delay = float(conf["mqtt_reconnect_initial"])
                    log.info("mqtt: connected to %s", self.url)
                    async for message in client.messages:
                        try:
                            receipt = self.owner._on_publish(self, message.payload)
                        except Exception:  # a bug must not take the subscription down
                            log.exception("mqtt: failed to handle a message from %s", self.url)
                            continue
                        if receipt is not None:
                            # Inline, not a task: a QoS 0 publish returns at once unless
                            # the socket is backed up, and then slowing down is right.
                            await self.publish(topic_for(receipt[0]), receipt[1])
                    raise aiomqtt.MqttError("the broker closed the message stream")
                except asyncio.CancelledError:
                    # Closing: say goodbye so the broker drops the session at once.
                    with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                        async with asyncio.timeout(1.0):
                            await client.__aexit__(None, None, None)
                    _release(client)
                    raise
                finally:
                    self.client = None
                    self.connected.clear()
            except (aiomqtt.MqttError, OSError, TimeoutError, ssl.SSLError) as exc:
                _close_leaked_sockets(exc)
                _release(client)
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "mqtt: broker %s unavailable (%s); retrying in %.1f s",
                    self.url,
                    self.last_error or type(exc).__name__,
                    delay,
                )
            # Jitter so a broker restart is not met by every node at once.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, float(conf["mqtt_reconnect_max"]))

    async def publish(self, topic: str, payload: bytes) -> bool:
        client = self.client
        if client is None:
            return False
        self.last_used = time.monotonic()
        try:
            await client.publish(
                topic, payload, qos=0, timeout=float(self.owner.conf["mqtt_connect_timeout"])
            )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("mqtt: publish through %s failed: %s", self.url, exc)
            return False
        return True


class MqttSignal:
    """Signal transport over MQTT (see the module docstring)."""

    name = "mqtt"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.conf = node.conf
        self.topic = ""
        self._handlers: list[SignalHandler] = []
        self._request_handlers: list[RequestHandler] = []
        self._brokers: dict[str, _Broker] = {}
        self._configured: dict[str, BrokerUrl] = {}
        self._own: list[BrokerUrl] = []
        self._hrw_cache: dict[bytes, list[BrokerUrl]] = {}
        # envelope nonce -> (reply key, future of the message it carries)
        self._pending: dict[bytes, tuple[bytes, asyncio.Future[None]]] = {}
        self._responses: dict[tuple[bytes, bytes], asyncio.Future[tuple[Status, bytes]]] = {}
        self._delivered: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        self._heard_via: dict[bytes, OrderedDict[str, None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._replay: ReplayCache | None = None
        self._pair_keys: PairKeys | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "sent",
                "received",
                "delivered",
                "duplicates",
                "acks_sent",
                "acks_received",
                "retransmits",
                "send_failures",
                "stray_receipts",
                "handler_errors",
                *sorted(set(_DROP_REASONS.values())),
                "bad_message",
            ),
            0,
        )
        self._closed = False

    @property
    def _paired(self) -> bool:
        return self.conf["mqtt_envelope"] != "signed"

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.node.private_key is None or not self.node.public_key:
            raise ConfigError("the mqtt signal transport needs the node identity (phase 2)")
        window = float(self.conf["mqtt_window"])
        if self.conf["mqtt_envelope"] not in ("paired", "signed"):
            raise ConfigError(
                f"mqtt_envelope must be 'paired' or 'signed', not {self.conf['mqtt_envelope']!r}"
            )
        self._pair_keys = PairKeys(self.node.private_key, self.node.public_key)
        self._replay = ReplayCache(window=window, max_entries=int(self.conf["mqtt_replay_cache"]))
        self.topic = topic_for(self.node.public_key)
        for url in self.conf["mqtt_brokers"] or ():
            broker = parse_broker_url(url)
            self._configured[broker.canonical] = broker
        count = int(self.conf["sig_pipe_no"])
        self._own = hrw_select(self.node.public_key, list(self._configured.values()), count)
        if not self._own:
            log.warning("mqtt signalling has no brokers: set mqtt_brokers in conf")
            return
        for url in self._own:
            self._broker(url)
        for url in self._own[:MAX_HINTS]:
            hint = Hint(HintKind.SIGNAL, url.canonical)
            if hint not in self.node.address_hints:
                self.node.address_hints.append(hint)
        # Wait (bounded) for one broker so the node is reachable when start() returns;
        # the others, and any that are down, keep connecting in the background.
        waits = [asyncio.ensure_future(b.connected.wait()) for b in self._brokers.values()]
        try:
            done, _ = await asyncio.wait(
                waits,
                timeout=float(self.conf["mqtt_connect_timeout"]),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if not done:
            log.warning(
                "mqtt: none of %s answered yet; still trying in the background",
                ", ".join(map(str, self._own)),
            )
        self._spawn(self._close_idle())

    async def _close_idle(self) -> None:
        """Close connections opened only to reach some peer's brokers once they go
        unused, so talking to many peers does not pile up broker connections."""
        idle = float(self.conf["mqtt_idle_close"])
        while True:
            await asyncio.sleep(max(1.0, idle / 4))
            now = time.monotonic()
            for key, broker in list(self._brokers.items()):
                if broker.url not in self._own and now - broker.last_used > idle:
                    log.debug("mqtt: closing idle connection to %s", broker.url)
                    del self._brokers[key]
                    await broker.stop()

    async def aclose(self) -> None:
        self._closed = True
        for _, fut in self._pending.values():
            fut.cancel()
        for response in self._responses.values():
            response.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(b.stop() for b in self._brokers.values()), return_exceptions=True)
        self._brokers.clear()

    # -- public API ------------------------------------------------------------------

    def add_handler(self, handler: SignalHandler) -> None:
        self._handlers.append(handler)

    def add_request_handler(self, handler: RequestHandler) -> None:
        """``handler(sender_key, payload)`` answers requests: it returns the response
        bytes (sync or async), or ``None`` to let the next handler answer."""
        self._request_handlers.append(handler)

    async def send(self, peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        """Deliver ``payload`` to ``peer_key``; returns when the peer acknowledged it.

        :raises SignalDeliveryError: no acknowledgement within ``mqtt_ack_timeout``.
        """
        await self._send_reliable(peer_key, Kind.DATA, payload, hints)

    async def request(
        self,
        peer_key: bytes,
        payload: bytes,
        *,
        timeout: float | None = None,
        hints: Sequence[str] = (),
    ) -> bytes:
        """Send ``payload`` to the peer's request handlers and return their response.

        :raises SignalDeliveryError: the request was not acknowledged.
        :raises SignalRequestError: no response in time, or the peer could not answer.
        """
        timeout = float(self.conf["mqtt_request_timeout"] if timeout is None else timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        msg_id = secrets.token_bytes(ID_SIZE)
        fut: asyncio.Future[tuple[Status, bytes]] = loop.create_future()
        self._responses[(peer_key, msg_id)] = fut
        try:
            await self._send_reliable(
                peer_key, Kind.REQUEST, payload, hints, msg_id=msg_id, deadline=deadline
            )
            try:
                async with asyncio.timeout_at(deadline):
                    status, body = await fut
            except TimeoutError:
                raise SignalRequestError(
                    f"no response from the peer within {timeout:g} s"
                ) from None
        finally:
            self._responses.pop((peer_key, msg_id), None)
        if status != Status.OK:
            raise SignalRequestError(f"the peer could not answer: {status.name.lower()}")
        return body

    def statistics(self) -> dict[str, Any]:
        """Counters (messages sent, delivered, dropped by reason...) and broker states."""
        return {
            **self.stats,
            "brokers": {
                key: {
                    "url": key,
                    "connected": b.connected.is_set(),
                    "connects": b.connects,
                    "failures": b.failures,
                    "last_error": b.last_error,
                    "own": b.url in self._own,
                }
                for key, b in self._brokers.items()
            },
        }

    @property
    def brokers(self) -> list[BrokerUrl]:
        """The brokers this node listens on (its rendezvous choice)."""
        return list(self._own)

    # -- sending -----------------------------------------------------------------------

    def _now(self) -> float:
        clock = self.node.clock
        return clock.time() if clock is not None else time.time()

    def _broker(self, url: BrokerUrl) -> _Broker:
        broker = self._brokers.get(url.canonical)
        if broker is None:
            # Credentials come from our own conf for a broker we know; hints carry none.
            known = self._configured.get(url.canonical, url)
            broker = self._brokers[url.canonical] = _Broker(self, known)
            broker.start()
        return broker

    def _rendezvous(self, peer_key: bytes) -> list[BrokerUrl]:
        """The brokers ``peer_key`` listens on if it has our broker list (cached)."""
        chosen = self._hrw_cache.get(peer_key)
        if chosen is None:
            if len(self._hrw_cache) >= 4096:
                self._hrw_cache.clear()
            chosen = self._hrw_cache[peer_key] = hrw_select(
                peer_key, list(self._configured.values()), int(self.conf["sig_pipe_no"])
            )
        return chosen

    def _targets(self, peer_key: bytes, hints: Sequence[str]) -> list[_Broker]:
        urls: dict[str, BrokerUrl] = {}
        for hint in hints:
            value = hint.value if isinstance(hint, Hint) else hint
            if isinstance(hint, Hint) and hint.kind != HintKind.SIGNAL:
                continue
            if not isinstance(value, str) or not value.startswith(("mqtt://", "mqtts://")):
                continue
            try:
                url = parse_broker_url(value)
            except ConfigError:
                log.debug("ignored a malformed signal hint %r", value)
                continue
            urls.setdefault(url.canonical, url)
        if not urls:
            # Where the peer was last heard from (it listens there), then the rendezvous
            # choice that both sides compute from the same broker list.
            for key in self._heard_via.get(peer_key, ()):
                if key in self._brokers:
                    urls[key] = self._brokers[key].url
            for url in self._rendezvous(peer_key):
                urls.setdefault(url.canonical, url)
        return [self._broker(url) for url in urls.values()]

    async def _send_reliable(
        self,
        peer_key: bytes,
        kind: Kind,
        body: bytes,
        hints: Sequence[str],
        *,
        msg_id: bytes | None = None,
        deadline: float | None = None,
    ) -> None:
        if self._closed:
            raise SignalDeliveryError("the mqtt signal transport is closed")
        peer_key = bytes(peer_key)
        loop = asyncio.get_running_loop()
        ack_timeout = float(self.conf["mqtt_ack_timeout"])
        deadline = min(deadline or float("inf"), loop.time() + ack_timeout)
        msg_id = msg_id or secrets.token_bytes(ID_SIZE)
        data = Message(kind, msg_id, bytes(body)).encode()
        overhead = PAIRED_OVERHEAD if self._paired else ENVELOPE_OVERHEAD
        if len(data) + overhead > int(self.conf["mqtt_max_message"]):
            raise ValueError(
                f"signal payload of {len(body)} bytes exceeds mqtt_max_message "
                f"({self.conf['mqtt_max_message']} bytes with overhead)"
            )
        targets = self._targets(peer_key, hints)
        if not targets:
            self.stats["send_failures"] += 1
            raise SignalDeliveryError("no MQTT broker to reach the peer (mqtt_brokers is empty)")
        acked: asyncio.Future[None] = loop.create_future()
        nonces: list[bytes] = []
        interval = float(self.conf["mqtt_retry_initial"])
        attempts = 0
        try:
            while True:
                if await self._publish_once(peer_key, data, targets, deadline, acked, nonces):
                    attempts += 1
                    if attempts > 1:
                        self.stats["retransmits"] += 1
                wait = min(interval, deadline - loop.time())
                if wait <= 0:
                    break
                try:
                    async with asyncio.timeout(wait):
                        await asyncio.shield(acked)
                    self.stats["sent"] += 1
                    return
                except TimeoutError:
                    pass
                interval = min(interval * 2, float(self.conf["mqtt_retry_max"]))
        finally:
            for nonce in nonces:
                self._pending.pop(nonce, None)
            if not acked.done():
                acked.cancel()
        self.stats["send_failures"] += 1
        where = ", ".join(f"{b.url} ({'up' if b.connected.is_set() else 'down'})" for b in targets)
        raise SignalDeliveryError(
            f"the peer did not acknowledge within {ack_timeout:g} s "
            f"({attempts} publishes through {where})"
        )

    async def _publish_once(
        self,
        peer_key: bytes,
        data: bytes,
        targets: list[_Broker],
        deadline: float,
        acked: asyncio.Future[None],
        nonces: list[bytes],
    ) -> bool:
        """Seal a fresh envelope and publish it on every connected target; wait
        (bounded by the deadline) for one to connect if none is."""
        if not any(b.connected.is_set() for b in targets):
            waits = [asyncio.ensure_future(b.connected.wait()) for b in targets]
            try:
                await asyncio.wait(
                    waits,
                    timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        assert self.node.private_key is not None
        nonce = os.urandom(16)
        if self._paired:
            assert self._pair_keys is not None
            envelope, reply_key = seal_paired_envelope(
                data,
                keys=self._pair_keys,
                recipient_public_key=peer_key,
                now=self._now(),
                nonce=nonce,
            )
        else:
            envelope, reply_key = seal_envelope_with_reply_key(
                data,
                sender_private_key=self.node.private_key,
                sender_public_key=self.node.public_key,
                recipient_public_key=peer_key,
                now=self._now(),
                nonce=nonce,
            )
        # Register before publishing: on loopback the receipt can beat publish()'s return.
        self._pending[nonce] = (reply_key, acked)
        nonces.append(nonce)
        topic = topic_for(peer_key)
        if len(targets) == 1:
            return await targets[0].publish(topic, envelope)
        # Return on the first broker that takes the message: a broker whose connection
        # just died can hold its publish until a timeout, and must not delay the others.
        pending = {asyncio.ensure_future(b.publish(topic, envelope)) for b in targets}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result() for task in done):
                for task in pending:
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                return True
        return False

    # -- receiving ---------------------------------------------------------------------

    def _on_publish(self, broker: _Broker, payload: object) -> tuple[bytes, bytes] | None:
        """Called for every message on our topic.  Never raises: bad input is counted.

        Returns ``(sender, receipt)`` when the message must be acknowledged."""
        self.stats["received"] += 1
        if not isinstance(payload, bytes | bytearray):
            self.stats["malformed"] += 1
            return None
        if payload[:1] == b"\x81":
            self._on_receipt(bytes(payload))
            return None
        assert self.node.private_key is not None
        try:
            opened = open_envelope(
                bytes(payload),
                self.node.private_key,
                self.node.public_key,
                self._now(),
                float(self.conf["mqtt_window"]),
                max_size=int(self.conf["mqtt_max_message"]),
                replay_cache=self._replay,
                pair_keys=self._pair_keys,
            )
        except EnvelopeError as exc:
            reason = _DROP_REASONS.get(type(exc), "malformed")
            self.stats[reason] += 1
            log.log(
                logging.DEBUG if reason == "replayed" else logging.INFO,
                "mqtt: dropped a signal message via %s: %s",
                broker.url,
                exc,
            )
            return None
        except Exception:  # a bug here must not kill the subscriber
            self.stats["malformed"] += 1
            log.exception("mqtt: failed to open a signal message")
            return None
        try:
            message = decode_message(opened.payload)
        except MessageError as exc:
            self.stats["bad_message"] += 1
            log.info("mqtt: dropped a malformed signal message: %s", exc)
            return None
        sender = opened.sender
        heard = self._heard_via.setdefault(sender, OrderedDict())
        heard[broker.url.canonical] = None
        heard.move_to_end(broker.url.canonical)
        while len(heard) > 4:
            heard.popitem(last=False)
        if len(self._heard_via) > 4096:
            self._heard_via.pop(next(iter(self._heard_via)))
        # Acknowledge every copy (the first receipt may have been lost), deliver once.
        receipt = (sender, make_receipt(opened))
        self.stats["acks_sent"] += 1
        if not self._first_delivery(sender, message.msg_id):
            self.stats["duplicates"] += 1
            return receipt
        self.stats["delivered"] += 1
        if message.kind == Kind.DATA:
            self._dispatch(sender, message.body)
        elif message.kind == Kind.REQUEST:
            self._spawn(self._answer(sender, message.msg_id, message.body))
        elif message.kind == Kind.RESPONSE:
            try:
                request_id, status, body = decode_response(message.body)
            except MessageError as exc:
                self.stats["bad_message"] += 1
                log.info("mqtt: dropped a malformed response: %s", exc)
                return receipt
            waiter = self._responses.get((sender, request_id))
            if waiter is not None and not waiter.done():
                waiter.set_result((status, body))
        return receipt

    def _first_delivery(self, sender: bytes, msg_id: bytes) -> bool:
        now = time.monotonic()
        horizon = now - 2 * float(self.conf["mqtt_window"])
        while self._delivered:
            oldest = next(iter(self._delivered.values()))
            if oldest >= horizon and len(self._delivered) < 8192:
                break
            self._delivered.popitem(last=False)
        key = (sender, msg_id)
        if key in self._delivered:
            return False
        self._delivered[key] = now
        return True

    def _on_receipt(self, data: bytes) -> None:
        try:
            nonce, tag = parse_receipt(data)
        except EnvelopeMalformed:
            self.stats["malformed"] += 1
            return
        entry = self._pending.get(nonce)
        if entry is None:
            # Late (the message was already acknowledged through another copy) or junk.
            self.stats["stray_receipts"] += 1
            return
        reply_key, acked = entry
        if not verify_receipt(tag, nonce, reply_key):
            self.stats["forged"] += 1
            log.info("mqtt: dropped a forged receipt")
            return
        if not acked.done():
            self.stats["acks_received"] += 1
            acked.set_result(None)

    def _dispatch(self, sender: bytes, payload: bytes) -> None:
        for handler in self._handlers:
            try:
                result = handler(sender, payload)
            except Exception:
                self.stats["handler_errors"] += 1
                log.exception("signal handler %r failed", handler)
                continue
            if inspect.isawaitable(result):
                self._spawn(self._await_handler(handler, result))

    async def _await_handler(self, handler: object, result: Awaitable[object]) -> None:
        try:
            await result
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("signal handler %r failed", handler)

    async def _answer(self, sender: bytes, request_id: bytes, payload: bytes) -> None:
        status, response = Status.NO_HANDLER, b""
        for handler in self._request_handlers:
            try:
                result = handler(sender, payload)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                self.stats["handler_errors"] += 1
                log.exception("request handler %r failed", handler)
                status = Status.HANDLER_FAILED
                break
            if result is not None:
                status, response = Status.OK, bytes(result)
                break
        try:
            await self._send_reliable(
                sender, Kind.RESPONSE, encode_response(request_id, status, response), ()
            )
        except (SignalDeliveryError, ValueError) as exc:
            log.info("mqtt: could not deliver a response: %s", exc)

    def _spawn(self, coro: Any) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def signal_request(
    node: Node,
    peer_key: bytes,
    payload: bytes,
    *,
    timeout: float = 10.0,
    hints: Sequence[str] = (),
) -> bytes:
    """Send a request to ``peer_key`` through the first signal transport that supports
    requests and return the response: the helper traversal providers use.

    :raises SignalRequestError: no transport supports requests, or none got an answer.
    """
    errors: list[str] = []
    for transport in node.signal_transports.values():
        request = getattr(transport, "request", None)
        if request is None:
            continue
        try:
            result: bytes = await request(peer_key, payload, timeout=timeout, hints=hints)
            return result
        except (ConnectionError, WarpgateError, OSError) as exc:
            errors.append(f"{transport.name}: {exc}")
    raise SignalRequestError(
        "no signal transport got a response: " + ("; ".join(errors) or "none supports requests")
    )
