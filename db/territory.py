"""Territory codes: validated before they ever reach SQL."""

from __future__ import annotations

import re
from typing import NewType

TerritoryCode = NewType("TerritoryCode", str)

TERRITORY_CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


class InvalidTerritoryCode(ValueError):
    pass


def territory_code(value: str) -> TerritoryCode:
    """Return ``value`` as a TerritoryCode or raise InvalidTerritoryCode."""
    if not isinstance(value, str) or not TERRITORY_CODE_PATTERN.fullmatch(value):
        raise InvalidTerritoryCode(
            f"{value!r} is not a territory code (lower case letter, then 1-30 of a-z, 0-9, _)"
        )
    return TerritoryCode(value)


def territory_schema(code: TerritoryCode | str) -> str:
    """The PostgreSQL schema of a territory; safe to put into SQL text."""
    return f"territory_{territory_code(code)}"
