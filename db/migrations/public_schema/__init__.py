"""Migrations of the ``public`` schema: module vNNN_name is version NNN. List each one below."""

from __future__ import annotations

from . import v001_badge_definitions, v002_definition_owners

MODULES = (v001_badge_definitions, v002_definition_owners)
