"""The all-in-one infrastructure of ``warpgate serve``: a PNP name server, a STUN
server and the embedded MQTT broker in one process, each switchable.

:class:`ServeStack` starts the selected services in order (PNP, STUN, MQTT); if one
cannot start, the ones already running are stopped and :class:`ServeError` says which
service and address failed and why (a port in use, a missing extra).  ``client_conf()``
is the conf a node needs to use what runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from warpgate.errors import UnavailableError, WarpgateError
from warpgate.net.hostport import format_hostport

log = logging.getLogger(__name__)

PNP_PORT = 5300
STUN_PORT = 3478
MQTT_PORT = 1883


class ServeError(WarpgateError):
    """A service could not start (the message names it, its address and the cause)."""


def bind_error_text(exc: BaseException) -> str:
    """The most useful line for a failed bind: the OSError's strerror if it is in the
    chain (amqtt wraps bind errors in its own exception types), else the exception."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc) or type(exc).__name__


@dataclass
class ServeOptions:
    """What ``warpgate serve`` runs.  Ports 0 pick free ports."""

    host: str = "127.0.0.1"
    pnp: bool = True
    stun: bool = True
    mqtt: bool = True
    pnp_port: int = PNP_PORT
    stun_port: int = STUN_PORT
    mqtt_port: int = MQTT_PORT
    stun_alternate: str | None = None  # a second IP: RFC 5780 NAT tests
    store: str = "pnp.db"  # SQLite path, sqlite:///path or postgresql://...
    names_per_ip: int = 20
    rate: float = 50.0
    burst: float = 100.0
    max_ttl: int = 30 * 86400


class ServeStack:
    """The services of :class:`ServeOptions`, started and stopped together."""

    def __init__(self, options: ServeOptions, *, quiet_stop: bool = False) -> None:
        self.options = options
        # Throw-away servers (the demo's) stop while their clients reset (Ctrl-C): a
        # failure then is expected and goes to the debug log, not to the console.
        self.quiet_stop = quiet_stop
        self.pnp: Any = None
        self.stun: Any = None
        self.mqtt: Any = None

    async def start(self) -> ServeStack:
        """Start every selected service.

        :raises ServeError: one could not start (the others are stopped again).
        """
        opts = self.options
        if not (opts.pnp or opts.stun or opts.mqtt):
            raise ServeError("nothing to serve: every service is switched off")
        try:
            if opts.pnp:
                await self._start_pnp()
            if opts.stun:
                await self._start_stun()
            if opts.mqtt:
                await self._start_mqtt()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start_pnp(self) -> None:
        from warpgate.pnp.server import PnpServer
        from warpgate.pnp.store import open_store

        opts = self.options
        try:
            store = open_store(opts.store)
        except ValueError as exc:
            raise ServeError(f"PNP store: {exc}") from None
        server = PnpServer(
            store,
            host=opts.host,
            port=opts.pnp_port,
            names_per_ip=opts.names_per_ip,
            rate=opts.rate,
            burst=opts.burst,
            max_ttl=opts.max_ttl,
        )
        try:
            # open the store first, so that its errors are not mistaken for bind errors
            await store.open()
        except UnavailableError as exc:
            raise ServeError(f"PNP server: {exc}") from None
        except Exception as exc:  # OSError, asyncpg's and sqlite3's own types
            why = bind_error_text(exc) if isinstance(exc, OSError) else exc
            raise ServeError(f"PNP store {_safe(opts.store)} cannot be opened: {why}") from None
        try:
            await server.start()  # the store is open: start() only binds
        except OSError as exc:
            await store.aclose()
            raise self._cannot_start("PNP server", opts.pnp_port, exc) from None
        except BaseException:
            await store.aclose()
            raise
        self.pnp = server

    async def _start_stun(self) -> None:
        from warpgate.stun.server import StunServer

        opts = self.options
        try:
            server = StunServer((opts.host, opts.stun_port), opts.stun_alternate)
        except ValueError as exc:
            raise ServeError(f"STUN server: {exc}") from None
        try:
            await server.start()
        except OSError as exc:
            raise self._cannot_start("STUN server", opts.stun_port, exc) from None
        self.stun = server

    async def _start_mqtt(self) -> None:
        from warpgate.serve.mqtt_broker import EmbeddedMqttBroker, quiet_amqtt

        opts = self.options
        broker = EmbeddedMqttBroker(opts.host, opts.mqtt_port)
        try:
            with quiet_amqtt():
                await broker.start()
        except UnavailableError as exc:
            raise ServeError(f"MQTT broker: {exc}") from None
        except Exception as exc:
            with contextlib.suppress(Exception):
                await broker.stop()
            raise self._cannot_start("MQTT broker", opts.mqtt_port, exc) from None
        self.mqtt = broker

    def _cannot_start(self, service: str, port: int, exc: BaseException) -> ServeError:
        """The one-line error for a service that cannot bind its address."""
        where = format_hostport(self.options.host, port)
        return ServeError(f"{service} cannot start on {where}: {bind_error_text(exc)}")

    async def stop(self) -> None:
        """Stop whatever runs (in reverse order).  Idempotent."""
        mqtt, stun, pnp = self.mqtt, self.stun, self.pnp
        self.mqtt = self.stun = self.pnp = None
        for what, closer in (
            ("MQTT broker", mqtt.stop if mqtt else None),
            ("STUN server", stun.close if stun else None),
            ("PNP server", pnp.aclose if pnp else None),
        ):
            if closer is None:
                continue
            try:
                await closer()
            except Exception:
                level = logging.DEBUG if self.quiet_stop else logging.ERROR
                log.log(level, "stopping the %s failed", what, exc_info=True)

    def client_conf(self) -> dict[str, list[str]]:
        """The conf keys a node needs to use the running services."""
        conf: dict[str, list[str]] = {}
        if self.pnp is not None:
            conf["pnp_servers"] = [format_hostport(self.pnp.host, self.pnp.port)]
        if self.stun is not None:
            conf["stun_servers"] = [format_hostport(*self.stun.primary)]
        if self.mqtt is not None:
            conf["mqtt_brokers"] = [self.mqtt.url]
        return conf

    def describe(self) -> list[str]:
        """One line per running service, for the console."""
        lines = []
        if self.pnp is not None:
            lines.append(
                f"PNP name server on {format_hostport(self.pnp.host, self.pnp.port)} (udp+tcp), "
                f"store {_safe(self.options.store)}"
            )
        if self.stun is not None:
            extra = (
                f", RFC 5780 other address {format_hostport(*self.stun.other_address)}"
                if self.stun.other_address is not None
                else ""
            )
            lines.append(f"STUN server on {format_hostport(*self.stun.primary)} (udp+tcp){extra}")
        if self.mqtt is not None:
            lines.append(
                f"MQTT broker on {self.mqtt.url} (signal messages are end-to-end encrypted)"
            )
        return lines

    @property
    def wildcard(self) -> bool:
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(self.options.host).is_unspecified
        return False


def _safe(store: str) -> str:
    """A store spec without its password."""
    from warpgate.pnp.pg_store import redact_url

    return redact_url(str(store))
