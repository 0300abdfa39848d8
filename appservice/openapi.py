"""The HTTP API described by machine: an OpenAPI 3.1 document, served at ``/api/openapi.json``.

It covers what clients and other territories call: the forum, media, badges, the member's export
and the operational endpoints. The homeserver-facing routes (``/_matrix/app/...``, the appservice
protocol, and ``/_unityplan/gate/check``, the Synapse module's) belong to those protocols and are
listed in ``INTERNAL_PREFIXES``. ``tests/integration/test_openapi.py`` keeps the document equal to
the routes the app registers and runs schemathesis against the live API.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridges.forum.api import EditComment, NewComment, NewTopic

INTERNAL_PREFIXES = ("/_matrix/app/", "/_unityplan/")
OPENAPI_PATH = "/api/openapi.json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


BEARER: list[dict[str, list[str]]] = [{"matrix": []}]
ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}


def _schemas() -> dict[str, Any]:
    attachment = {
        "type": "object",
        "required": ["cid", "filename", "mime", "size", "url"],
        "properties": {
            "cid": {"type": "string"},
            "filename": {"type": "string"},
            "mime": {"type": "string"},
            "size": {"type": "integer"},
            "url": {"type": "string"},
        },
    }
    edit = {
        "type": "object",
        "required": ["revision", "body", "created_at"],
        "properties": {
            "revision": {"type": "integer"},
            "body": {"type": "string"},
            "body_html": _nullable("string"),
            "created_at": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["errcode", "error"],
            "properties": {
                "errcode": {"type": "string", "examples": ["M_NOT_FOUND"]},
                "error": {"type": "string"},
                "retry_after_ms": {"type": "integer"},
            },
        },
        "Topic": {
            "type": "object",
            "required": ["id", "title", "slug", "category", "room_id", "alias", "locked"],
            "properties": {
                "id": {"type": "integer"},
                "title": {"type": "string"},
                "slug": {"type": "string"},
                "category": {"type": "string"},
                "room_id": _nullable("string"),
                "alias": {"type": "string"},
                "created_by": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "locked": {"type": "boolean"},
            },
        },
        "Comment": {
            "type": "object",
            "required": ["id", "author", "body", "source", "created_at", "deleted", "votes"],
            "properties": {
                "id": {"type": "integer"},
                "author": {"type": "string"},
                "author_territory": _nullable("string"),
                "event_id": _nullable("string"),
                "reply_to": _nullable("integer"),
                "body": _nullable("string"),
                "body_html": _nullable("string"),
                "source": {"type": "string", "enum": ["matrix", "api"]},
                "created_at": {"type": "string", "format": "date-time"},
                "edited_at": {"type": ["string", "null"], "format": "date-time"},
                "deleted": {"type": "boolean"},
                "edits": {"type": "array", "items": edit},
                "votes": {
                    "type": "object",
                    "required": ["up", "down"],
                    "properties": {"up": {"type": "integer"}, "down": {"type": "integer"}},
                },
                "attachments": {"type": "array", "items": attachment},
            },
        },
        "NewTopic": NewTopic.model_json_schema(),
        "NewComment": NewComment.model_json_schema(),
        "EditComment": EditComment.model_json_schema(),
        "Verification": {
            "type": "object",
            "required": ["valid", "reasons"],
            "properties": {
                "valid": {"type": "boolean"},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "credential": {"type": ["object", "null"]},
            },
        },
    }


def _paths() -> dict[str, Any]:
    topic_id = {"name": "id", "in": "path", "required": True, "schema": ID}
    comment_id = {"name": "cid", "in": "path", "required": True, "schema": ID}
    not_found = _error("No such topic (a gated topic is hidden from anonymous readers)")
    refused = _error("The request is not valid (the sentence says why)")
    unauthenticated = _error("No Matrix token, or one the homeserver does not know")
    forbidden = _error("The token's user may not do this")
    limited = _error("Too many writes: wait retry_after_ms")
    writes = {
        "400": refused,
        "401": unauthenticated,
        "403": forbidden,
        "404": not_found,
        "409": _error("The topic's room is encrypted, so it is no longer bridged"),
        "413": _error("The body is too large"),
        "423": _error("The topic is locked"),
        "429": limited,
    }
    paging = [
        {"name": "limit", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,4}$"}},
    ]
    return {
        "/api/forums/categories": {
            "get": {
                "summary": "Forum categories",
                "responses": {"200": _json({"type": "object"}, "The categories")},
            }
        },
        "/api/forums/topics": {
            "get": {
                "summary": "Topics, newest first",
                "parameters": [
                    *paging,
                    {"name": "before", "in": "query", "schema": ID},
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["topics"],
                            "properties": {
                                "topics": {"type": "array", "items": _ref("Topic")},
                                "next_before": _nullable("integer"),
                            },
                        },
                        "A page of topics",
                    ),
                    "400": refused,
                },
            },
            "post": {
                "summary": "Create a topic and its room",
                "security": BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewTopic")}},
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["id", "room_id", "alias"],
                            "properties": {
                                "id": {"type": "integer"},
                                "room_id": _nullable("string"),
                                "alias": {"type": "string"},
                            },
                        },
                        "The topic and its room",
                    ),
                    "404": _error("No such category"),
                    **{k: v for k, v in writes.items() if k not in ("404", "409", "423")},
                },
            },
        },
        "/api/forums/topics/{id}": {
            "get": {
                "summary": "One topic",
                "parameters": [topic_id],
                "responses": {
                    "200": _json(_ref("Topic"), "The topic"),
                    "401": unauthenticated,
                    "403": forbidden,
                    "404": not_found,
                },
            }
        },
        "/api/forums/topics/{id}/comments": {
            "get": {
                "summary": "Comments, oldest first",
                "parameters": [topic_id, *paging, {"name": "after", "in": "query", "schema": ID}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["comments"],
                            "properties": {
                                "comments": {"type": "array", "items": _ref("Comment")},
                                "next_after": _nullable("integer"),
                            },
                        },
                        "A page of comments",
                    ),
                    "400": refused,
                    "401": unauthenticated,
                    "403": forbidden,
                    "404": not_found,
                },
            },
            "post": {
                "summary": "Comment; the author's forum ghost says it in the room",
                "security": BEARER,
                "parameters": [topic_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewComment")}},
                },
                "responses": {"201": _json(_ref("Comment"), "The comment"), **writes},
            },
        },
        "/api/forums/topics/{id}/comments/{cid}": {
            "patch": {
                "summary": "Edit one's own comment",
                "security": BEARER,
                "parameters": [topic_id, comment_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EditComment")}},
                },
                "responses": {"200": _json(_ref("Comment"), "The edited comment"), **writes},
            },
            "delete": {
                "summary": "Delete one's own comment (redacted in the room)",
                "security": BEARER,
                "parameters": [topic_id, comment_id],
                "responses": {"200": _json({"type": "object"}, "Deleted"), **writes},
            },
        },
        "/api/media/{cid}": {
            "get": {
                "summary": "A room file, streamed from IPFS",
                "parameters": [
                    {"name": "cid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The file, as an attachment",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "404": _error("No such file"),
                },
            }
        },
        "/api/badges/issuer": {
            "get": {
                "summary": "The territory's Open Badges issuer profile and public key",
                "responses": {"200": _json({"type": "object"}, "The issuer Profile")},
            }
        },
        "/api/badges/credentials/{credential_id}": {
            "get": {
                "summary": "An award's Open Badges 3.0 credential and its revocation status",
                "parameters": [
                    {
                        "name": "credential_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The credential (JSON), or the signed token alone "
                        "(Accept: application/jwt)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["credential", "jwt", "status"],
                                    "properties": {
                                        "credential": {"type": "object"},
                                        "jwt": {"type": "string"},
                                        "status": {"type": "object"},
                                    },
                                }
                            },
                            "application/jwt": {"schema": {"type": "string"}},
                        },
                    },
                    "404": _error("No such credential"),
                },
            }
        },
        "/api/badges/verify": {
            "post": {
                "summary": "Verify a credential (this territory's or another's, by its key)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["credential"],
                                "properties": {"credential": {"type": "string"}},
                            }
                        },
                        "application/jwt": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("Verification"), "Whether it is valid, and why not"),
                    "400": refused,
                    "413": _error("The body is too large"),
                },
            }
        },
        "/api/me/export": {
            "get": {
                "summary": "Everything the territory holds about the caller",
                "security": BEARER,
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["json", "zip", "markdown"]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The export",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "application/zip": {"schema": {"type": "string"}},
                            "text/markdown": {"schema": {"type": "string"}},
                        },
                    },
                    "400": refused,
                    "401": unauthenticated,
                    "403": forbidden,
                    "429": limited,
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Each dependency up or down",
                "responses": {
                    "200": _json({"type": "object"}, "All up"),
                    "503": _json({"type": "object"}, "Something is down"),
                },
            }
        },
        "/ready": {
            "get": {
                "summary": "Whether the appservice takes traffic",
                "responses": {
                    "200": _json({"type": "object"}, "Ready"),
                    "503": _json({"type": "object"}, "Not ready yet"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (served apart when appservice.metrics_port is set)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def openapi_document(public_url: str, territory: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"UnityPlan territory {territory}",
            "version": "1",
            "description": "The forum, media, badges and member data of one territory. Writes "
            "take `Authorization: Bearer <Matrix OpenID token>` of a user of this territory's "
            "homeserver; errors are `{errcode, error}`.",
        },
        "servers": [{"url": public_url}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "matrix": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Matrix OpenID token (POST /_matrix/client/v3/user/{userId}"
                    "/openid/request_token) of a user of this territory",
                }
            },
        },
    }


def add_openapi_route(app: web.Application, public_url: str, territory: str) -> None:
    document = openapi_document(public_url, territory)

    async def get_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get(OPENAPI_PATH, get_openapi)
