"""`python -m bench scale`: one territory among many, with a lot of data, on one local stack.

The stack's PostgreSQL gets, in bulk (``INSERT … SELECT generate_series``):
- 99 more territory schemas (built by the territory migrations) and their registry rows: 100 in all;
- in the first territory: 50 badges, 1,000 gated rooms (each requiring one to three of them),
  100,000 current awards (20,000 members, 5 badges each), 10,000 topics with 1,000,000 comments,
  and one long topic of 100,000 comments more (its first page and one near its end are timed).

Then it measures:
- start-up: the appservice stopped and started as its own process on that database (`unityplan
  run` until ``/ready`` answers), against the same start on the empty database;
- gate decisions in process: fresh (the database, one query) and cached, p50/p99 over random
  (member, gated room) pairs;
- ``!badge list`` round trip for a member with 5 badges among the 100,000 awards, against ``!help``;
- forum API pages: the topic list, and a topic's first and deepest comment page;
- a soak: 100-event transactions PUT to the appservice for ``--soak`` seconds, the appservice's
  resident memory (this process: the bench runs it in process) sampled as it goes.
"""

from __future__ import annotations

import random
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from appservice.app import Platform
from appservice.stack.supervisor import SupervisedAppservice
from db.migrations import migrate_schema
from db.territory import territory_schema

from .environment import Environment, running_environment
from .forum import EVENTS_PER_TRANSACTION, _put, _setup, _transaction
from .roundtrip import Probe, RoundTripFailed, progress, round_trip
from .stats import Summary
from .synced_user import reply_key

TERRITORIES = 100
BADGES = 50
GATED_ROOMS = 1_000
MEMBERS = 20_000
BADGES_EACH = 5  # 100,000 awards
TOPICS = 10_000
COMMENTS = 1_000_000
LONG_TOPIC = 100_000  # comments of one more topic, for a deep page


@dataclass(frozen=True)
class ScaleOptions:
    decisions: int = 2_000
    runs: int = 30
    soak_s: float = 60.0
    timeout_s: float = 30.0


@dataclass
class ScaleResult:
    options: ScaleOptions
    generated_s: float | None = None
    startup_empty_s: float | None = None
    startup_s: float | None = None
    fresh_ms: list[float] = field(default_factory=list)
    select_ms: list[float] = field(default_factory=list)  # SELECT 1 on the same pool, the floor
    cached_ms: list[float] = field(default_factory=list)
    badge_list_ms: list[float] = field(default_factory=list)
    help_ms: list[float] = field(default_factory=list)
    pages_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    soak_events: int = 0
    error: str | None = None

    def _percentiles(self, samples: list[float]) -> str:
        summary = Summary.of(samples)
        if summary is None:
            return "-"
        return f"p50 {summary.p50:.3f}  p95 {summary.p95:.3f}  p99 {summary.p99:.3f}"

    def as_text(self) -> str:
        lines = [
            f"Scale: {TERRITORIES} territory schemas, {GATED_ROOMS:,} gated rooms, "
            f"{MEMBERS * BADGES_EACH:,} awards, {TOPICS:,} topics, {COMMENTS:,} comments"
        ]
        if self.generated_s is not None:
            lines.append(f"generated in {self.generated_s:.1f} s")
        if self.startup_s is not None and self.startup_empty_s is not None:
            lines.append(
                f"start-up: {self.startup_s:.2f} s at scale, {self.startup_empty_s:.2f} s empty "
                f"({self.startup_s / self.startup_empty_s:.2f}x)"
            )
        lines.append(f"gate decision fresh  (ms): {self._percentiles(self.fresh_ms)}")
        lines.append(f"  floor: SELECT 1    (ms): {self._percentiles(self.select_ms)}")
        lines.append(f"gate decision cached (ms): {self._percentiles(self.cached_ms)}")
        lines.append(f"!badge list round trip (ms): {self._percentiles(self.badge_list_ms)}")
        lines.append(f"!help round trip       (ms): {self._percentiles(self.help_ms)}")
        for page, samples in self.pages_ms.items():
            lines.append(f"API {page:<30} (ms): {self._percentiles(samples)}")
        if self.rss_mb:
            values = [mb for _, mb in self.rss_mb]
            lines.append(
                f"soak: {self.soak_events:,} events in {self.rss_mb[-1][0]:.0f} s; RSS start "
                f"{values[0]:.0f} MB, end {values[-1]:.0f} MB, max {max(values):.0f} MB, "
                f"growth over the second half {self.rss_growth_mb:+.1f} MB"
            )
        if self.error:
            lines.append(f"\nFAILED: {self.error}")
        return "\n".join(lines)

    @property
    def rss_growth_mb(self) -> float:
        """RSS at the end minus RSS half-way: flat memory stays near 0."""
        if len(self.rss_mb) < 2:
            return 0.0
        return self.rss_mb[-1][1] - self.rss_mb[len(self.rss_mb) // 2][1]

    def as_json(self) -> dict[str, object]:
        def summary(samples: list[float]) -> dict[str, float] | None:
            found = Summary.of(samples)
            return found.as_dict() if found else None

        return {
            "benchmark": "scale",
            "generated_s": self.generated_s,
            "startup_empty_s": self.startup_empty_s,
            "startup_s": self.startup_s,
            "gate_fresh_ms": summary(self.fresh_ms),
            "gate_cached_ms": summary(self.cached_ms),
            "select_1_ms": summary(self.select_ms),
            "badge_list_ms": summary(self.badge_list_ms),
            "help_ms": summary(self.help_ms),
            "pages_ms": {page: summary(samples) for page, samples in self.pages_ms.items()},
            "rss_mb": self.rss_mb,
            "rss_growth_mb": self.rss_growth_mb,
            "soak_events": self.soak_events,
            "error": self.error,
        }


def _platform(env: Environment) -> Platform:
    platform = env.stack.first.platform
    assert platform is not None
    return platform


async def _generate(env: Environment, admin_dsn: str) -> None:
    """Everything in bulk, as the admin of the stack's PostgreSQL."""
    schema = territory_schema(env.stack.first.code)
    server = env.stack.server_name  # the members are the territory's own
    conn = await asyncpg.connect(admin_dsn)
    try:
        for n in range(1, TERRITORIES):
            code = f"scale{n:02d}"
            async with conn.transaction():
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {territory_schema(code)}")
                await migrate_schema(conn, "territory", territory_schema(code))
                await conn.execute(
                    """INSERT INTO global.territories
                           (code, name, server_name, homeserver_url, database_dsn)
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
                    code,
                    f"Scale {n}",
                    f"{code}.invalid",
                    f"https://{code}.invalid",
                    env.stack.first.database_url,
                )
        await conn.execute(
            """INSERT INTO public.badge_definitions (slug, name, defined_in, defined_by)
               SELECT 'scale-' || n, 'Scale badge ' || n, $1, 'bench'
               FROM generate_series(1, $2) AS n ON CONFLICT DO NOTHING""",
            env.stack.first.code,
            BADGES,
        )
        await conn.execute(
            f"""INSERT INTO {schema}.gated_rooms (room_id, badges, mode, previous_join_rule, set_by)
                SELECT '!scale-' || n || ':bench',
                       ARRAY(SELECT 'scale-' || (1 + (n * 7 + k * 13) % {BADGES})
                             FROM generate_series(0, n % 3) AS k),
                       CASE WHEN n % 2 = 0 THEN 'all' ELSE 'any' END, 'public', 'bench'
                FROM generate_series(1, {GATED_ROOMS}) AS n"""
        )
        await conn.execute(
            f"""INSERT INTO {schema}.user_badges (user_id, badge_slug, awarded_by, source)
                SELECT '@member' || m || ':{server}', 'scale-' || (1 + (m + k * 11) % {BADGES}),
                       'bench', 'bench'
                FROM generate_series(1, {MEMBERS}) AS m, generate_series(0, {BADGES_EACH - 1}) AS k"""
        )
        await conn.execute(
            f"""INSERT INTO {schema}.forum_topics (category_id, slug, title, created_by)
                SELECT (SELECT min(id) FROM {schema}.forum_categories), 'scale-' || n,
                       'Scale topic ' || n, '@member' || (n % {MEMBERS} + 1) || ':{server}'
                FROM generate_series(1, {TOPICS}) AS n"""
        )
        await conn.execute(
            f"""INSERT INTO {schema}.forum_comments (topic_id, author, body, source)
                SELECT t.id, '@member' || (c % {MEMBERS} + 1) || ':{server}',
                       'Scale comment ' || c, 'api'
                FROM (SELECT id, row_number() OVER (ORDER BY id) AS r
                      FROM {schema}.forum_topics WHERE slug LIKE 'scale-%') AS t,
                     generate_series(1, {COMMENTS // TOPICS}) AS c"""
        )
        # One long topic, for a deep page: 100,000 comments more.
        await conn.execute(
            f"""INSERT INTO {schema}.forum_topics (category_id, slug, title, created_by)
                SELECT min(id), 'scale-long', 'A long topic', '@member1:{server}'
                FROM {schema}.forum_categories"""
        )
        await conn.execute(
            f"""INSERT INTO {schema}.forum_comments (topic_id, author, body, source)
                SELECT t.id, '@member' || (c % {MEMBERS} + 1) || ':{server}', 'Long ' || c, 'api'
                FROM {schema}.forum_topics t, generate_series(1, {LONG_TOPIC}) AS c
                WHERE t.slug = 'scale-long'"""
        )
        await conn.execute(f"ANALYZE {schema}.user_badges, {schema}.gated_rooms")
        await conn.execute(f"ANALYZE {schema}.forum_topics, {schema}.forum_comments")
    finally:
        await conn.close()


async def _restart(env: Environment, log_dir: Path) -> float:
    """Stop the appservice and start it as its own process (`unityplan run`, as production does:
    imports, migrations check, connections, encryption, homeserver ping) until ``/ready``
    answers; seconds taken (to 0.1 s, the supervisor's polling). Then it runs in this process
    again, for the measurements."""
    node = env.stack.first
    assert node.config is not None
    await env.stack.stop_platform()
    appservice = SupervisedAppservice(
        node.config_path,
        ready_url=node.config.appservice.address.rstrip("/") + "/ready",
        log_path=log_dir / "scale-appservice.log",
        name="scale-appservice",
    )
    started = time.perf_counter()
    appservice.start()
    try:
        await appservice.first_ready()
        elapsed = time.perf_counter() - started
    finally:
        await appservice.stop()
    await env.stack.start_platform()
    return elapsed


async def _decisions(env: Environment, result: ScaleResult, count: int) -> None:
    gate = _platform(env).gate
    rng = random.Random(7)
    pairs = [
        (
            f"@member{rng.randint(1, MEMBERS)}:{env.stack.server_name}",
            f"!scale-{rng.randint(1, GATED_ROOMS)}:bench",
        )
        for _ in range(count)
    ]
    db = _platform(env).territory_db
    for user, room in pairs:
        started = time.perf_counter()  # the floor: one round trip to the same database
        await db.fetchval("SELECT 1")
        result.select_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()  # fresh: the database every time
        await gate.decide(user, room, fresh=True)
        result.fresh_ms.append((time.perf_counter() - started) * 1000)
    for user, room in pairs:  # cached: each pair was decided just before
        started = time.perf_counter()
        await gate.decide(user, room)
        result.cached_ms.append((time.perf_counter() - started) * 1000)


async def _award_alice(env: Environment) -> None:
    platform = _platform(env)
    schema = territory_schema(env.stack.first.code)
    await platform.territory_db.execute(
        f"""INSERT INTO {schema}.user_badges (user_id, badge_slug, awarded_by, source)
            SELECT $1, 'scale-' || n, 'bench', 'bench' FROM generate_series(1, {BADGES_EACH}) AS n
            ON CONFLICT DO NOTHING""",
        env.alice.user_id,
    )


async def _round_trips(env: Environment, result: ScaleResult, options: ScaleOptions) -> None:
    probes = {
        kind: Probe(kind, env.bot_room, body, env.alice, partial(reply_key, env.bot_user_id))
        for kind, body in (("badge", "!badge list"), ("help", "!help"))
    }
    for n in range(options.runs + 2):
        for kind in ("badge", "help") if n % 2 else ("help", "badge"):
            elapsed = await round_trip(env.alice, probes[kind], options.timeout_s)
            if n >= 2:  # two warm-up rounds
                (result.badge_list_ms if kind == "badge" else result.help_ms).append(elapsed)


async def _pages(
    env: Environment, session: aiohttp.ClientSession, result: ScaleResult, runs: int
) -> None:
    platform = _platform(env)
    schema = territory_schema(env.stack.first.code)
    topic_id = await platform.territory_db.fetchval(
        f"SELECT id FROM {schema}.forum_topics WHERE slug = 'scale-long'"
    )
    # A page at the end of the long topic: after the 101st comment from its end.
    deep = await platform.territory_db.fetchval(
        f"""SELECT id FROM {schema}.forum_comments WHERE topic_id = $1
            ORDER BY id DESC OFFSET 100 LIMIT 1""",
        topic_id,
    )
    base = platform.config.public_url.rstrip("/")
    headers = {"Authorization": f"Bearer {env.alice.client.access_token}"}
    pages = {
        "topics, first page": "/api/forums/topics?limit=50",
        "comments, first page": f"/api/forums/topics/{topic_id}/comments?limit=50",
        "comments, page 1,999 of 2,000": (
            f"/api/forums/topics/{topic_id}/comments?after={int(deep or 0)}&limit=50"
        ),
    }
    for name, path in pages.items():
        samples = result.pages_ms.setdefault(name, [])
        for n in range(runs + 2):
            started = time.perf_counter()
            async with session.get(base + path, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RoundTripFailed(f"GET {path}: {resp.status}")
            if n >= 2:
                samples.append((time.perf_counter() - started) * 1000)


async def _soak(
    env: Environment, session: aiohttp.ClientSession, result: ScaleResult, seconds: float
) -> None:
    """Transactions as fast as they are answered; RSS every 2 s."""
    platform = _platform(env)
    topic = await _setup(env, session)
    process = psutil.Process()
    run = secrets.token_hex(4)
    base = f"{platform.config.appservice.address.rstrip('/')}/_matrix/app/v1/transactions"
    started = time.perf_counter()
    next_sample = started
    number = 0
    while True:
        now = time.perf_counter()
        if now >= next_sample:
            result.rss_mb.append((round(now - started, 1), process.memory_info().rss / 2**20))
            next_sample += 2.0
        if now - started > seconds:
            break
        body = _transaction(env.alice.user_id, topic.room_id, run, number)
        await _put(session, f"{base}/soak-{run}-{number}", platform.hs_token, body, 60)
        number += 1
        result.soak_events += EVENTS_PER_TRANSACTION


async def run(options: ScaleOptions) -> ScaleResult:
    result = ScaleResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with running_environment(Path(tmp)) as env, aiohttp.ClientSession() as session:
            try:
                result.startup_empty_s = await _restart(env, Path(tmp))
                progress("Generating the data in bulk...")
                started = time.perf_counter()
                await _generate(env, env.stack.postgres.dsn())
                await _award_alice(env)
                result.generated_s = time.perf_counter() - started
                progress("Restarting the appservice on it...")
                result.startup_s = await _restart(env, Path(tmp))
                progress(f"Timing {options.decisions} gate decisions...")
                await _decisions(env, result, options.decisions)
                progress("Timing !badge list, !help and API pages...")
                await _round_trips(env, result, options)
                await _pages(env, session, result, options.runs)
                progress(f"Soaking for {options.soak_s:.0f} s...")
                await _soak(env, session, result, options.soak_s)
            except (RoundTripFailed, RuntimeError, asyncpg.PostgresError) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
            progress("Stopping the stack...")
    return result
