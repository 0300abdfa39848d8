"""Argument parsers shared by command modules: each raises ValueError with a short reason."""

from __future__ import annotations

from datetime import date

from mautrix.types import UserID

from core.ids import MXID_PATTERN, SLUG_PATTERN


def user_id(value: str) -> UserID:
    if not MXID_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a Matrix user ID like @name:server")
    return UserID(value)


def slug(value: str) -> str:
    if not SLUG_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a name like first-aid (a-z, 0-9 and -)")
    return value


def slug_list(value: str) -> tuple[str, ...]:
    return tuple(slug(part.strip()) for part in value.split(",") if part.strip())


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date like 2027-01-31") from None


def positive_days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of days") from None
    if not days > 0 or days > 36500:
        raise ValueError("the number of days must be above 0 (fractions are hours: 0.5 = 12 h)")
    return days


def choice_number(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 99:
        raise ValueError(f"{value!r} is not the number of a choice (1, 2, 3, ...)")
    return int(value)
