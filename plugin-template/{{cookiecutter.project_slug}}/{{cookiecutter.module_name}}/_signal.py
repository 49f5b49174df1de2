"""The ``{{ cookiecutter.provider_name }}`` signal transport.

{{ cookiecutter.description }}.

A signal transport carries small messages to a peer, addressed by its identity key,
before any link exists (reverse connect and hole punching use it).  This skeleton drops
each message as a file into the peer's inbox under a spool directory (conf
``{{ cookiecutter.conf_prefix }}_spool``) and polls its own inbox: nodes on one machine,
or on a shared mount.

Note what a real transport must add: this one trusts the sender key written in the
file.  warpgate's MQTT transport signs and encrypts every message (see its docs);
do the same before carrying messages over anything others can write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warpgate import SignalTransportInfo, hookimpl
from warpgate.interfaces import SignalHandler

NAME = "{{ cookiecutter.provider_name }}"
DESCRIPTION = "{{ cookiecutter.description }}"
CONF_PREFIX = "{{ cookiecutter.conf_prefix }}"
VERSION = 1
_HEAD = struct.Struct(">BH")  # version, sender key length
log = logging.getLogger(__name__)


class Transport:
    name = NAME

    def __init__(self, node: Any) -> None:
        self.node = node
        configured = node.conf[f"{CONF_PREFIX}_spool"]
        default = Path(tempfile.gettempdir()) / f"warpgate-{NAME}-spool"
        self.spool = Path(configured or default)
        self.poll = float(node.conf[f"{CONF_PREFIX}_poll_interval"])
        self._handlers: list[SignalHandler] = []
        self._task: asyncio.Task[None] | None = None
        self._inbox: Path | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def add_handler(self, handler: SignalHandler) -> None:
        self._handlers.append(handler)

    async def start(self) -> None:
        self._inbox = self.spool / self.node.public_key.hex()
        self._inbox.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._watch(), name=f"{NAME} inbox")

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inbox is not None:
            with contextlib.suppress(OSError):
                for leftover in self._inbox.iterdir():
                    leftover.unlink()
                self._inbox.rmdir()

    async def send(self, peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        inbox = self.spool / peer_key.hex()
        if not inbox.is_dir():
            raise ConnectionError(f"{NAME}: the peer has no inbox in {self.spool}")
        key = self.node.public_key
        data = _HEAD.pack(VERSION, len(key)) + key + payload
        name = secrets.token_hex(8)
        tmp = inbox / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, inbox / f"{name}.msg")  # atomic: the reader never sees half

    async def _watch(self) -> None:
        assert self._inbox is not None
        while True:
            for path in sorted(self._inbox.glob("*.msg")):
                try:
                    data = path.read_bytes()
                    path.unlink()
                except OSError:
                    continue
                self._deliver(data)
            await asyncio.sleep(self.poll)

    def _deliver(self, data: bytes) -> None:
        if len(data) < _HEAD.size:
            log.info("%s: dropped a truncated message", NAME)
            return
        version, key_len = _HEAD.unpack_from(data)
        if version != VERSION or len(data) < _HEAD.size + key_len:
            log.info("%s: dropped a message of version %d", NAME, version)
            return
        sender = data[_HEAD.size : _HEAD.size + key_len]
        payload = data[_HEAD.size + key_len :]
        for handler in self._handlers:
            result = handler(sender, payload)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)


@hookimpl
def warpgate_register_signal_transports() -> list[SignalTransportInfo]:
    return [SignalTransportInfo(name=NAME, factory=Transport, description=DESCRIPTION)]


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    return {
        # The spool directory; None: one in the system's temp dir.
        "{{ cookiecutter.conf_prefix }}_spool": None,
        # Seconds between scans of the inbox.
        "{{ cookiecutter.conf_prefix }}_poll_interval": 0.02,
    }
