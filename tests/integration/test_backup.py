"""`unityplan territory backup` and `restore`: a backup of the running territory, restored into a
second PostgreSQL server, has the same rows, and an appservice pointed at it starts and answers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import shutil
import signal
import sys
import tarfile
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
from ruamel.yaml import YAML

from appservice.stack.local import LocalStack
from appservice.stack.postgres import PostgresServer
from appservice.stack.process import free_port
from appservice.stack.seed import DEMO_COURSE
from db.backup import target_role_dsn
from db.migrations import newest_version
from db.repositories.territories import dsn_without_password
from tests.matrix_user import MatrixUser
from tests.waiting import eventually

SCHEMA = "territory_dk"
# dk's rows in the shared schemas (the registry row without what a restore sets anew).
SHARED = {
    "global.territories": "code",
    "global.users": "territory_code",
    "global.audit_log": "territory_code",
    "public.badge_definitions": "defined_in",
}


async def _unityplan(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _api(url: str, method: str = "GET", token: str | None = None, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


async def _rows(dsn: str) -> dict[str, str]:
    """Every row of every table of territory_dk and dk's rows of the shared tables, as JSON text
    in a fixed order, read in one snapshot."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY 1", SCHEMA
            )
            rows: dict[str, str] = {}
            for table in tables:
                name = table["tablename"]
                rows[name] = await conn.fetchval(
                    f"SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text "
                    f'FROM {SCHEMA}."{name}" t'
                )
            for shared, column in SHARED.items():
                row = "to_jsonb(t)"
                if shared == "global.territories":
                    row += " - 'database_dsn' - 'updated_at'"
                rows[shared] = await conn.fetchval(
                    f"SELECT coalesce(json_agg({row} ORDER BY t::text), '[]')::text "
                    f"FROM {shared} t WHERE {column} = 'dk'"
                )
            return rows
    finally:
        await conn.close()


def _log_file(path: Path) -> IO[bytes]:
    return path.open("wb")


def _config_on(stack: LocalStack, folder: Path, database_url: str) -> tuple[Path, str]:
    """A copy of the stack's appservice config for the restored server, listening elsewhere."""
    assert stack.config is not None
    yaml = YAML(typ="safe")
    values = yaml.load(stack.config_path.read_text())
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    values["appservice"].update(
        {
            "port": port,
            "address": address,
            "registration": str(stack.config.registration_path),
            "metrics_port": None,
        }
    )
    values["database"].update({"url": database_url, "territory_url": None, "admin_url": None})
    # The same signing key (the copy lives in another folder); expiry checks out of the way.
    values["badges"].update(
        {"signing_key": str(stack.config.signing_key_path), "expiry_check_seconds": 3600}
    )
    path = folder / "restored-config.yaml"
    with path.open("w") as file:
        yaml.dump(values, file)
    return path, address


async def test_a_backup_restored_on_another_server_has_the_same_rows_and_serves(
    stack: LocalStack, user: MatrixUser, tmp_path: Path
) -> None:
    assert stack.config is not None
    config = str(stack.config_path)
    api = stack.config.public_url
    suffix = secrets.token_hex(3)

    # Data through the public interfaces: a course and its badge (the CLI), a topic with a comment
    # (the HTTP API) and a file in its room (the media bridge puts it on IPFS).
    course = tmp_path / "course.yaml"
    text = (
        DEMO_COURSE.read_text("utf-8")
        .replace("slug: climate-basics", f"slug: backup-{suffix}")
        .replace("awards: climate-basics", f"awards: backup-{suffix}")
    )
    assert f"slug: backup-{suffix}" in text and f"awards: backup-{suffix}" in text
    course.write_text(text)
    status, out, err = await _unityplan("-c", config, "course", "import", str(course))
    assert status == 0, err
    status, topic = await _api(
        f"{api}/api/forums/topics",
        "POST",
        user.client.access_token,
        {"title": f"Backups {suffix}", "body": "Keep seven dailies"},
    )
    assert status == 201, topic
    await user.client.join(topic["room_id"])
    data = f"what to keep {suffix}\n".encode() * 100
    event_id = await user.send_file(topic["room_id"], data, "keep.txt", "text/plain")

    async def attachment() -> dict[str, Any] | None:
        status, page = await _api(f"{api}/api/forums/topics/{topic['id']}/comments")
        assert status == 200
        for comment in page["comments"]:
            if comment["event_id"] == event_id and comment["attachments"]:
                return dict(comment["attachments"][0])
        return None

    cid = (await eventually(attachment, "the file stored on IPFS and attached"))["cid"]

    # The backup; the rows read just before and just after it must agree (the running territory
    # was quiet meanwhile), so they are exactly what the backup holds.
    backup = tmp_path / "dk.tar"
    for _ in range(10):
        before = await _rows(stack.postgres.dsn())
        status, out, err = await _unityplan(
            "-c", config, "territory", "backup", "dk", "--to", str(backup)
        )
        assert status == 0, err + out
        if await _rows(stack.postgres.dsn()) == before:
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError("territory_dk changed during every one of 10 backups")
    assert "Dumping territory_dk" in out and f"Wrote {backup.resolve()}" in out, out

    with tarfile.open(backup) as archive:
        assert sorted(archive.getnames()) == ["manifest.json", "shared.json", "territory.dump"]
        manifest_file = archive.extractfile("manifest.json")
        dump_file = archive.extractfile("territory.dump")
        assert manifest_file is not None and dump_file is not None
        manifest = json.load(manifest_file)
        dump = dump_file.read()
    assert manifest["territory"] == "dk" and manifest["schema"] == SCHEMA
    assert manifest["schema_version"] == newest_version("territory")
    assert manifest["files"]["territory.dump"]["sha256"] == hashlib.sha256(dump).hexdigest()
    tables = {name: len(json.loads(rows)) for name, rows in before.items() if "." not in name}
    assert manifest["tables"] == tables
    assert tables["forum_comments"] >= 1 and tables["courses"] >= 1
    assert cid in manifest["cids"]
    for shared in SHARED:
        assert manifest["shared_rows"][shared] == len(json.loads(before[shared])), shared
    assert manifest["shared_rows"]["public.badge_definitions"] >= 1  # the course's badge
    assert manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL)")
    source = await asyncpg.connect(stack.postgres.dsn())
    try:
        key = await source.fetchval("SELECT public_key FROM global.territories WHERE code = 'dk'")
    finally:
        await source.close()
    assert key and manifest["public_keys"] == {"signing": key}

    # A second, empty server (its own folder and name: another name's pid file is the stack's).
    root = stack.root / "backup-restore"
    second = PostgresServer(
        root / "data", free_port(), log_path=root / "pg.log", fast=True, name="postgres-backup"
    )
    await second.start()
    appservice: asyncio.subprocess.Process | None = None
    try:
        status, out, err = await _unityplan(
            "-c", config, "territory", "restore", str(backup), "--db", second.dsn()
        )
        assert status == 0, err + out
        assert "Restoring territory_dk" in out, out
        assert f"Checked {len(tables)} tables: same rows as the backup" in out, out
        restored = await _rows(second.dsn())
        assert sorted(restored) == sorted(before)
        assert [name for name in before if restored[name] != before[name]] == []

        home = target_role_dsn(stack.database_url, second.dsn())
        target = await asyncpg.connect(second.dsn())
        try:
            registered = await target.fetchval(
                "SELECT database_dsn FROM global.territories WHERE code = 'dk'"
            )
            cids = await target.fetch(
                f"SELECT cid FROM {SCHEMA}.media_objects UNION SELECT cid FROM {SCHEMA}.file_uploads "
                f"UNION SELECT cid FROM {SCHEMA}.course_materials"
            )
            owner = await target.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", SCHEMA
            )
        finally:
            await target.close()
        assert registered == dsn_without_password(home)  # no password in the registry
        assert manifest["cids"] == sorted(row["cid"] for row in cids)
        assert owner == stack.database_role

        # A server that has the schema already is refused, and left as it was.
        status, out, err = await _unityplan(
            "-c", config, "territory", "restore", str(backup), "--db", second.dsn()
        )
        assert status == 2, err + out
        assert "already has the schema territory_dk" in err, err
        assert await _rows(second.dsn()) == restored

        # An appservice with the territory's config pointed at the restored server.
        copy_config, address = _config_on(stack, tmp_path, home)
        log_path = tmp_path / "restored-appservice.log"
        log_file = _log_file(log_path)
        try:
            appservice = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "appservice",
                "-c",
                str(copy_config),
                "run",
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log_file.close()

        async def ready() -> bool:
            assert appservice is not None
            assert appservice.returncode is None, log_path.read_text()[-3000:]
            try:
                status, _ = await _api(f"{address}/ready")
            except aiohttp.ClientError:
                return False
            return bool(status == 200)

        await eventually(ready, "the appservice on the restored server ready", timeout=90)
        check = await asyncpg.connect(second.dsn())
        try:
            sessions = await check.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", stack.database_role
            )
        finally:
            await check.close()
        assert sessions > 0  # it reads the restored server, not the stack's

        for path in ("/api/forums/topics?limit=200", f"/api/forums/topics/{topic['id']}/comments"):
            status, answer = await _api(address + path)
            assert status == 200, answer
            assert (status, answer) == await _api(api + path), path
        status, page = await _api(f"{address}/api/forums/topics/{topic['id']}/comments")
        assert any(c["body"] == "Keep seven dailies" for c in page["comments"]), page
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{address}/api/media/{cid}") as resp:
                assert resp.status == 200
                assert await resp.read() == data

        appservice.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(appservice.wait(), 30) == 0, log_path.read_text()[-3000:]
    finally:
        if appservice is not None and appservice.returncode is None:
            appservice.kill()
            await appservice.wait()
        await second.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_damaged_backup_is_refused_before_anything_changes(
    stack: LocalStack, tmp_path: Path
) -> None:
    """A backup whose dump does not match its manifest's sha256 is refused (exit 2) before the
    target is touched; so is a file that is no backup at all."""
    backup = tmp_path / "dk.tar"
    status, out, err = await _unityplan(
        "-c", str(stack.config_path), "territory", "backup", "dk", "--to", str(backup)
    )
    assert status == 0, err + out
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(backup) as original, tarfile.open(damaged, "w") as copy:
        for member in original.getmembers():
            content = original.extractfile(member)
            assert content is not None
            payload = content.read()
            if member.name == "territory.dump":
                payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
            member.size = len(payload)
            copy.addfile(member, io.BytesIO(payload))
    # Nothing listens there: a restore that got as far as connecting would fail with exit 1.
    target = f"postgresql://nobody:nothing@127.0.0.1:{free_port()}/nowhere"
    status, out, err = await _unityplan(
        "-c", str(stack.config_path), "territory", "restore", str(damaged), "--db", target
    )
    assert status == 2, err + out
    assert "is damaged: its territory.dump does not match the sha256 in its manifest" in err, err
    status, out, err = await _unityplan(
        "-c", str(stack.config_path), "territory", "restore", str(stack.config_path), "--db", target
    )
    assert status == 2 and "is not a territory backup" in err, err
