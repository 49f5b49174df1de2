"""A sliding anti-replay window over 64-bit datagram nonces (sans-IO).

Datagrams arrive reordered, duplicated and late, so a receiver decrypting with explicit
nonces (:meth:`warpgate.sansio.noise.CipherState.decrypt_with_nonce`) cannot insist on
the next nonce in sequence.  :class:`ReplayWindow` instead remembers the highest nonce
accepted and a bitmap of the ``size`` nonces at and below it (the idea of RFC 6479 and
WireGuard): each nonce is accepted at most once, and nonces too far behind the highest
are rejected because the window can no longer tell whether they were seen.

Use it *after* authentication::

    plaintext = cipher.decrypt_with_nonce(nonce, ciphertext)   # raises on forgery
    if not window.accept(nonce):
        drop()                                                  # replay or too old

so that forged packets can never move the window.  Nothing here does I/O.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_WINDOW", "ReplayWindow"]

DEFAULT_WINDOW: Final = 2048
_NONCE_LIMIT: Final = 2**64 - 1  # Noise reserves 2**64-1: never a valid message nonce


class ReplayWindow:
    """Sliding anti-replay window over 64-bit nonces (like RFC 6479 / WireGuard): accepts each
    nonce at most once, rejects nonces older than the window.

    The window covers the ``size`` nonces ``highest - size + 1 .. highest``; anything newer
    than ``highest`` is accepted and slides the window forward.  Negative nonces and
    nonces ``>= 2**64 - 1`` are never accepted.  Memory is ``size`` bits.
    """

    __slots__ = ("_bitmap", "_highest", "_mask", "_size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 64:
            raise ValueError(f"window size must be a positive multiple of 64, not {size!r}")
        self._size = size
        self._mask = (1 << size) - 1
        # Bit i set <=> nonce (highest - i) has been accepted.
        self._bitmap = 0
        self._highest = -1

    def __repr__(self) -> str:
        return f"<ReplayWindow size={self._size} highest={self._highest}>"

    @property
    def size(self) -> int:
        """How many nonces, ending at :attr:`highest`, the window remembers."""
        return self._size

    @property
    def highest(self) -> int:
        """The highest nonce accepted so far, or -1 before any."""
        return self._highest

    def check(self, nonce: int) -> bool:
        """Would ``nonce`` be accepted now?  Changes nothing."""
        if not isinstance(nonce, int) or isinstance(nonce, bool):
            return False
        if nonce < 0 or nonce >= _NONCE_LIMIT:
            return False
        if nonce > self._highest:
            return True
        offset = self._highest - nonce
        if offset >= self._size:
            return False  # too old: the window cannot tell whether it was seen
        return not (self._bitmap >> offset) & 1

    def accept(self, nonce: int) -> bool:
        """Accept and record ``nonce``; False (and no change) for a replay or too-old nonce."""
        if not self.check(nonce):
            return False
        if nonce > self._highest:
            shift = nonce - self._highest
            if shift >= self._size:
                self._bitmap = 1  # a jump past the whole window forgets everything before
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            self._highest = nonce
        else:
            self._bitmap |= 1 << (self._highest - nonce)
        return True
