"""Expected failures of a command, each carrying the sentence the user sees."""

from __future__ import annotations


class CommandError(Exception):
    """An expected failure; ``str(error)`` is shown to the user as it is (HTML-escaped)."""


class UsageError(CommandError):
    """Arguments missing or malformed: the router answers with the usage line."""


class PermissionDenied(CommandError):
    """The sender lacks a permission or badge; the message names what is missing."""
