"""The course and badge services over their repositories, built the same way by the appservice
and by the command line (`unityplan course import`)."""

from __future__ import annotations

from dataclasses import dataclass

from bridges.events.publisher import EventPublisher
from bridges.media.ipfs_client import IpfsClient
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.badges import AwardRepository, BadgeDefinitionRepository
from db.repositories.courses import CourseRepository
from db.territory import TerritoryCode

from .badges import BadgeService
from .courses import CourseService
from .materials import MaterialStore


@dataclass(frozen=True)
class CourseWorkflows:
    definitions: BadgeDefinitionRepository
    awards: AwardRepository
    course_repo: CourseRepository
    badges: BadgeService
    courses: CourseService


def course_workflows(
    *,
    global_db: Database,
    territory_db: Database,
    territory: TerritoryCode,
    events: EventPublisher,
    audit: AuditLog,
    ipfs: IpfsClient | None = None,
) -> CourseWorkflows:
    definitions = BadgeDefinitionRepository(global_db)
    awards = AwardRepository(territory_db, territory)
    course_repo = CourseRepository(territory_db, territory)
    badges = BadgeService(
        db=territory_db,
        definitions=definitions,
        awards=awards,
        courses=course_repo,
        events=events,
        audit=audit,
        territory=territory,
    )
    courses = CourseService(
        db=territory_db,
        courses=course_repo,
        definitions=definitions,
        badges=badges,
        events=events,
        audit=audit,
        territory=territory,
        materials=MaterialStore(territory_db, territory, ipfs) if ipfs else None,
    )
    return CourseWorkflows(definitions, awards, course_repo, badges, courses)
