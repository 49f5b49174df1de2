"""Fixtures for the security claims: real mosquitto brokers (from the MQTT tests), node
pairs on loopback, and a recording TCP forwarder that plays an on-path attacker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from tests.integration.conftest import pair  # noqa: F401  (fixture)
from tests.mqtt.conftest import mosquitto, mosquitto_factory, mqtt_pair  # noqa: F401


class RecordingForwarder:
    """A TCP forwarder on 127.0.0.1 that copies every byte both ways and keeps them:
    what an on-path router, a relay or a man in the middle gets to see."""

    def __init__(
        self, target: tuple[str, int], tamper: Callable[[bytearray], None] | None = None
    ) -> None:
        self.target = target
        self.tamper = tamper  # may change client -> server bytes in flight
        self.upstream = bytearray()  # client -> server
        self.downstream = bytearray()  # server -> client
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> RecordingForwarder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(*self.target)

        async def pump(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, log: bytearray, up: bool
        ) -> None:
            try:
                while data := await r.read(65536):
                    log += data
                    if up and self.tamper is not None:
                        changed = bytearray(data)
                        self.tamper(changed)
                        data = bytes(changed)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    w.close()

        tasks = [
            asyncio.create_task(pump(reader, up_w, self.upstream, True)),
            asyncio.create_task(pump(up_r, writer, self.downstream, False)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def forwarder_factory() -> AsyncIterator[object]:
    made: list[RecordingForwarder] = []

    async def make(
        target: tuple[str, int], tamper: Callable[[bytearray], None] | None = None
    ) -> RecordingForwarder:
        fwd = await RecordingForwarder(target, tamper).start()
        made.append(fwd)
        return fwd

    yield make
    for fwd in made:
        await fwd.close()
