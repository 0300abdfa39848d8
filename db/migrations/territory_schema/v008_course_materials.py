"""Territory v8: course materials on IPFS (encrypted for badge-gated courses; the key stays here)."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.course_materials (
            course_id       bigint NOT NULL REFERENCES {schema}.courses (id),
            lesson          integer NOT NULL,
            position        integer NOT NULL,
            name            text NOT NULL,
            cid             text NOT NULL,
            mime            text NOT NULL,
            size            bigint NOT NULL,
            key             bytea,
            PRIMARY KEY (course_id, lesson, position)
        );
        """
    )
