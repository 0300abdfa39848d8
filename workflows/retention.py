"""The retention purge: the territory's ``audit_retention_days``, ``comment_retention_days`` and
``answer_retention_days`` settings (registry settings, followed live), enforced on a schedule.

Each pass removes exactly what is older than its setting: audit entries (through
``global.purge_audit_log``, the only way a territory role may delete from the append-only log),
the text and earlier versions of forum comments, and quiz answers. A setting of 0 keeps for good.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from core.background import every
from db.repositories.member_data import MemberDataRepository

from .territory import TerritorySettings

log = logging.getLogger("unityplan.retention")

# The homeserver's events once handled, effects once done, events once published: kept a week for
# a late retry or a look at what happened, then purged (they hold what members sent).
HANDLED_KEEP_DAYS = 7


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.purged = Counter(
            "unityplan_retention_purged",
            "Rows removed by the retention purge: audit entries, comments, answers, handled",
            ["what"],
            registry=registry,
        )
        self.last_run = Gauge(
            "unityplan_retention_last_run_timestamp_seconds",
            "When the retention purge last finished a pass (Unix time)",
            registry=registry,
        )
        self.failures = Counter(
            "unityplan_retention_failures", "Retention passes that failed", registry=registry
        )


class RetentionPurge:
    def __init__(
        self,
        repo: MemberDataRepository,
        settings: TerritorySettings,
        metrics: RetentionMetrics,
        *,
        interval_seconds: float,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.metrics = metrics
        self.interval_seconds = interval_seconds

    async def run(self) -> None:
        await every(
            self.interval_seconds, self.tick, "The retention purge", self.metrics.failures.inc
        )

    async def tick(self) -> dict[str, int]:
        """One pass; returns how many rows of each kind it removed."""
        done: dict[str, int] = {}
        purges = {
            "audit": self.repo.purge_audit,
            "comment": self.repo.purge_comments,
            "answer": self.repo.purge_answers,
        }
        for what, purge in purges.items():
            days = self.settings.retention_days(what)
            if days is None:
                continue
            removed = await purge(days)
            done[what] = removed
            self._count(what, removed, days)
        done["handled"] = await self.repo.purge_handled(HANDLED_KEEP_DAYS)
        self._count("handled", done["handled"], HANDLED_KEEP_DAYS)
        self.metrics.last_run.set(time.time())
        return done

    def _count(self, what: str, removed: int, days: int) -> None:
        if removed:
            self.metrics.purged.labels(what).inc(removed)
            log.info("Retention: removed %d %s rows older than %d days", removed, what, days)
