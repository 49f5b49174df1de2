"""The infrastructure a pair of nodes needs, embedded in this process on one address.

A PNP name server (SQLite in ``workdir``), a STUN server, when ``amqtt`` is installed
(``warpgate[server]``) an MQTT broker for signalling, and when coturn is installed a
private TURN relay on loopback.  :meth:`conf` is the
conf that points a node at them and at nothing else, so nothing leaves the
machine: no public STUN, MQTT, TURN or NTP server, no UPnP.

Used by ``warpgate demo``, by ``warpgate listen --embedded-infra`` and by the examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from warpgate.net.hostport import format_hostport
from warpgate.serve.stack import ServeOptions, ServeStack

log = logging.getLogger(__name__)


class EmbeddedInfra:
    """PNP + STUN (+ MQTT, + TURN) on ``host`` with free ports; an async context manager.

    PNP, STUN and MQTT are the :class:`ServeStack` of ``warpgate serve`` (free ports, the
    store in ``workdir``); this class adds the optional loopback coturn and the conf.

    :raises ServeError: from :meth:`start`, when a server cannot start.
    """

    def __init__(
        self, workdir: Path, host: str = "127.0.0.1", *, mqtt: bool = True, turn: bool = True
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        # Signalling over a real broker when the server extra is there; otherwise the
        # in-process transport, which reaches only nodes of this process.
        self.want_mqtt = mqtt and importlib.util.find_spec("amqtt") is not None
        options = ServeOptions(
            host=host,
            mqtt=self.want_mqtt,
            pnp_port=0,
            stun_port=0,
            mqtt_port=0,
            store=str(self.workdir / "names.db"),
        )
        self.stack = ServeStack(options, quiet_stop=True)
        # coturn only binds loopback here; it is a subprocess started from a thread.
        self.want_turn = turn and host == "127.0.0.1"
        self.turn: Any = None
        self._turn_stack = contextlib.ExitStack()
        self._turn_start: asyncio.Future[Any] | None = None

    @property
    def pnp(self) -> Any:
        """The running :class:`~warpgate.pnp.server.PnpServer`, or ``None``."""
        return self.stack.pnp

    @property
    def stun(self) -> Any:
        """The running :class:`~warpgate.stun.server.StunServer`, or ``None``."""
        return self.stack.stun

    @property
    def broker(self) -> Any:
        """The running :class:`~warpgate.serve.mqtt_broker.EmbeddedMqttBroker`, or ``None``."""
        return self.stack.mqtt

    async def __aenter__(self) -> EmbeddedInfra:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> EmbeddedInfra:
        """Start every server; on a failure, stop the ones already started and raise."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            await self.stack.start()
            if self.want_turn:
                await self._start_turn()
        except BaseException:
            await self.close()
            raise
        return self

    async def _start_turn(self) -> None:
        from warpgate.turn.coturn import CoturnUnavailable, loopback_coturn

        def start() -> Any:
            return self._turn_stack.enter_context(loopback_coturn())

        # Kept so close() can wait for a start that Ctrl-C interrupted: the thread
        # goes on, and the coturn it starts must still be stopped.
        self._turn_start = asyncio.ensure_future(asyncio.to_thread(start))
        try:
            self.turn = await asyncio.shield(self._turn_start)
        except (CoturnUnavailable, OSError, subprocess.SubprocessError) as exc:
            # Optional: without a relay the turn method is shown as skipped.
            log.info("no TURN relay in the embedded infrastructure: %s", exc)

    async def _stop_turn(self) -> None:
        if self._turn_start is not None and not self._turn_start.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._turn_start), 15)
        self.turn = None
        await asyncio.to_thread(self._turn_stack.close)

    async def close(self) -> None:
        """Stop every server that is running.  Idempotent."""
        await self._stop_turn()
        await self.stack.stop()

    @property
    def signal(self) -> str:
        """The signal transport nodes use: ``"mqtt"`` or ``"memory"`` (one process)."""
        return "mqtt" if self.broker is not None else "memory"

    def describe(self) -> list[str]:
        """One line per running server."""
        lines = []
        if self.pnp is not None:
            pnp = format_hostport(self.host, self.pnp.port)
            lines.append(f"PNP name server  {pnp} (udp+tcp, sqlite)")
        if self.stun is not None:
            lines.append(f"STUN server      {format_hostport(*self.stun.primary)} (udp+tcp)")
        if self.turn is not None:
            turn = format_hostport(self.turn.host, self.turn.port)
            lines.append(f"TURN relay       {turn} (coturn)")
        if self.broker is not None:
            lines.append(f"MQTT broker      {self.broker.url}")
        else:
            lines.append(
                "MQTT broker      - (pip install 'warpgate[server]'; in-process signalling)"
            )
        return lines

    def conf(self) -> dict[str, Any]:
        """Conf overrides pointing a node at these servers and no others."""
        if self.pnp is None or self.stun is None:
            raise RuntimeError("start the infrastructure first")
        conf: dict[str, Any] = {
            "mqtt_brokers": [],  # none without a broker: no public one either
            **self.stack.client_conf(),  # pnp_servers, stun_servers (, mqtt_brokers)
            "enable_stun_clients": True,
            "enable_nickname": True,
            "enable_upnp": False,
            "init_clock_skew": False,
            "sig_pipe_no": 1,
            "plugins": {"signal": [self.signal]},
        }
        if self.turn is not None:
            conf["turn_servers"] = [format_hostport(self.turn.host, self.turn.port)]
            conf["turn_username"] = self.turn.username
            conf["turn_password"] = self.turn.password
        return conf

    def write_conf(self, path: Path) -> None:
        """Write :meth:`conf` as JSON (what ``--conf FILE`` reads)."""
        path.write_text(json.dumps(self.conf(), indent=2) + "\n")
