"""Progress on long work: a redrawn bar on a terminal, plain lines (a tenth at a time) elsewhere."""

from __future__ import annotations

import io

from core.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress("Storing materials", 40, stream=out)
    for i in range(40):
        progress.advance(note=f"file {i}")
    lines = out.getvalue().splitlines()
    assert lines[-1] == "Storing materials: 40/40 file 39"
    assert 10 <= len(lines) <= 11  # a tenth at a time, and the last one
    assert "\r" not in out.getvalue()


def test_a_bar_on_a_terminal() -> None:
    out = Terminal()
    progress = Progress("Copying tables", 4, unit="tables", stream=out)
    for _ in range(4):
        progress.advance()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "[" + "#" * 30 + "] 4/4 tables" in text
