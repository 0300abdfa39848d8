"""docs/commands.md carries the command reference generated from the command definitions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from commands.reference import END, START, reference, specs

DOC = Path(__file__).resolve().parents[2] / "docs" / "commands.md"


def test_the_reference_in_the_docs_is_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "appservice", "docs", "commands", "--check", str(DOC)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_every_command_has_a_row_with_its_usage_and_who_may_run_it() -> None:
    text = reference()
    assert text.startswith(START) and text.endswith(END)
    for spec in specs():
        assert f"| `{spec.usage('!').replace('|', chr(92) + '|')}` | {spec.help} |" in text
    assert "| `!badge award @user <badge> [--expires YYYY-MM-DD]` |" in text
    assert "badge issuer" in text  # who may award
