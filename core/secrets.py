"""Secrets on disk and in logs: files made private from their first byte, URLs shown without
their passwords."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (no window in which another user
    could open it), atomically: a temporary file beside it is renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)


def without_password(url: str) -> str:
    """``nats://user:secret@host:4222`` → ``nats://user:***@host:4222`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(
        (
            parts.scheme,
            f"{parts.username or ''}:***@{host}",
            parts.path,
            parts.query,
            parts.fragment,
        )
    )
