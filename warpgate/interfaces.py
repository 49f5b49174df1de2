"""The interfaces providers implement, one per role.

A provider is the object a registration record's ``factory(node)`` returns.  The kernel
calls ``start()`` (if present) when the node starts the stack and ``aclose()`` (if
present) when the node closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from warpgate.link.link import Link
    from warpgate.sansio.address import NodeAddress

Addr = tuple[str, int]
Transport = Literal["tcp", "udp"]


@dataclass(frozen=True)
class Candidate:
    """One way a traversal method could reach a peer, ranked by ``cost`` (lower first).

    ``remote`` is the address to dial (``None`` for methods that go through signalling
    first); ``local_ip`` the address to dial from (``None``: let the OS choose).
    """

    method: str
    transport: Transport
    remote: Addr | None
    local_ip: str | None = None
    cost: float = 100.0
    note: str = ""
    family: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def describe(self) -> str:
        where = f"{self.remote[0]}:{self.remote[1]}" if self.remote else "via signalling"
        src = f" from {self.local_ip}" if self.local_ip else ""
        return f"{self.method}/{self.transport} {where}{src}" + (
            f" ({self.note})" if self.note else ""
        )


@runtime_checkable
class TraversalMethod(Protocol):
    """A way to reach a peer."""

    name: str

    def candidates(self, peer: NodeAddress, *, transport: Transport) -> list[Candidate]:
        """Every attempt this method could make to reach ``peer`` (no I/O)."""
        ...

    async def attempt(self, peer: NodeAddress, candidate: Candidate, *, intent: bytes) -> Link:
        """Make one attempt; return an authenticated link or raise.  The caller bounds
        it with a timeout and cancels it when another attempt wins."""
        ...


SignalHandler = Callable[[bytes, bytes], Awaitable[None] | None]


@runtime_checkable
class SignalTransport(Protocol):
    """Carries small messages to a peer, addressed by its identity key, before any link
    exists."""

    name: str

    async def send(self, peer_key: bytes, payload: bytes, *, hints: Sequence[str] = ()) -> None:
        """Deliver ``payload`` to the node holding ``peer_key`` (or raise)."""
        ...

    def add_handler(self, handler: SignalHandler) -> None:
        """Call ``handler(sender_key, payload)`` for every message addressed to us."""
        ...


@runtime_checkable
class NameService(Protocol):
    """Registers and resolves nicknames."""

    name: str

    async def register(self, name: str, node: object) -> str:
        """Register ``name`` for ``node``; return the full name (``"alice.p2p"``)."""
        ...

    async def resolve(self, name: str) -> bytes:
        """The address bytes registered for ``name``; raise ``LookupError`` if none."""
        ...
