"""The territory's own settings as the registry holds them, kept current while the process runs.

At start the appservice writes its config's settings into its registry row; `unityplan territory
settings <code> key=value` changes the row later and emits ``territory.settings_changed`` (from
whichever territory's outbox ran the command). Every process follows those events of every
territory and, for its own code, reads its row again: the event says only where to look.
"""

from __future__ import annotations

import logging
from typing import Any

from core.events import ConsumerSpec, EventEnvelope, every_territory_subject
from db.repositories.territories import TerritoryRepository
from db.territory import TerritoryCode

log = logging.getLogger("unityplan.territory")


class TerritorySettings:
    def __init__(
        self, registry: TerritoryRepository, code: TerritoryCode, initial: dict[str, Any]
    ) -> None:
        self.registry = registry
        self.code = code
        self._values = dict(initial)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def allow_cross_border(self) -> bool:
        """False: rooms do not federate, other territories' members are kept out, and badge
        questions are answered with yes or no only."""
        return bool(self._values.get("allow_cross_border", True))

    @property
    def erasure_comments(self) -> str:
        """``remove`` (default): an erased member's comments lose their text and are redacted in
        their rooms; ``keep``: they stay, signed by a former member."""
        return str(self._values.get("erasure_comments") or "remove")

    def retention_days(self, what: str) -> int | None:
        """``audit``, ``comment`` or ``answer``: the ``<what>_retention_days`` setting; None or
        0 keeps them for good."""
        value = self._values.get(f"{what}_retention_days")
        try:
            days = int(value) if value not in (None, "") else 0
        except (TypeError, ValueError):
            log.warning("%s_retention_days is not a number of days: %r", what, value)
            return None
        return days if days > 0 else None

    async def refresh(self) -> None:
        territory = await self.registry.get(self.code)
        if territory is not None:
            self._values = dict(territory.settings)
            log.info("Territory settings of %s: %s", self.code, self._values)

    def consumer(self) -> ConsumerSpec:
        return ConsumerSpec(
            name=f"{self.code}-settings",
            subjects=(every_territory_subject("territory.settings_changed"),),
            handler=self.on_changed,
        )

    async def on_changed(self, event: EventEnvelope) -> None:
        if event.data.get("territory") == self.code:
            await self.refresh()
