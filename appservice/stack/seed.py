"""What `unityplan dev` puts into a fresh territory: the demo course (with its badge) and a room
gated by that badge."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mautrix.errors import MatrixError
from mautrix.types import EventType, RoomAlias, RoomCreatePreset, RoomID, UserID

from core.effects import notice_content
from workflows.course_file import parse_course_file

from ..app import Platform

log = logging.getLogger("unityplan.dev")

DEMO_COURSE = Path(__file__).parent / "demo" / "climate-basics.yaml"
GATED_ROOM_NAME = "climate-action"
DEMO_TOPIC_TITLE = "Welcome to the forum"
DEMO_TOPIC_SLUG = "welcome-to-the-forum"


WELCOME_ROOM_NAME = "Chat with UnityPlan"
WELCOME = (
    "Welcome to UnityPlan! I am the territory's bot. Send <code>!help</code> to see what you can "
    "do, or start with <code>!course enroll climate-basics</code>."
)


async def welcome(platform: Platform, user_id: str) -> RoomID:
    """A demo user's chat with the bot (once), waiting with a welcome: the first thing a newcomer
    sees in the web client is the bot's invite."""
    known = await platform.direct_rooms.get(user_id)
    if known is not None:
        return RoomID(known)
    room_id = await platform.matrix.bot.create_room(
        preset=RoomCreatePreset.TRUSTED_PRIVATE,
        is_direct=True,
        invitees=[UserID(user_id)],
        name=WELCOME_ROOM_NAME,
    )
    await platform.direct_rooms.set(user_id, room_id)
    await platform.matrix.send_message_event(
        room_id, EventType.ROOM_MESSAGE, notice_content(WELCOME)
    )
    log.info("Opened %s's chat with the bot (%s)", user_id, room_id)
    return room_id


async def seed_demo(platform: Platform, admin: str) -> dict[str, Any]:
    """Import the demo course and gate a demo room (once); returns stack.json's "demo" entry."""
    spec = parse_course_file(DEMO_COURSE.read_text("utf-8"))
    if await platform.course_repo.latest_version(spec.slug) is None:
        await platform.courses.import_course(spec, actor=admin, source=f"demo:{DEMO_COURSE.name}")
        log.info("Imported the demo course %s", spec.slug)
    # In the appservice's alias namespace: #unity_climate-action:<server>.
    localpart = f"{platform.config.appservice.user_prefix}{GATED_ROOM_NAME}"
    alias = RoomAlias(f"#{localpart}:{platform.config.homeserver.domain}")
    await _gated_room(platform, alias, localpart, spec.awards, spec.title, admin)
    topic = await platform.forum.topic_by_slug(DEMO_TOPIC_SLUG)
    if topic is None:
        topic = await platform.forum_service.create_topic(DEMO_TOPIC_TITLE, admin)
    return {
        "welcome_room_name": WELCOME_ROOM_NAME,
        "course": spec.slug,
        "badge": spec.awards,
        "gated_room_alias": alias,
        "forum_topic_alias": platform.forum_service.alias_of(topic),
    }


async def _gated_room(
    platform: Platform, alias: RoomAlias, localpart: str, badge: str, course_title: str, admin: str
) -> RoomID:
    bot = platform.matrix.bot
    try:
        return (await bot.resolve_room_alias(alias)).room_id
    except MatrixError:
        pass
    room_id = await bot.create_room(
        alias_localpart=localpart,
        preset=RoomCreatePreset.PUBLIC,
        name="Climate action (badge-gated)",
        topic=f"For holders of the {badge} badge: pass the course {course_title} to get in.",
        power_level_override={"users": {UserID(admin): 100}},
    )
    await platform.gate.require(room_id, (badge,), "all", actor=admin)
    log.info("Created the gated demo room %s (%s)", alias, room_id)
    return room_id
