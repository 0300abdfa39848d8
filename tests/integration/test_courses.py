"""Courses and badges as a learner and an admin experience them through a real homeserver."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import asyncpg
import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from appservice.app import Platform
from appservice.stack.local import LocalStack
from core.events import EventEnvelope
from tests.conftest import ROLE_BADGE, SCOPED_BADGE
from tests.matrix_user import MatrixUser, body, html


def _slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _course_yaml(
    slug: str,
    awards: str,
    *,
    version: int = 1,
    prerequisites: tuple[str, ...] = (),
    pass_mark: float = 1.0,
    first_lesson: str = "Why it matters",
) -> bytes:
    data = {
        "slug": slug,
        "title": f"Course {slug}",
        "description": "A course for the tests.",
        "version": version,
        "prerequisites": list(prerequisites),
        "awards": awards,
        "pass_mark": pass_mark,
        "lessons": [
            {"title": first_lesson, "body": "Carbon is **important**.\n\n- air\n- sea"},
            {"title": "What to do", "body": "Act <script>alert(1)</script> together."},
        ],
        "quiz": [
            {"question": "Which gas?", "choices": ["CO2", "Argon", "Neon"], "answer": 1},
            {"question": "Who acts?", "choices": ["Nobody", "Communities"], "answer": 2},
        ],
    }
    return json.dumps(data).encode()  # JSON is YAML


async def _import(admin: MatrixUser, room: str, yaml_text: bytes, name: str) -> dict[str, Any]:
    file_event = await admin.send_file(room, yaml_text, name, "application/yaml")
    return await admin.command_replying(room, "!course import", file_event)


async def _cli_import(stack: LocalStack, path: Any) -> tuple[int, str, str]:
    """`unityplan -c <stack config> course import PATH` as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        "-c",
        str(stack.config_path),
        "course",
        "import",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _events(stack: LocalStack, subject: str) -> list[EventEnvelope]:
    client = await nats.connect(stack.nats.url)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            subject,
            stream="UNITYPLAN",
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=10
            ),
        )
        found: list[EventEnvelope] = []
        while True:
            try:
                batch = await subscription.fetch(200, timeout=1)
            except (NatsTimeoutError, TimeoutError):
                return found
            found.extend(EventEnvelope.from_json(m.data) for m in batch)
    finally:
        await client.close()


async def _eventually_event(stack: LocalStack, subject: str, **data: Any) -> EventEnvelope:
    for _ in range(60):
        for event in await _events(stack, subject):
            if all(event.data.get(k) == v for k, v in data.items()):
                return event
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no {subject} event with {data}")


async def test_a_learners_whole_journey(
    stack: LocalStack, platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    prerequisite, course, badge = _slug("basics"), _slug("journey"), _slug("journey-badge")
    admin_room = await admin.room_with_bot()
    defined = await admin.command(admin_room, f"!badge define {prerequisite} Basics known")
    assert "Defined the badge" in body(defined)
    imported = await _import(
        admin, admin_room, _course_yaml(course, badge, prerequisites=(prerequisite,)), "c.yaml"
    )
    assert f"Imported <strong>Course {course}</strong>" in html(imported), body(imported)
    assert "was created" in body(imported)

    room = await user.room_with_bot()
    listing = await user.command(room, "!course list")
    assert course in body(listing) and f"earns {badge}" in body(listing)
    assert f"requires {prerequisite}" in body(listing)

    refused = await user.command(room, f"!course enroll {course}")
    assert f"it requires the badge {prerequisite}" in body(refused)

    awarded = await admin.command(admin_room, f"!badge award {user.user_id} {prerequisite}")
    assert body(awarded).startswith(f"Awarded {prerequisite}")
    enrolled = await user.command(room, f"!course enroll {course}")
    assert "You are enrolled" in body(enrolled)

    lesson = await user.command(room, f"!course next {course}")
    assert "Lesson 1/2: Why it matters" in body(lesson)
    assert "<strong>important</strong>" in html(lesson) and "<li>air</li>" in html(lesson)
    lesson = await user.command(room, f"!course next {course}")
    assert "Lesson 2/2" in body(lesson) and "<script>" not in html(lesson)

    question = await user.command(room, f"!course next {course}")
    assert "Question 1/2" in body(question) and "attempt 1" in body(question)
    assert "<ol><li>CO2</li><li>Argon</li><li>Neon</li></ol>" in html(question)
    again = await user.command(room, f"!course next {course}")
    assert "(still open)" in body(again)
    wrong = await user.command(room, f"!course answer {course} 2")
    assert "Not quite." in body(wrong)
    assert "answer was" not in body(wrong)  # the next attempt must not be a lookup
    changed_mind = await user.command(room, f"!course answer {course} 1")
    assert "no open question" in body(changed_mind)  # the first answer counts
    await user.command(room, f"!course next {course}")
    failed = await user.command(room, f"!course answer {course} 2")
    assert "You scored 50%, below the pass mark of 100%" in body(failed)

    progress = await user.command(room, f"!course progress {course}")
    assert "attempt 1" in body(progress) and "best score 50%" in body(progress)

    too_soon = await user.command(room, f"!course next {course}")
    assert "Take a break" in body(too_soon)  # courses.attempt_cooldown_seconds (1 s in the tests)
    await asyncio.sleep(1.2)
    question = await user.command(room, f"!course next {course}")
    assert "Question 1/2" in body(question) and "attempt 2" in body(question)
    await user.command(room, f"!course answer {course} 1")
    await user.command(room, f"!course next {course}")
    passed = await user.command(room, f"!course answer {course} 2")
    assert "You scored 100% and passed" in body(passed)

    earned = await user.dm_from_bot(
        lambda e: "You earned the badge" in body(e) and badge in body(e)
    )
    assert earned["content"]["msgtype"] == "m.notice"
    badges = await user.command(room, "!badge list")
    assert badge in body(badges) and prerequisite in body(badges)
    completed = await _eventually_event(
        stack, "unityplan.dk.course.completed", user_id=user.user_id, course=course
    )
    assert completed.data["score"] == 1.0 and completed.data["attempt"] == 2
    awarded_event = await _eventually_event(
        stack, "unityplan.dk.badge.awarded", user_id=user.user_id, badge=badge
    )
    assert awarded_event.data["source"] == f"course:{course}"
    progress = await user.command(room, "!course progress")
    assert "completed on" in body(progress)
    assert await platform.awards.holds(user.user_id, badge)


async def test_badge_expiry_reminder_then_expiry(
    stack: LocalStack, admin: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("short")
    admin_room = await admin.room_with_bot()
    # 0.0002 days = 17 s; the test stack reminds 7.2 s ahead.
    await admin.command(admin_room, f"!badge define {badge} Short lived --valid-days 0.0002")
    await admin.command(admin_room, f"!badge award {user.user_id} {badge}")
    await user.dm_from_bot(lambda e: "You earned the badge" in body(e) and badge in body(e))
    reminder = await user.dm_from_bot(
        lambda e: "expires on" in body(e) and badge in body(e), timeout=40
    )
    assert f"!badge renew {badge}" in body(reminder)
    await user.dm_from_bot(lambda e: "has expired" in body(e) and badge in body(e), timeout=40)
    expired = await _eventually_event(
        stack, "unityplan.dk.badge.expired", user_id=user.user_id, badge=badge
    )
    assert expired.data["award_id"]
    room = await user.room_with_bot()
    assert badge not in body(await user.command(room, "!badge list"))
    verdict = await admin.command(admin_room, f"!badge verify {user.user_id} {badge}")
    assert "does not hold a valid" in body(verdict)
    renew = await user.command(room, f"!badge renew {badge}")
    assert "nothing to renew" in body(renew)


async def test_issuer_renews_and_revokes(
    stack: LocalStack, admin: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("first-aid")
    admin_room = await admin.room_with_bot()
    await admin.command(admin_room, f"!badge define {badge} First aid --valid-days 365")
    info = await user.command(await user.room_with_bot(), f"!badge info {badge}")
    assert "valid for 365 days" in body(info) and "awarded by a badge issuer" in body(info)
    await admin.command(admin_room, f"!badge award {user.user_id} {badge} --expires 2099-01-31")
    verdict = await admin.command(admin_room, f"!badge verify {user.user_id} {badge}")
    assert "holds" in body(verdict) and "2099-01-31" in body(verdict)
    renewed = await admin.command(admin_room, f"!badge award {user.user_id} {badge}")
    assert body(renewed).startswith(f"Renewed {badge}")
    await _eventually_event(stack, "unityplan.dk.badge.renewed", user_id=user.user_id, badge=badge)
    room = await user.room_with_bot()
    holder_renew = await user.command(room, f"!badge renew {badge}")
    assert "renewed by a badge issuer" in body(holder_renew)
    revoked = await admin.command(
        admin_room, f"!badge revoke {user.user_id} {badge} lost the certificate"
    )
    assert "Reason: lost the certificate" in body(revoked)
    await user.dm_from_bot(lambda e: "was revoked" in body(e) and "lost the certificate" in body(e))
    verdict = await admin.command(admin_room, f"!badge verify {user.user_id} {badge}")
    assert "does not hold a valid" in body(verdict)
    again = await admin.command(admin_room, f"!badge revoke {user.user_id} {badge}")
    assert "does not hold" in body(again)


async def test_refusals_and_usage(admin: MatrixUser, user: MatrixUser) -> None:
    room = await user.room_with_bot()
    refused = await user.command(room, f"!badge award {user.user_id} anything")
    assert "needs the badge issuer permission" in body(refused)
    refused = await user.command(room, "!badge define thing A thing")
    assert "needs the badge admin permission" in body(refused)
    refused = await user.command(room, "!course import")
    assert "needs the course admin permission" in body(refused)
    usage = await user.command(room, "!course answer climate-basics abc")
    assert body(usage).startswith("Usage: !course answer <course> <choice>")
    usage = await user.command(room, "!badge verify nobody")
    assert body(usage).startswith("Usage: !badge verify @user <badge>")
    unknown = await user.command(room, "!course enroll no-such-course")
    assert "There is no course 'no-such-course'" in body(unknown)
    remote = await user.command(room, "!badge verify @x:elsewhere.example first-aid")
    assert "not a UnityPlan territory" in body(remote)
    admin_room = await admin.room_with_bot()
    not_a_reply = await admin.command(admin_room, "!course import")
    assert "reply to it with !course import" in body(not_a_reply)
    bad = await _import(admin, admin_room, b"slug: Bad Slug\n", "bad.yaml")
    assert "is not a valid course" in body(bad) and "slug" in body(bad)
    not_yaml = await _import(admin, admin_room, b"{{{", "broken.yaml")
    assert "not valid YAML" in body(not_yaml)


async def test_new_version_keeps_running_enrolments(
    stack: LocalStack, admin: MatrixUser, user: MatrixUser
) -> None:
    course, badge = _slug("versioned"), _slug("versioned-badge")
    admin_room = await admin.room_with_bot()
    await _import(admin, admin_room, _course_yaml(course, badge, first_lesson="Old lesson"), "v1")
    room = await user.room_with_bot()
    await user.command(room, f"!course enroll {course}")
    same = await _import(admin, admin_room, _course_yaml(course, badge), "v1 again")
    assert "version 1 exists" in body(same)
    newer = await _import(
        admin, admin_room, _course_yaml(course, badge, version=2, first_lesson="New lesson"), "v2"
    )
    assert "version 2" in body(newer)
    lesson = await user.command(room, f"!course next {course}")
    assert "Old lesson" in body(lesson)
    newcomer = await MatrixUser.create(stack)
    try:
        newcomer_room = await newcomer.room_with_bot()
        await newcomer.command(newcomer_room, f"!course enroll {course}")
        assert "New lesson" in body(await newcomer.command(newcomer_room, f"!course next {course}"))
    finally:
        await newcomer.close()


async def test_cli_course_import(stack: LocalStack, user: MatrixUser, tmp_path: Any) -> None:
    course = _slug("cli")
    path = tmp_path / "course.yaml"
    path.write_bytes(_course_yaml(course, course))
    code, out, err = await _cli_import(stack, path)
    assert code == 0, err
    assert out.startswith(f"Imported {course} version 1: 2 lessons, 2 questions")
    room = await user.room_with_bot()
    assert course in body(await user.command(room, "!course list"))
    code, _, err = await _cli_import(stack, path)
    assert code == 2 and "version 1 exists" in err


async def test_badge_check_answers_from_the_awards(
    platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("checked")
    room = await admin.room_with_bot()
    await admin.command(room, f"!badge define {badge} Checked")
    status = await platform.badge_checks.check(user.user_id, badge)
    assert status.valid is False and status.error is None
    await admin.command(room, f"!badge award {user.user_id} {badge}")
    status = await platform.badge_checks.check(user.user_id, badge)
    assert status.valid is True and status.expires_at is None


async def test_nobody_awards_themselves_and_role_badges_need_an_admin(
    platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("self")
    room = await admin.room_with_bot()
    await admin.command(room, f"!badge define {badge} Self")
    refused = await admin.command(room, f"!badge award {admin.user_id} {badge}")
    assert "themselves" in body(refused)
    assert not await platform.awards.holds(admin.user_id, badge)
    # trusted-issuer makes its holders issuers (tests/conftest.py): a role badge. Its holder
    # may award other badges, but not the role itself; a territory admin may.
    if not await platform.badge_definitions.get(ROLE_BADGE):
        await platform.badges.define(
            ROLE_BADGE, "Trusted issuer", valid_days=None, requires=(), actor="@t:x"
        )
    issuer = await MatrixUser.create(user.stack)
    try:
        await platform.badges.award(issuer.user_id, ROLE_BADGE, by="@t:x", source="test")
        issuer_room = await issuer.room_with_bot()
        refused = await issuer.command(issuer_room, f"!badge award {user.user_id} {ROLE_BADGE}")
        assert "only a territory admin" in body(refused)
        assert not await platform.awards.holds(user.user_id, ROLE_BADGE)
        out_of_scope = await issuer.command(issuer_room, f"!badge award {user.user_id} {badge}")
        assert f"scope does not include {badge}" in body(out_of_scope)
        if not await platform.badge_definitions.get(SCOPED_BADGE):
            await platform.badges.define(
                SCOPED_BADGE, "Helper", valid_days=None, requires=(), actor="@t:x"
            )
        allowed = await issuer.command(issuer_room, f"!badge award {user.user_id} {SCOPED_BADGE}")
        assert "Awarded" in body(allowed) or "Renewed" in body(allowed)
        by_admin = await admin.command(room, f"!badge award {user.user_id} {ROLE_BADGE}")
        assert "Awarded" in body(by_admin)
    finally:
        await issuer.close()


async def test_badge_holders_can_be_issuers(platform: Platform) -> None:
    """permissions.badge_issuers may name a badge: its holders may award."""
    from commands.permissions import Permission, PermissionChecker

    badge = _slug("issuer")
    await platform.badges.define(badge, "Issuer", valid_days=None, requires=(), actor="@t:x")
    checker = PermissionChecker(
        admins=(),
        badge_issuers=(f"badge:{badge}",),
        course_admins=(),
        power_levels=platform._power_levels,
        holds_badge=platform.awards.holds,
    )
    someone = f"@someone-{uuid.uuid4().hex[:4]}:dk.localhost"
    room = "!nowhere:dk.localhost"
    assert not await checker.has(Permission.BADGE_ISSUER, someone, room)  # type: ignore[arg-type]
    await platform.badges.award(someone, badge, by="@t:x", source="issuer")
    assert await checker.has(Permission.BADGE_ISSUER, someone, room)  # type: ignore[arg-type]


async def test_course_materials_are_pinned_encrypted_when_gated_and_delivered(
    stack: LocalStack, platform: Platform, admin: MatrixUser, user: MatrixUser, tmp_path: Any
) -> None:
    prerequisite = _slug("reader")
    await platform.badges.define(
        prerequisite, "Reader", valid_days=None, requires=(), actor=admin.user_id
    )
    await platform.badges.award(user.user_id, prerequisite, by=admin.user_id, source="issuer")
    slides = b"%PDF-1.4\nthe carbon cycle, slide by slide\n" + uuid.uuid4().bytes
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "carbon.pdf").write_bytes(slides)
    courses = {}
    for gated in (False, True):
        slug = _slug("materials")
        data = json.loads(_course_yaml(slug, slug, prerequisites=(prerequisite,) if gated else ()))
        data["lessons"][0]["materials"] = ["slides/carbon.pdf"]
        (tmp_path / f"{slug}.yaml").write_text(json.dumps(data))
        code, _, err = await _cli_import(stack, tmp_path / f"{slug}.yaml")
        assert code == 0, err
        courses[gated] = slug

    for gated, slug in courses.items():
        course = await platform.course_repo.latest(slug)
        assert course is not None
        [material] = await platform.courses.materials.of_lesson(course.id, 1)  # type: ignore[union-attr]
        assert material.name == "carbon.pdf" and material.mime == "application/pdf"
        stored = await platform.ipfs.cat(material.cid)
        if gated:
            assert material.key is not None and slides not in stored  # CIDs are public
        else:
            assert material.key is None and stored == slides
        dm = await user.room_with_bot()
        # A gated course's materials never go into a shared room, only into the learner's DM.
        room = await user.room_with_bot(direct=False) if gated else dm
        await user.command(room, f"!course enroll {slug}")
        await user.command(room, f"!course next {slug}")
        if gated:
            await user.wait_for(room, lambda e: "private chat" in body(e))

        def is_material(e: dict[str, Any]) -> bool:
            content = e.get("content", {})
            return content.get("msgtype") == "m.file" and content.get("body") == "carbon.pdf"

        delivered = await user.wait_for(dm, is_material)
        downloaded = await user.client.download(delivered["content"]["url"])
        assert downloaded.body == slides  # type: ignore[union-attr]
        if gated:
            await user.sync()
            assert not [e for e in user.timeline.get(room, []) if is_material(e)]

    admin_room = await admin.room_with_bot()
    by_path = json.loads(_course_yaml(_slug("matrix-materials"), _slug("mm")))
    by_path["lessons"][0]["materials"] = ["slides/carbon.pdf"]
    refused = await _import(admin, admin_room, json.dumps(by_path).encode(), "m.yaml")
    assert "need `unityplan course import FILE`" in body(refused)


async def test_badges_belong_to_their_territory_and_courses_must_examine(
    stack: LocalStack, platform: Platform, admin: MatrixUser
) -> None:
    foreign = _slug("foreign")
    # Territory ca's definition, written as the admin (dk's own role may not write it).
    conn = await asyncpg.connect(stack.postgres.dsn())
    try:
        await conn.execute(
            """INSERT INTO public.badge_definitions (slug, name, defined_in, defined_by)
               VALUES ($1, 'Canadian', 'ca', '@a:ca')""",
            foreign,
        )
    finally:
        await conn.close()
    room = await admin.room_with_bot()
    refused = await admin.command(room, f"!badge define {foreign} Taken over")
    assert "belongs to territory ca" in body(refused)
    assert (await platform.badge_definitions.get(foreign)).name == "Canadian"  # type: ignore[union-attr]

    course = _slug("steal")
    reply = await _import(admin, room, _course_yaml(course, foreign), "steal.yaml")
    assert "awards only badges dk defines" in body(reply)
    assert await platform.course_repo.latest_version(course) is None

    data = json.loads(_course_yaml(_slug("free"), _slug("free-badge")))
    for change, problem in (({"quiz": []}, "quiz"), ({"pass_mark": 0}, "pass_mark")):
        reply = await _import(admin, room, json.dumps({**data, **change}).encode(), "free.yaml")
        assert "is not a valid course" in body(reply) and problem in body(reply), body(reply)
    assert await platform.course_repo.latest_version(data["slug"]) is None


async def test_quiz_attempts_are_limited(
    stack: LocalStack, admin: MatrixUser, user: MatrixUser
) -> None:
    course = _slug("limited")
    admin_room = await admin.room_with_bot()
    assert "Imported" in body(
        await _import(admin, admin_room, _course_yaml(course, course), "l.yaml")
    )
    room = await user.room_with_bot()
    await user.command(room, f"!course enroll {course}")
    for _ in range(2):
        await user.command(room, f"!course next {course}")  # the lessons
    for attempt in range(1, 4):  # courses.max_attempts is 3 in the tests
        question = await user.command(room, f"!course next {course}")
        assert f"attempt {attempt}" in body(question), body(question)
        await user.command(room, f"!course answer {course} 2")  # wrong
        await user.command(room, f"!course next {course}")
        await user.command(room, f"!course answer {course} 1")  # wrong too
        await asyncio.sleep(1.2)
    refused = await user.command(room, f"!course next {course}")
    assert "used all 3 attempts" in body(refused)
