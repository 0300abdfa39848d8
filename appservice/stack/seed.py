"""What `unityplan dev` puts into a fresh territory: the demo course (and with it its badge)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from workflows.course_file import parse_course_file

from ..app import Platform

log = logging.getLogger("unityplan.dev")

DEMO_COURSE = Path(__file__).parent / "demo" / "climate-basics.yaml"


async def seed_demo(platform: Platform, admin: str) -> dict[str, Any]:
    """Import the demo course unless a version of it exists; returns stack.json's "demo" entry."""
    spec = parse_course_file(DEMO_COURSE.read_text("utf-8"))
    if await platform.course_repo.latest_version(spec.slug) is None:
        await platform.courses.import_course(spec, actor=admin, source=f"demo:{DEMO_COURSE.name}")
        log.info("Imported the demo course %s", spec.slug)
    return {"course": spec.slug, "badge": spec.awards}
