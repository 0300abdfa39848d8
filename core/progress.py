"""Progress on long work (course import with large materials, the first stack set-up, a territory
migration): a bar that redraws itself on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, what: str, total: int, *, unit: str = "", stream: TextIO | None = None):
        self.what = what
        self.total = max(total, 1)
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty()
        self._last_line = -1

    def advance(self, amount: int = 1, note: str = "") -> None:
        self.done = min(self.done + amount, self.total)
        self._show(note)

    def _show(self, note: str) -> None:
        unit = f" {self.unit}" if self.unit else ""
        counts = f"{self.done}/{self.total}{unit}"
        if self.bar:
            filled = WIDTH * self.done // self.total
            line = f"\r{self.what} [{'#' * filled}{'.' * (WIDTH - filled)}] {counts} {note}"
            self.stream.write(line[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            # A line per tenth at most, and the last one.
            tenth = 10 * self.done // self.total
            if tenth == self._last_line and self.done != self.total:
                return
            self._last_line = tenth
            self.stream.write(f"{self.what}: {counts}{' ' + note if note else ''}\n")
        self.stream.flush()
