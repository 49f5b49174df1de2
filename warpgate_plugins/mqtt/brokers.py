"""Broker URLs and rendezvous (HRW) broker selection.  No I/O.

Both ends of a conversation must pick the same brokers for a node without talking to
each other first.  Rendezvous hashing does that: every (node key, broker) pair gets a
score from a hash, and a node's brokers are the ``k`` with the highest scores.  Any two
nodes configured with the same broker list compute the same ``k`` brokers for a given
key; adding or removing one broker only moves the keys that ranked it in their top
``k``.  Credentials are not part of the identity of a broker (they are local secrets),
so scores use the canonical ``scheme://host:port`` only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from warpgate.errors import ConfigError
from warpgate.net.hostport import format_hostport

__all__ = ["BrokerUrl", "hrw_rank", "hrw_select", "parse_broker_url"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_HRW_DOMAIN = b"warpgate mqtt hrw v1\x00"


@dataclass(frozen=True)
class BrokerUrl:
    """One MQTT broker: ``mqtt://[user:pass@]host[:port]`` or ``mqtts://`` (TLS)."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, compare=False)
    password: str | None = field(default=None, compare=False, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def canonical(self) -> str:
        """``scheme://host:port`` without credentials: what hints and hashing use."""
        return f"{self.scheme}://{format_hostport(self.host, self.port)}"

    def __str__(self) -> str:
        return self.canonical


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL; raise :class:`ConfigError` when it is not one."""
    if not isinstance(url, str):
        raise ConfigError(f"MQTT broker URL must be a string, got {url!r}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad MQTT broker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"MQTT broker URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ConfigError(f"MQTT broker URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"MQTT broker URL {url!r} must not have a path or query")
    return BrokerUrl(
        scheme=scheme,
        host=parts.hostname.lower(),
        port=port or DEFAULT_PORTS[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _score(key: bytes, broker: BrokerUrl) -> int:
    digest = hashlib.sha256(_HRW_DOMAIN + key + broker.canonical.encode()).digest()
    return int.from_bytes(digest, "big")


def hrw_rank(key: bytes, brokers: Iterable[BrokerUrl]) -> list[BrokerUrl]:
    """All ``brokers`` (deduplicated) ordered by rendezvous score for ``key``, best first."""
    unique = {b.canonical: b for b in brokers}
    return sorted(unique.values(), key=lambda b: (_score(key, b), b.canonical), reverse=True)


def hrw_select(key: bytes, brokers: Sequence[BrokerUrl], count: int) -> list[BrokerUrl]:
    """The ``count`` brokers a node with public key ``key`` listens on."""
    return hrw_rank(key, brokers)[: max(0, count)]
