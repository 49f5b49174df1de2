"""An in-process MQTT broker for signalling (``amqtt``, from the ``server`` extra).

For a single machine, a demo or a small deployment: nodes point ``mqtt_brokers`` at
its :attr:`~EmbeddedMqttBroker.url`.  At scale run mosquitto or EMQX instead (see
docs/signalling.md); the transport does not care which broker it talks to.

Every signal message is end-to-end encrypted and signed, so the broker is trusted only
to pass messages along; by default it accepts anonymous clients.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from warpgate.errors import UnavailableError
from warpgate.net.hostport import format_hostport

__all__ = ["EmbeddedMqttBroker", "quiet_amqtt"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_amqtt() -> Iterator[None]:
    """Only amqtt's critical logs inside the block, unless the root logger is verbose
    (-v): amqtt logs a traceback for a bind error that the caller reports in one line."""
    amqtt_log = logging.getLogger("amqtt")
    saved = amqtt_log.level
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        amqtt_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        amqtt_log.setLevel(saved)


class EmbeddedMqttBroker:
    """An amqtt broker listening on ``host:port`` (``port=0``: any free port).

    Use as ``async with EmbeddedMqttBroker("127.0.0.1", 0) as broker: broker.url``, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1883, *, max_connections: int = 0
    ) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self._broker: Any = None

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` to put in ``mqtt_brokers``."""
        return f"mqtt://{format_hostport(self.host, self.port)}"

    async def start(self) -> EmbeddedMqttBroker:
        """Start listening.

        :raises UnavailableError: amqtt is not installed (``pip install warpgate[server]``).
        :raises OSError: the address cannot be bound.
        """
        if self._broker is not None:
            return self
        try:
            from amqtt.broker import Broker  # type: ignore[import-untyped]
        except ImportError as exc:
            raise UnavailableError(
                "the embedded MQTT broker needs amqtt: pip install 'warpgate[server]'"
            ) from exc
        # amqtt keeps the brackets of "[v6]:port" in the host it binds (which then does
        # not resolve), and splits at the last ':', so an IPv6 host goes in bare.
        config = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{self.host}:{self.port}",
                    "max_connections": self.max_connections,
                }
            },
            # Only anonymous auth: amqtt's default plugin set also logs every packet and
            # publishes $SYS topics, which costs throughput and tells nodes nothing.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        if self.port == 0:
            self.port = self._bound_port(broker)
        log.info("embedded MQTT broker listening on %s", self.url)
        return self

    @staticmethod
    def _bound_port(broker: Any) -> int:
        # amqtt has no public accessor for the bound port; read it from its server.
        for server in getattr(broker, "_servers", {}).values():
            instance = getattr(server, "instance", None)
            for sock in getattr(instance, "sockets", None) or ():
                port: int = sock.getsockname()[1]
                return port
        raise RuntimeError("could not find the port the embedded broker bound")

    async def stop(self) -> None:
        """Stop the broker and disconnect its clients.  Idempotent."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
            log.info("embedded MQTT broker on %s stopped", self.url)

    async def __aenter__(self) -> EmbeddedMqttBroker:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
