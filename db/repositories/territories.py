"""The global territory registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_code


def dsn_without_password(dsn: str) -> str:
    """The DSN as stored in the registry: never with its password."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Territory:
    code: TerritoryCode
    name: str
    server_name: str
    homeserver_url: str
    database_dsn: str
    settings: dict[str, Any]
    public_key: str | None = None  # Ed25519, base64url: what signs this territory's bus messages
    public_url: str | None = None  # its appservice's public API: credentials, issuer profile

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Territory:
        return cls(
            code=territory_code(row["code"]),
            name=row["name"],
            server_name=row["server_name"],
            homeserver_url=row["homeserver_url"],
            database_dsn=row["database_dsn"],
            settings=json.loads(row["settings"]),
            public_key=row["public_key"],
            public_url=row["public_url"],
        )


_SELECT = """SELECT code, name, server_name, homeserver_url, database_dsn, settings::text,
                     public_key, public_url
              FROM global.territories"""


class TerritoryRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def upsert(self, territory: Territory) -> None:
        await self.db.execute(
            """
            INSERT INTO global.territories
                (code, name, server_name, homeserver_url, database_dsn, settings, public_key,
                 public_url)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
            ON CONFLICT (code) DO UPDATE SET
                name = EXCLUDED.name, server_name = EXCLUDED.server_name,
                homeserver_url = EXCLUDED.homeserver_url, database_dsn = EXCLUDED.database_dsn,
                settings = EXCLUDED.settings, public_key = EXCLUDED.public_key,
                public_url = EXCLUDED.public_url, updated_at = now()
            """,
            territory.code,
            territory.name,
            territory.server_name,
            territory.homeserver_url,
            dsn_without_password(territory.database_dsn),
            json.dumps(territory.settings),
            territory.public_key,
            territory.public_url,
        )

    async def get(self, code: TerritoryCode) -> Territory | None:
        row = await self.db.fetchrow(
            f"{_SELECT} WHERE code = $1",
            code,
        )
        return Territory.from_row(row) if row else None

    async def all(self) -> list[Territory]:
        rows = await self.db.fetch(f"{_SELECT} ORDER BY code")
        return [Territory.from_row(row) for row in rows]

    async def set_database_dsn(self, code: TerritoryCode, dsn: str) -> None:
        """Where the territory's schema is now (stored without its password)."""
        await self.db.execute(
            """UPDATE global.territories SET database_dsn = $2, updated_at = now()
               WHERE code = $1""",
            code,
            dsn_without_password(dsn),
        )

    async def set_settings(self, code: TerritoryCode, settings: dict[str, Any]) -> bool:
        """False when no row changed: unknown, or another territory's (row-level security)."""
        status = await self.db.execute(
            """UPDATE global.territories SET settings = $2::jsonb, updated_at = now()
               WHERE code = $1""",
            code,
            json.dumps(settings),
        )
        return status != "UPDATE 0"

    async def by_server_name(self, server_name: str) -> Territory | None:
        row = await self.db.fetchrow(
            f"{_SELECT} WHERE server_name = $1",
            server_name,
        )
        return Territory.from_row(row) if row else None

    async def codes_of_servers(self, server_names: set[str]) -> dict[str, str]:
        """server name -> territory code, for those of ``server_names`` that are territories'."""
        if not server_names:
            return {}
        rows = await self.db.fetch(
            "SELECT server_name, code FROM global.territories WHERE server_name = ANY($1::text[])",
            list(server_names),
        )
        return {row["server_name"]: row["code"] for row in rows}

    async def by_public_url(self, public_url: str) -> Territory | None:
        row = await self.db.fetchrow(
            f"{_SELECT} WHERE public_url = $1",
            public_url,
        )
        return Territory.from_row(row) if row else None
