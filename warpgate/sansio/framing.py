"""Length-prefixed message frames over a byte stream (sans-IO).

A frame is a 4-byte big-endian unsigned length followed by that many payload bytes.
Zero-length frames are allowed.  :func:`encode_frame` builds one; :class:`FrameDecoder`
takes stream bytes in whatever chunks they arrive and hands back complete payloads.

Both sides bound the frame size (``max_size``, default 16 MiB) so a peer cannot make us
buffer arbitrary amounts: the decoder rejects a frame as soon as its length prefix
declares more than ``max_size``, before any of its payload arrives.  Nothing here does I/O.
"""

from __future__ import annotations

import struct
from typing import Final

from warpgate.errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FRAME_HEADER_SIZE",
    "MAX_FRAME_LIMIT",
    "FrameDecoder",
    "encode_frame",
]

DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024
FRAME_HEADER_SIZE: Final = 4
MAX_FRAME_LIMIT: Final = 0xFFFF_FFFF
"""The largest length a 4-byte prefix can declare; ``max_size`` cannot exceed it."""

_LENGTH = struct.Struct(">I")
# Drop consumed bytes from the front of the buffer once this many have accumulated
# (and they are at least half the buffer), so compaction costs O(1) amortised per byte.
_COMPACT_AT: Final = 64 * 1024

BytesLike = bytes | bytearray | memoryview


def _check_max_size(max_size: int) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f"max_size must be an int, got {type(max_size).__name__}")
    if not 0 <= max_size <= MAX_FRAME_LIMIT:
        raise ValueError(f"max_size must be in 0..{MAX_FRAME_LIMIT}, got {max_size}")
    return max_size


def encode_frame(payload: BytesLike, *, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return ``payload`` with its 4-byte big-endian length prefix.

    Raises :class:`FrameError` if the payload is longer than ``max_size``.
    """
    _check_max_size(max_size)
    size = memoryview(payload).nbytes
    if size > max_size:
        raise FrameError(f"frame payload is {size} bytes, more than max_size ({max_size})")
    return _LENGTH.pack(size) + bytes(payload)


class FrameDecoder:
    """Incremental decoder: feed stream bytes, get complete frame payloads back.

    Partial frames are kept until the rest arrives.  Once a frame declares a length over
    ``max_size`` the stream cannot be resynchronised, so the decoder fails for good:
    that ``feed`` and every later one raise :class:`FrameError`.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.max_size: Final = _check_max_size(max_size)
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buf
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (header and/or payload)."""
        return len(self._buf) - self._pos

    @property
    def failed(self) -> bool:
        """Whether the decoder has seen an oversize frame and rejects all further input."""
        return self._error is not None

    def feed(self, data: BytesLike) -> list[bytes]:
        """Add stream bytes; return every frame they complete, in order (maybe none)."""
        if self._error is not None:
            raise FrameError(f"frame decoder has failed earlier: {self._error}")
        if self._pos == len(self._buf):
            # Nothing pending: parse straight from the caller's bytes, buffer the tail only.
            self._buf.clear()
            self._pos = 0
            with memoryview(data) as view, view.cast("B") as flat:
                frames, used = self._parse(flat, 0)
                self._buf += flat[used:]
            return frames
        self._buf += data
        with memoryview(self._buf) as view:
            frames, self._pos = self._parse(view, self._pos)
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos >= _COMPACT_AT and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return frames

    def _parse(self, view: memoryview, pos: int) -> tuple[list[bytes], int]:
        """Extract complete frames from ``view`` starting at ``pos``; return them and the
        offset of the first unconsumed byte."""
        frames: list[bytes] = []
        end = len(view)
        unpack = _LENGTH.unpack_from
        max_size = self.max_size
        while end - pos >= FRAME_HEADER_SIZE:
            (size,) = unpack(view, pos)
            if size > max_size:
                self._error = f"a frame declares {size} bytes, more than max_size ({max_size})"
                raise FrameError(self._error)
            stop = pos + FRAME_HEADER_SIZE + size
            if stop > end:
                break
            frames.append(view[pos + FRAME_HEADER_SIZE : stop].tobytes())
            pos = stop
        return frames, pos
