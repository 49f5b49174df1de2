"""Provider records that registration hooks hand to the kernel.

A registration hook returns an iterable of these frozen records.  Each carries a
unique ``name`` (the one users write in the ``plugins`` section of conf) and a
``factory`` the kernel calls with the node, once, when the provider is selected.
The object the factory returns does the async work; its interface for each role is
in :mod:`warpgate.interfaces`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from warpgate.errors import PluginValidationError

if TYPE_CHECKING:
    from warpgate.node.node import Node

Role = Literal["traversal", "name_service", "signal"]
ROLES: tuple[Role, ...] = ("traversal", "name_service", "signal")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


@dataclass(frozen=True)
class ProviderInfo:
    """What every provider record has in common."""

    name: str
    factory: Callable[[Node], Any]
    description: str = ""
    # Filled in by the kernel: which plugin registered the record.
    plugin: str = field(default="", compare=False)
    role: Role = field(default="traversal", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise PluginValidationError(
                f"provider name {self.name!r} is invalid: use 1-40 characters of a-z, 0-9, "
                "'-' or '_', starting with a letter"
            )
        if not callable(self.factory):
            raise PluginValidationError(f"provider {self.name!r}: factory must be callable")


@dataclass(frozen=True)
class TraversalMethodInfo(ProviderInfo):
    """A way to reach a peer: direct dial, reverse connect, hole punching, relay...

    ``cost`` orders methods when conf does not: cheaper and likelier first.
    ``transports`` says which link kinds the method can produce.  ``kind`` is
    ``"punch"`` for hole-punching methods (left out when ``enable_punching`` is off)
    and ``"relay"`` for relays.
    """

    cost: int = 100
    transports: tuple[str, ...] = ("tcp",)
    kind: Literal["direct", "punch", "relay"] = "direct"
    role: Role = field(default="traversal", init=False)


@dataclass(frozen=True)
class NameServiceInfo(ProviderInfo):
    """A name backend: registers and resolves nicknames (``alice.p2p``)."""

    role: Role = field(default="name_service", init=False)


@dataclass(frozen=True)
class SignalTransportInfo(ProviderInfo):
    """A way to send a small message to a peer before any link exists."""

    role: Role = field(default="signal", init=False)


INFO_TYPES: dict[Role, type[ProviderInfo]] = {
    "traversal": TraversalMethodInfo,
    "name_service": NameServiceInfo,
    "signal": SignalTransportInfo,
}
