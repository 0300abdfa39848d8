"""Migrations of the ``global`` schema: module vNNN_name is version NNN. List each one below."""

from __future__ import annotations

from . import (
    v001_foundation,
    v002_territory_keys,
    v003_territory_roles,
    v004_territory_public_urls,
    v005_member_data_rights,
)

MODULES = (
    v001_foundation,
    v002_territory_keys,
    v003_territory_roles,
    v004_territory_public_urls,
    v005_member_data_rights,
)
