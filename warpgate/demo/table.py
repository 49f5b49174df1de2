"""A table that redraws in place on a terminal and prints finished rows elsewhere.

Plain ANSI (erase line, cursor up): nothing to install, and a pipe or a log file gets
each row once, when it is final, with no escape codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO


def _can_redraw(out: TextIO) -> bool:
    """A terminal that understands cursor movement: not a pipe, not TERM=dumb, and on
    Windows only a terminal known to speak VT sequences (Windows Terminal)."""
    if not out.isatty() or os.environ.get("TERM") == "dumb":
        return False
    return sys.platform != "win32" or "WT_SESSION" in os.environ


class LiveTable:
    def __init__(
        self,
        columns: Sequence[str],
        out: TextIO,
        *,
        live: bool | None = None,
        widths: Sequence[int] = (),
    ) -> None:
        self.columns = list(columns)
        self.out = out
        self.live = _can_redraw(out) if live is None else live
        self.rows: list[list[str]] = []
        self.final: list[bool] = []
        self._drawn = 0  # lines drawn by the last redraw (live mode)
        self._printed = 0  # rows printed so far (plain mode)
        self._header_done = False
        # Minimum widths up front: plain mode prints a row before later rows are known.
        given = list(widths) + [0] * len(self.columns)
        self._widths = [max(len(c), w) for c, w in zip(self.columns, given, strict=False)]

    def add(self, *cells: str, final: bool = False) -> int:
        self.rows.append([str(c) for c in cells])
        self.final.append(final)
        self._refresh()
        return len(self.rows) - 1

    def update(self, index: int, *cells: str, final: bool = True) -> None:
        self.rows[index] = [str(c) for c in cells]
        self.final[index] = final
        self._refresh()

    def _line(self, cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, self._widths, strict=False)).rstrip()

    def _refresh(self) -> None:
        for row in self.rows:
            for i, cell in enumerate(row[: len(self._widths)]):
                # Widths only grow, and only up to a cap, so redraws do not jump about.
                self._widths[i] = min(max(self._widths[i], len(cell)), 60)
        if self.live:
            self._redraw()
        else:
            self._print_final_rows()

    def _redraw(self) -> None:
        lines = [self._line(self.columns)] + [self._line(r) for r in self.rows]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # to the start of the first drawn line
        for line in lines:
            self.out.write("\x1b[2K" + line + "\n")
        self._drawn = len(lines)
        self.out.flush()

    def _print_final_rows(self) -> None:
        # Rows finish in order (the demo runs one at a time), so print the done prefix.
        if not self._header_done and self.rows:
            self.out.write(self._line(self.columns) + "\n")
            self._header_done = True
        while self._printed < len(self.rows) and self.final[self._printed]:
            self.out.write(self._line(self.rows[self._printed]) + "\n")
            self._printed += 1
        self.out.flush()
