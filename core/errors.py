"""Expected refusals of the domain, by kind. ``str(error)`` is the sentence a person reads.

The domain says *what* went wrong; each edge says it in its own terms, in one place: the command
router replies with the sentence, the HTTP server maps the kind to a status and an errcode
(``appservice/server.py``), the CLI prints the sentence and exits 2. No HTTP codes and no chat
syntax here.
"""

from __future__ import annotations


class DomainError(Exception):
    """An expected refusal. ``reason`` optionally names a finer cause (``"not_json"``,
    ``"unknown_token"``, …) for edges that distinguish them; the sentence stays the same."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class Refused(DomainError):
    """The request is understood but not acceptable: malformed input, a rule that says no."""


class NotFound(DomainError):
    """The thing asked for does not exist (or is not visible to the asker)."""


class Forbidden(DomainError):
    """The asker may not do this: a permission, a badge or an ownership is missing."""


class Unauthenticated(DomainError):
    """The asker did not prove who they are (no token, or a token nobody vouches for)."""


class Conflict(DomainError):
    """The request contradicts the current state (already enrolled, already held, taken)."""


class Locked(DomainError):
    """The thing exists but is closed to changes (a locked topic)."""


class TooLarge(DomainError):
    """The input is larger than allowed."""


class RateLimited(DomainError):
    """Too many of these, too fast; ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency needed for the answer is not reachable now; trying later may succeed."""
