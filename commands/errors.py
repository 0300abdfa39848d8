"""The two refusals that belong to chat commands themselves; everything else the handlers raise is
a ``core.errors.DomainError`` of the domain, replied with its sentence by the router."""

from __future__ import annotations

from core.errors import Forbidden, Refused


class UsageError(Refused):
    """Arguments missing or malformed: the router answers with the usage line."""


class PermissionDenied(Forbidden):
    """The sender lacks a permission or badge; the message names what is missing."""
