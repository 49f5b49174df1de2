"""STUN for warpgate: an asyncio Binding client over UDP and TCP.

The wire format lives in :mod:`warpgate.sansio.stun` (sans-IO); this package does the I/O.
"""

from __future__ import annotations

from warpgate.sansio.stun import StunError
from warpgate.stun.client import (
    DEFAULT_TIMEOUT,
    BindingResult,
    BindingTransaction,
    StunUnavailable,
    race_bindings,
    stun_binding,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "BindingResult",
    "BindingTransaction",
    "StunError",
    "StunUnavailable",
    "race_bindings",
    "stun_binding",
]
