"""TURN relaying for warpgate: an asyncio client (RFC 8656 over UDP, RFC 6062 for TCP).

The wire format lives in :mod:`warpgate.sansio.turn` (sans-IO); this package does the I/O.
"""

from __future__ import annotations

from warpgate.sansio.turn import TurnError
from warpgate.turn.client import TurnClient, TurnClosed

__all__ = ["TurnClient", "TurnClosed", "TurnError"]
