"""The forum HTTP API (JSON; errors as {"errcode", "error"}).

    GET    /api/forums/categories
    GET    /api/forums/topics                         ?limit=&before=  (newest first)
    POST   /api/forums/topics                         {"title", "category"?, "body"?} -> 201
    GET    /api/forums/topics/{id}
    GET    /api/forums/topics/{id}/comments           ?limit=&after=   (oldest first)
    POST   /api/forums/topics/{id}/comments           {"body", "reply_to"?} -> 201 ; 423 if locked
    PATCH  /api/forums/topics/{id}/comments/{cid}     {"body"}  (the author; mirrored as an edit)
    DELETE /api/forums/topics/{id}/comments/{cid}     (the author; mirrored as a redaction)

Writes need ``Authorization: Bearer <token>`` (see auth.py). Bodies are limited in size and
validated; user HTML is sanitised.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import Forbidden, NotFound, Refused
from core.http import read_body
from core.ids import server_of
from core.ratelimit import RateLimiter
from db.repositories.forum import Comment, ForumRepository, Topic
from db.repositories.media import MediaRepository
from db.repositories.territories import TerritoryRepository
from workflows.forum import ForumService
from workflows.gate import GateService

from .auth import TokenVerifier

MAX_REQUEST_BYTES = 64 * 1024
MAX_BODY_CHARS = 20_000
DEFAULT_LIMIT, MAX_LIMIT = 50, 200


class NewTopic(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=64)
    body: str | None = Field(default=None, min_length=1, max_length=MAX_BODY_CHARS)


class NewComment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS)
    reply_to: int | None = Field(default=None, ge=1, le=2**63 - 1)  # a comment id (bigint)


class EditComment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS)


def _is_id(raw: str) -> bool:
    """A row id in a path: ASCII digits of a size PostgreSQL's bigint holds (not "²")."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


class ForumApi:
    def __init__(
        self,
        forum: ForumRepository,
        service: ForumService,
        verifier: TokenVerifier,
        media: MediaRepository,
        gate: GateService,
        territories: TerritoryRepository,
        write_limit: RateLimiter | None = None,
    ) -> None:
        self.territories = territories  # an author's territory, from their server name
        self.write_limit = write_limit
        self.gate = gate  # a gated topic room's forum is as closed as the room
        self.media = media
        self.forum = forum
        self.service = service
        self.verifier = verifier

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/forums/categories", self.categories)
        app.router.add_get("/api/forums/topics", self.list_topics)
        app.router.add_post("/api/forums/topics", self.create_topic)
        app.router.add_get("/api/forums/topics/{id}", self.get_topic)
        app.router.add_get("/api/forums/topics/{id}/comments", self.list_comments)
        app.router.add_post("/api/forums/topics/{id}/comments", self.post_comment)
        app.router.add_patch("/api/forums/topics/{id}/comments/{cid}", self.edit_comment)
        app.router.add_delete("/api/forums/topics/{id}/comments/{cid}", self.delete_comment)

    # --- helpers ------------------------------------------------------------------------------

    async def _body(self, request: web.Request, model: type[BaseModel]) -> Any:
        raw = await read_body(request, MAX_REQUEST_BYTES)
        if b"\x00" in raw or b"\\u0000" in raw:
            raise Refused("Text cannot contain NUL characters.", reason="bad_json")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise Refused("The body is not JSON.", reason="not_json") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise Refused(f"{where}: {first['msg']}", reason="bad_json") from None

    async def _topic(self, request: web.Request, user: str | None = None) -> Topic:
        """The topic, if the caller may see it: a topic whose room is badge-gated is hidden from
        anonymous readers (404) and refused to those who lack the badges (403)."""
        raw = request.match_info["id"]
        topic = await self.forum.topic(int(raw)) if _is_id(raw) else None
        if topic is None:
            raise NotFound("No such topic.")
        if topic.matrix_room_id and await self.gate.gates.get(topic.matrix_room_id):
            if user is None:
                authorization = request.headers.get("Authorization")
                if not authorization:
                    raise NotFound("No such topic.")
                user = await self.verifier.user_of(authorization)
            decision = await self.gate.decide(user, topic.matrix_room_id)
            if not decision.allowed:
                raise Forbidden(decision.reason or "This topic's room requires badges you lack.")
        return topic

    async def _writer(self, request: web.Request) -> str:
        """The verified author of a write, within their rate (429 past it)."""
        author = await self.verifier.user_of(request.headers.get("Authorization"))
        if self.write_limit is not None:
            self.write_limit.hit(author)
        return author

    async def _gated_rooms(self, topics: list[Topic]) -> set[str]:
        rooms = [t.matrix_room_id for t in topics if t.matrix_room_id]
        return {room for room in rooms if await self.gate.gates.get(room)}

    async def _comment(self, request: web.Request, topic: Topic) -> Comment:
        raw = request.match_info["cid"]
        comment = await self.forum.comment(int(raw)) if _is_id(raw) else None
        if comment is None or comment.topic_id != topic.id:
            raise NotFound("No such comment in this topic.")
        return comment

    @staticmethod
    def _page(request: web.Request, name: str) -> tuple[int, int | None]:
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            cursor = request.query.get(name)
            return max(1, min(limit, MAX_LIMIT)), int(cursor) if cursor else None
        except ValueError:
            raise Refused(f"limit and {name} are numbers.") from None

    def _topic_json(self, topic: Topic) -> dict[str, Any]:
        return {
            "id": topic.id,
            "title": topic.title,
            "slug": topic.slug,
            "category": topic.category,
            "room_id": topic.matrix_room_id,
            "alias": self.service.alias_of(topic),
            "created_by": topic.created_by,
            "created_at": topic.created_at.isoformat(),
            "locked": topic.locked,
        }

    async def _comments_json(self, comments: list[Comment]) -> list[dict[str, Any]]:
        votes = await self.forum.vote_counts([c.id for c in comments])
        files = await self.media.uploads_of_comments([c.id for c in comments])
        homes = await self.territories.codes_of_servers({server_of(c.author) for c in comments})
        revisions = await self.forum.revisions([c.id for c in comments])
        result = []
        for c in comments:
            deleted = c.deleted_at is not None
            edits = (
                []
                if deleted
                else [
                    {
                        "revision": r.revision,
                        "body": r.body,
                        "body_html": r.body_html,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in revisions.get(c.id, [])
                ]
            )
            up, down = votes.get(c.id, (0, 0))
            result.append(
                {
                    "id": c.id,
                    "author": c.author,
                    # The territory whose homeserver the author is on (None: not a territory's).
                    "author_territory": homes.get(server_of(c.author)),
                    "event_id": c.matrix_event_id,
                    "reply_to": c.parent_id,
                    "body": None if deleted else c.body,
                    "body_html": None if deleted else c.body_html,
                    "source": c.source,
                    "created_at": c.created_at.isoformat(),
                    "edited_at": c.edited_at.isoformat() if c.edited_at else None,
                    "deleted": deleted,
                    "edits": edits,
                    "votes": {"up": up, "down": down},
                    "attachments": []
                    if deleted
                    else [
                        {
                            "cid": f.cid,
                            "filename": f.filename,
                            "mime": f.mime,
                            "size": f.size,
                            "url": f"/api/media/{f.cid}",
                        }
                        for f in files.get(c.id, [])
                    ],
                }
            )
        return result

    # --- handlers -----------------------------------------------------------------------------

    async def categories(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "categories": [
                    {"slug": c.slug, "name": c.name, "description": c.description}
                    for c in await self.forum.categories()
                ]
            }
        )

    async def list_topics(self, request: web.Request) -> web.Response:
        limit, before = self._page(request, "before")
        topics = await self.forum.topics(limit, before)
        next_before = topics[-1].id if len(topics) == limit else None
        gated = await self._gated_rooms(topics)  # listed only in the rooms themselves
        visible = [t for t in topics if t.matrix_room_id not in gated]
        return web.json_response(
            {"topics": [self._topic_json(t) for t in visible], "next_before": next_before}
        )

    async def create_topic(self, request: web.Request) -> web.Response:
        author = await self._writer(request)
        body = await self._body(request, NewTopic)
        topic = await self.service.create_topic(body.title, author, category=body.category)
        if body.body:
            await self.service.post_comment(topic, author, body.body, None)
        return web.json_response(
            {
                "id": topic.id,
                "room_id": topic.matrix_room_id,
                "alias": self.service.alias_of(topic),
            },
            status=201,
        )

    async def get_topic(self, request: web.Request) -> web.Response:
        return web.json_response(self._topic_json(await self._topic(request)))

    async def list_comments(self, request: web.Request) -> web.Response:
        topic = await self._topic(request)
        limit, after = self._page(request, "after")
        comments = await self.forum.comments(topic.id, limit, after)
        next_after = comments[-1].id if len(comments) == limit else None
        return web.json_response(
            {"comments": await self._comments_json(comments), "next_after": next_after}
        )

    async def post_comment(self, request: web.Request) -> web.Response:
        author = await self._writer(request)
        topic = await self._topic(request, author)
        body = await self._body(request, NewComment)
        comment = await self.service.post_comment(topic, author, body.body, body.reply_to)
        return web.json_response((await self._comments_json([comment]))[0], status=201)

    async def edit_comment(self, request: web.Request) -> web.Response:
        author = await self._writer(request)
        topic = await self._topic(request, author)
        comment = await self._comment(request, topic)
        body = await self._body(request, EditComment)
        edited = await self.service.edit_comment(comment, author, body.body)
        return web.json_response((await self._comments_json([edited]))[0])

    async def delete_comment(self, request: web.Request) -> web.Response:
        author = await self._writer(request)
        topic = await self._topic(request, author)
        await self.service.delete_comment(await self._comment(request, topic), author)
        return web.json_response({}, status=200)
