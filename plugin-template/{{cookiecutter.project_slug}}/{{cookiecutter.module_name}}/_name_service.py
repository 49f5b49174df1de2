"""The ``{{ cookiecutter.provider_name }}`` name backend.

{{ cookiecutter.description }}.

A name backend registers a node's address under a nickname and resolves nicknames to
addresses.  This skeleton keeps one file per name in a directory every node can read
(conf ``{{ cookiecutter.conf_prefix }}_directory``; a shared mount makes it work across
machines):
the first key to register a name owns it.  Names end in ``.dir``.

The address carries the node's key and every link authenticates it, so a wrong answer
cannot make a peer talk to an impostor, only fail to connect.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from warpgate import NameServiceInfo, hookimpl
from warpgate.sansio.address import NodeAddress

NAME = "{{ cookiecutter.provider_name }}"
DESCRIPTION = "{{ cookiecutter.description }}"
CONF_PREFIX = "{{ cookiecutter.conf_prefix }}"
TLD = "dir"
_VALID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class NameTaken(Exception):
    """The name is registered to another key."""


class Names:
    name = NAME

    def __init__(self, node: Any) -> None:
        self.node = node
        configured = node.conf[f"{CONF_PREFIX}_directory"]
        default = Path(tempfile.gettempdir()) / f"warpgate-{NAME}-names"
        self.directory = Path(configured or default)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def aclose(self) -> None:
        pass

    def _bare(self, name: str) -> str:
        bare = name.strip().lower().removesuffix(f".{TLD}")
        if not _VALID.match(bare):
            raise LookupError(f"{name!r} is not a valid name")
        return bare

    async def register(self, name: str, node: Any) -> str:
        bare = self._bare(name)
        path = self.directory / bare
        if path.exists():
            owner = NodeAddress.decode(path.read_bytes()).public_key
            if owner != node.public_key:
                raise NameTaken(f"{bare}.{TLD} belongs to another key")
        # Write then rename: a reader never sees half an address.
        tmp = path.with_name(f".{bare}.{os.getpid()}.tmp")
        tmp.write_bytes(node.address())
        os.replace(tmp, path)
        return f"{bare}.{TLD}"

    async def resolve(self, name: str) -> bytes:
        path = self.directory / self._bare(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LookupError(f"nobody registered {name!r}") from None


@hookimpl
def warpgate_register_name_services() -> list[NameServiceInfo]:
    return [NameServiceInfo(name=NAME, factory=Names, description=DESCRIPTION)]


@hookimpl
def warpgate_conf_defaults() -> Mapping[str, Any]:
    # None: a directory in the system's temp dir.
    return {"{{ cookiecutter.conf_prefix }}_directory": None}
