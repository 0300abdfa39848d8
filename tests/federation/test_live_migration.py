"""`unityplan territory migrate ca --to <second server>` while a ca member keeps talking in a ca
topic room: every message ends up a comment exactly once on the new server, the appservice moves
there, the registry names it, and territory.migrated is published. (Last in this package: ca
stays on the second server afterwards.)"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import asyncpg
import nats
import psutil
from nats.js.errors import NotFoundError

from appservice.stack.local import LocalStack, TerritoryNode
from tests.federation.helpers import api, eventually
from tests.matrix_user import MatrixUser


async def _migrate(fed: LocalStack, ca: TerritoryNode, *extra: str) -> tuple[int, str]:
    assert fed.postgres2 is not None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        "-c",
        str(ca.config_path),
        "territory",
        "migrate",
        "ca",
        "--to",
        fed.postgres2.dsn(),
        *extra,
        env={**os.environ, "UNITYPLAN_DATABASE_ADMIN_URL": fed.postgres.dsn()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_ca_moves_to_another_server_while_its_room_talks(
    fed: LocalStack, ca: TerritoryNode, ca_user: MatrixUser
) -> None:
    assert fed.postgres2 is not None and ca.appservice is not None
    status, topic = await api(
        ca,
        "POST",
        "/api/forums/topics",
        ca_user.client.access_token,
        {"title": "Moving day", "body": "Packing up"},
    )
    assert status == 201, topic
    room = topic["room_id"]
    await ca_user.client.join(room)
    sent: list[str] = []
    talking = asyncio.Event()
    talking.set()

    async def talk() -> None:
        n = 0
        while talking.is_set():
            response = await ca_user.client.room_send(
                room, "m.room.message", {"msgtype": "m.text", "body": f"box {n}"}
            )
            event_id = getattr(response, "event_id", None)
            assert event_id, response
            sent.append(event_id)
            n += 1
            await asyncio.sleep(0.05)

    talker = asyncio.create_task(talk())
    old_pid = ca.appservice.pid
    try:
        await asyncio.sleep(1)  # messages flow before the move
        # A target that cannot copy in time: everything is undone, ca stays where it is.
        rolled_back, out = await _migrate(fed, ca, "--timeout", "0")
        assert rolled_back == 2 and "did not copy" in out and "Undoing" in out, out
        for dsn in (fed.postgres.dsn(), fed.postgres2.dsn()):
            conn = await asyncpg.connect(dsn)
            try:
                assert not await conn.fetchval("SELECT count(*) FROM pg_publication")
                assert not await conn.fetchval("SELECT count(*) FROM pg_subscription")
                on_source = dsn == fed.postgres.dsn()
                present = await conn.fetchval("SELECT to_regnamespace('territory_ca') IS NOT NULL")
                assert present is on_source
            finally:
                await conn.close()
        assert ca.appservice.pid == old_pid

        done, out = await _migrate(fed, ca)
        assert done == 0, out
        assert "Copying tables" in out and "caught up" in out and "Moved ca" in out, out

        async def moved() -> bool:
            assert ca.appservice is not None
            return ca.appservice.pid not in (None, old_pid)

        await eventually(moved, "ca's appservice restarting on the new server", timeout=60)
        await asyncio.sleep(2)  # and messages flow after it
    finally:
        talking.clear()
        await talker
    assert len(sent) > 20

    target = await asyncpg.connect(fed.postgres2.dsn())
    source = await asyncpg.connect(fed.postgres.dsn())
    try:

        async def all_comments() -> bool:
            rows = await target.fetch(
                "SELECT matrix_event_id FROM territory_ca.forum_comments WHERE topic_id = $1 "
                "AND source = 'matrix'",
                topic["id"],
            )
            return {r["matrix_event_id"] for r in rows} == set(sent)

        try:
            await eventually(all_comments, "every message a comment on the new server", timeout=90)
        except AssertionError:
            raise AssertionError(await _diagnosis(target, source, ca, topic["id"], sent)) from None
        counted = await target.fetchval(
            "SELECT count(*) FROM territory_ca.forum_comments WHERE matrix_event_id = ANY($1)",
            sent,
        )
        assert counted == len(sent)  # none doubled
        # The appservice works on the new server; the registry names it; the old schema is gone.
        on_target = await target.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'territory_ca'"
        )
        assert on_target > 0
        dsn = await source.fetchval("SELECT database_dsn FROM global.territories WHERE code = 'ca'")
        assert f":{fed.postgres2.port}/" in dsn and "@" in dsn
        assert await source.fetchval("SELECT to_regnamespace('territory_ca')") is None
        assert not await source.fetchval("SELECT count(*) FROM pg_publication")
        assert not await target.fetchval("SELECT count(*) FROM pg_subscription")
    finally:
        await target.close()
        await source.close()

    # territory.migrated went out on the bus (from the outbox of ca's new home).
    client = await nats.connect(fed.nats.url)
    try:
        js = client.jetstream()

        async def published() -> dict[str, object] | None:
            try:
                message = await js.get_last_msg("UNITYPLAN", "unityplan.ca.territory.migrated")
            except NotFoundError:
                return None
            return dict(json.loads(message.data or b"{}"))

        envelope = await eventually(published, "territory.migrated on the bus", timeout=60)
        assert envelope["data"] == {"territory": "ca", "database_dsn": dsn}
    finally:
        await client.close()
    # Moving it again from the old server is refused before anything changes.
    again, out = await _migrate(fed, ca)
    assert again == 2 and "has no schema territory_ca" in out, out
    target = await asyncpg.connect(fed.postgres2.dsn())
    try:
        assert await target.fetchval("SELECT to_regnamespace('territory_ca') IS NOT NULL")
    finally:
        await target.close()
    # The appservice answers again.
    assert psutil.pid_exists(ca.appservice.pid or 0)
    status, page = await api(ca, "GET", f"/api/forums/topics/{topic['id']}")
    assert status == 200 and page["title"] == "Moving day"


async def _diagnosis(
    target: asyncpg.Connection,
    source: asyncpg.Connection,
    ca: TerritoryNode,
    topic_id: int,
    sent: list[str],
) -> str:
    """What a failed move left: where the missing messages are, and the appservice's last log."""
    found = {
        r["matrix_event_id"]
        for r in await target.fetch(
            "SELECT matrix_event_id FROM territory_ca.forum_comments WHERE topic_id = $1", topic_id
        )
    }
    missing = [e for e in sent if e not in found]
    inbox = await target.fetch(
        "SELECT event_id, status, attempts, error FROM territory_ca.as_inbox "
        "WHERE event_id = ANY($1)",
        missing,
    )
    schemas = await source.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'territory_ca%'"
    )
    on_old: list[dict[str, object]] = []
    for row in schemas:
        if row["nspname"] != "territory_ca":
            on_old += [
                dict(r)
                for r in await source.fetch(
                    f"SELECT event_id, txn_id, status, received_at FROM {row['nspname']}.as_inbox "
                    "WHERE event_id = ANY($1)",
                    missing,
                )
            ]
    log = ""
    if ca.appservice is not None and ca.appservice.log_path.exists():
        log = "\n".join(ca.appservice.log_path.read_text(errors="replace").splitlines()[-60:])
    return (
        f"{len(missing)} of {len(sent)} messages are no comment on the new server; their inbox "
        f"rows there: {[dict(r) for r in inbox][:10]}; schemas on the old server: "
        f"{[r['nspname'] for r in schemas]}; their inbox rows in the old schema: {on_old[:10]}"
        f"\n--- ca appservice log ---\n{log}"
    )
