"""Badge-gated rooms: decisions, knocks, the safety net, and reactions to badge events.

Layers (strongest first): the Synapse module asks ``decide`` before a local user's join exists;
knocks are answered with an invite or a refusal (and a DM saying how to earn the badge); a join by
someone lacking the badges is undone with a kick; revocation and expiry remove holders from every
room that needs the badge, and an award invites them to the rooms it newly opens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mautrix.errors import MatrixError
from mautrix.types import (
    Event,
    EventType,
    Membership,
    PowerLevelStateEventContent,
    RoomID,
    StateEvent,
    UserID,
)
from prometheus_client import CollectorRegistry, Counter, Histogram

from core.effects import Effects
from core.errors import NotFound, RateLimited, Refused
from core.events import ConsumerSpec, EventEmitter, EventEnvelope, every_territory_subject
from core.html import code, escape
from core.ids import Namespace, server_of
from core.matrix import MatrixConnection
from core.ports import BadgeChecker, BadgeCheckError
from core.ratelimit import RateLimiter
from db.cache import LruCache
from db.repositories.audit import AuditLog
from db.repositories.badges import AwardRepository, BadgeDefinitionRepository
from db.repositories.gates import Gate, GateRepository, Mode
from db.repositories.territories import TerritoryRepository
from db.territory import territory_code

from .territory import TerritorySettings

log = logging.getLogger("unityplan.gate")

# Room versions before 7 cannot knock.
KNOCK_ROOM_VERSION = 7
GATE_STATE = "org.unityplan.gate"  # state key "": {"badges": [...], "mode": ...} while gated
DECISION_CACHE_SIZE = 50_000  # (user, room) decisions remembered for gate.decision_cache_seconds
MODERATOR_LEVEL = 50


@dataclass(frozen=True)
class Decision:
    allowed: bool
    gated: bool
    missing: tuple[str, ...] = ()
    reason: str = ""


class GateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decision_seconds = Histogram(
            "unityplan_gate_decision_seconds",
            "Time to decide whether a user may be in a room",
            ["cached"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=registry,
        )
        self.actions = Counter(
            "unityplan_gate_actions",
            "What the gate did: invited, knock_refused, kicked, removed (revoked/expired)",
            ["action"],
            registry=registry,
        )


class GateService:
    def __init__(
        self,
        *,
        gates: GateRepository,
        awards: AwardRepository,
        definitions: BadgeDefinitionRepository,
        badge_checks: BadgeChecker,
        matrix: MatrixConnection,
        effects: Effects,
        audit: AuditLog,
        metrics: GateMetrics,
        namespace: Namespace,
        territory: str,
        territories: TerritoryRepository,
        command_prefix: str,
        events: EventEmitter,
        settings: TerritorySettings | None = None,
        cache_seconds: float,
        knock_limit: RateLimiter | None = None,
        server_limit: RateLimiter | None = None,
    ) -> None:
        self.events = events
        self.knock_limit = knock_limit  # per user
        # Per remote server: knocks from it, and DMs the bot sends to its users.
        self.server_limit = server_limit
        self.gates = gates
        self.awards = awards
        self.definitions = definitions
        self.badge_checks = badge_checks
        self.matrix = matrix
        self.effects = effects
        self.audit = audit
        self.metrics = metrics
        self.namespace = namespace  # the appservice's own users are never gated
        self.server_name = namespace.server_name
        self.territory = territory
        self.territories = territories  # the registry: whose member a remote user is
        # Without cross-border sharing, members of other territories are kept out of every room
        # the bot is in.
        self.settings = settings
        self.prefix = command_prefix
        self.cache_seconds = cache_seconds
        self._cache: LruCache[tuple[str, str], Decision] = LruCache(
            DECISION_CACHE_SIZE, ttl_seconds=cache_seconds
        )

    # --- decisions ----------------------------------------------------------------------------

    def invalidate(self, user_id: str | None = None, room_id: str | None = None) -> None:
        """Forget decisions about the user and/or room once the caller's transaction has ended."""

        def forget() -> None:
            self._cache.invalidate(
                lambda key: (
                    (user_id is None or key[0] == user_id)
                    and (room_id is None or key[1] == room_id)
                )
            )

        self.gates.db.after_commit(forget)

    async def decide(self, user_id: str, room_id: str, *, fresh: bool = False) -> Decision:
        started = time.perf_counter()
        key = (user_id, room_id)
        found, cached = self._cache.lookup(key) if not fresh else (False, None)
        if found and cached is not None:
            self.metrics.decision_seconds.labels("yes").observe(time.perf_counter() - started)
            return cached
        generation = self._cache.generation
        decision = await self._decide(user_id, room_id)
        self._cache.put(key, decision, generation)
        self.metrics.decision_seconds.labels("no").observe(time.perf_counter() - started)
        return decision

    async def _decide(self, user_id: str, room_id: str) -> Decision:
        local = server_of(user_id) == self.server_name
        # Another territory's gated room counts for our own members: our homeserver's module
        # refuses those who lack its badges before the host has to (the host keeps everyone
        # else out).
        check = await self.gates.check(room_id, user_id, remote_too=local)
        if check is None:
            return Decision(allowed=True, gated=False)
        gate, held = check.gate, check.held
        if self.namespace.is_own_user(user_id):
            return Decision(allowed=True, gated=True)  # the bot and its ghosts enforce, not obey
        if not local:
            held = frozenset(await self._held_elsewhere(user_id, gate.badges))
        missing = gate.missing(held)
        if not missing:
            return Decision(allowed=True, gated=True)
        return Decision(False, True, tuple(missing), self.explain(gate, missing, check.earned_with))

    async def _speaks_for(self, territory: str, user_id: str) -> bool:
        """Whether a badge event of ``territory`` is about one of its own members (the signature
        says which territory sent it; the user's server name says whose member they are)."""
        server = server_of(user_id)
        if server == self.server_name:
            return territory == self.territory
        home = await self.territories.by_server_name(server)
        return home is not None and home.code == territory

    async def _held_elsewhere(self, user_id: str, badges: tuple[str, ...]) -> set[str]:
        """Which badges a member of another territory holds: their own territory answers."""
        held = set()
        for badge in badges:
            try:
                if (await self.badge_checks.check(user_id, badge)).valid:
                    held.add(badge)
            except BadgeCheckError as exc:
                log.warning("Cannot check %s for %s: %s", badge, user_id, exc)
        return held

    def explain(self, gate: Gate, missing: list[str], earned_with: dict[str, str | None]) -> str:
        names = []
        for badge in missing:
            course = earned_with.get(badge)
            earn = f" (earn it with {self.prefix}course enroll {course})" if course else ""
            names.append(f"{badge}{earn}")
        need = (
            "one of the badges"
            if gate.mode == "any" and len(missing) > 1
            else ("the badge" if len(missing) == 1 else "the badges")
        )
        return f"This room requires {need} {', '.join(names)}."

    # --- moderator commands -------------------------------------------------------------------

    async def require(
        self, room_id: RoomID, badges: tuple[str, ...], mode: Mode, actor: str
    ) -> tuple[Gate, list[str]]:
        for badge in badges:
            if await self.definitions.get(badge) is None:
                raise NotFound(f"There is no badge {badge!r}.")
        bot = self.matrix.bot
        await self._check_power(room_id)
        create = await bot.get_state_event(room_id, EventType.ROOM_CREATE)
        version = str(create.serialize().get("room_version", "1"))
        if not version.isdigit() or int(version) < KNOCK_ROOM_VERSION:
            raise Refused(
                f"This room's version ({version}) cannot knock, which gated rooms need. Upgrade "
                "the room (room version 10 or newer) and gate the new one."
            )
        previous = await self.gates.get(room_id)
        if previous is not None:
            previous_rule = previous.previous_join_rule
        else:
            try:
                rules = await bot.get_state_event(room_id, EventType.ROOM_JOIN_RULES)
                previous_rule = str(rules.serialize().get("join_rule", "invite"))
            except MatrixError:
                previous_rule = "invite"
        gate = Gate(room_id, badges, mode, previous_rule, actor)
        await self.gates.set(gate)
        await self.effects.state(room_id, str(EventType.ROOM_JOIN_RULES), {"join_rule": "knock"})
        # In the room's own state too: the homeserver module reads it when we cannot answer,
        # so a restart of the homeserver does not open the room.
        await self.effects.state(room_id, GATE_STATE, {"badges": list(badges), "mode": mode})
        # Other territories' homeservers learn it too, to refuse their members' joins early.
        await self.events.emit(
            "gate.required", {"room_id": room_id, "badges": list(badges), "mode": mode}, actor=actor
        )
        self.invalidate(room_id=room_id)
        removed = await self._enforce_members(gate)
        await self.audit.record(
            actor,
            "gate.required",
            room_id=room_id,
            details={"badges": list(badges), "mode": mode, "removed": removed},
        )
        return gate, removed

    async def off(self, room_id: RoomID, actor: str) -> Gate:
        gate = await self.gates.remove(room_id)
        if gate is None:
            raise NotFound("This room is not gated.")
        self.invalidate(room_id=room_id)
        await self.effects.state(
            room_id, str(EventType.ROOM_JOIN_RULES), {"join_rule": gate.previous_join_rule}
        )
        await self.effects.state(room_id, GATE_STATE, {})
        await self.events.emit("gate.removed", {"room_id": room_id}, actor=actor)
        await self.audit.record(actor, "gate.removed", room_id=room_id)
        return gate

    async def _check_power(self, room_id: RoomID) -> None:
        await self.matrix.bot.get_power_levels(room_id, ignore_cache=True)  # refresh the cache
        levels: PowerLevelStateEventContent = await self.matrix.effective_power_levels(room_id)
        mine = levels.get_user_level(self.matrix.bot_user_id)
        needed = max(levels.invite, levels.kick, levels.get_event_level(EventType.ROOM_JOIN_RULES))
        if mine < needed:
            raise Refused(
                f"I need power level {needed} in this room to gate it (to change the join rule, "
                f"invite and remove members); I have {mine}. Make me a moderator and try again."
            )

    async def _is_exempt(self, user_id: str, room_id: str) -> bool:
        """The bot, its ghosts and the room's moderators (power level 50+) are never removed."""
        if self.namespace.is_own_user(user_id):
            return True
        levels = await self.matrix.effective_power_levels(RoomID(room_id))
        return levels.get_user_level(UserID(user_id)) >= MODERATOR_LEVEL

    async def _enforce_members(self, gate: Gate) -> list[str]:
        """Remove current members who lack the badges (moderators excepted)."""
        removed = []
        members = await self.matrix.bot.get_joined_members(RoomID(gate.room_id))
        for member in members:
            if await self._is_exempt(member, gate.room_id):
                continue
            decision = await self.decide(member, gate.room_id, fresh=True)
            if not decision.allowed:
                await self._remove(member, gate.room_id, decision.reason, "kicked")
                removed.append(str(member))
        return removed

    # --- Matrix events (knocks, joins) --------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if not (isinstance(event, StateEvent) and event.type == EventType.ROOM_MEMBER):
            return
        membership = event.content.membership
        if membership not in (Membership.KNOCK, Membership.JOIN):
            return
        user_id = str(event.state_key)
        if user_id == self.matrix.bot_user_id:
            return
        within_borders = self.settings is not None and not self.settings.allow_cross_border
        if within_borders and server_of(user_id) != self.server_name:
            await self._keep_within_borders(user_id, event.room_id)
            return
        gate = await self.gates.get(event.room_id)
        if gate is None:
            return
        if membership == Membership.KNOCK:
            try:
                if self.knock_limit is not None:
                    self.knock_limit.hit(user_id)
                if self.server_limit is not None and server_of(user_id) != self.server_name:
                    self.server_limit.hit(server_of(user_id))
            except RateLimited:
                log.info("Ignoring a knock by %s on %s: too many knocks", user_id, event.room_id)
                return
        decision = await self.decide(user_id, event.room_id, fresh=True)
        if membership == Membership.KNOCK:
            if decision.allowed:
                await self.effects.membership(
                    "invite", event.room_id, user_id, "You hold the badges this room needs."
                )
                self.metrics.actions.labels("invited").inc()
                await self.gates.forget_knock(event.room_id, user_id)
            else:
                await self._remove(user_id, event.room_id, decision.reason, "knock_refused")
                await self.gates.remember_refused_knock(event.room_id, user_id)
        elif decision.allowed:
            await self.gates.forget_knock(event.room_id, user_id)
        elif not await self._is_exempt(user_id, event.room_id):
            await self._remove(user_id, event.room_id, decision.reason, "kicked")

    async def _keep_within_borders(self, user_id: str, room_id: str) -> None:
        """Data residency: this territory's rooms are for its own members only."""
        if not await self._may_kick(room_id, user_id):
            await self._say_powerless(room_id, user_id)
            return
        reason = (
            f"Territory {self.territory} keeps its rooms within its borders (no cross-border "
            "federation): only its own members may join."
        )
        await self.effects.membership("kick", room_id, user_id, reason)
        self.metrics.actions.labels("kept_within_borders").inc()

    async def _remove(self, user_id: str, room_id: str, reason: str, action: str) -> None:
        # A refused knock is withdrawn by a kick too, with the reason.
        if action != "knock_refused" and not await self._may_kick(room_id, user_id):
            await self._say_powerless(room_id, user_id)
            return
        await self.effects.membership("kick", room_id, user_id, reason)
        self.metrics.actions.labels(action).inc()
        if self.server_limit is not None and server_of(user_id) != self.server_name:
            try:
                self.server_limit.hit(server_of(user_id))
            except RateLimited:
                log.info("Not telling %s why: too many DMs to %s", user_id, server_of(user_id))
                return
        what = "Your knock on" if action == "knock_refused" else "You were removed from"
        await self.effects.dm(
            user_id,
            f"{what} the room {code(room_id)} was refused: {escape(reason)}"
            if action == "knock_refused"
            else f"{what} {code(room_id)}: {escape(reason)}",
        )

    async def _may_kick(self, room_id: str, user_id: str) -> bool:
        levels = await self.matrix.effective_power_levels(RoomID(room_id))
        mine = levels.get_user_level(self.matrix.bot_user_id)
        return mine >= levels.kick and mine > levels.get_user_level(UserID(user_id))

    async def _say_powerless(self, room_id: str, user_id: str) -> None:
        """Tell the room the gate cannot act, and why, instead of failing silently."""
        try:
            await self._check_power(RoomID(room_id))
            problem = "their power level is not below mine"
        except Refused as exc:
            problem = str(exc)
        log.warning("Gated room %s: cannot remove %s (%s)", room_id, user_id, problem)
        await self.effects.notice(
            room_id,
            escape(f"This room is badge-gated, but I could not remove {user_id}: {problem}"),
        )

    # --- badge events -------------------------------------------------------------------------

    def consumer(self, territory: str) -> ConsumerSpec:
        # Every territory's badge events: a member of another territory is let into our gated
        # rooms when their territory awards the badge, and removed when it revokes it.
        types = ("badge.awarded", "badge.renewed", "badge.revoked", "badge.expired")
        return ConsumerSpec(
            name=f"{territory}-gate",
            subjects=tuple(every_territory_subject(t) for t in types),
            handler=self.on_badge_event,
        )

    def remote_gates_consumer(self, territory: str) -> ConsumerSpec:
        """Other territories' gate.required / gate.removed: which of their rooms are gated."""
        return ConsumerSpec(
            name=f"{territory}-remote-gates",
            subjects=(
                every_territory_subject("gate.required"),
                every_territory_subject("gate.removed"),
            ),
            handler=self.on_remote_gate,
        )

    async def on_remote_gate(self, event: EventEnvelope) -> None:
        if event.territory == self.territory:
            return  # our own rooms are in gated_rooms
        room_id = str(event.data["room_id"])
        if event.type == "gate.required":
            mode: Mode = "any" if event.data.get("mode") == "any" else "all"
            badges = [str(b) for b in event.data.get("badges") or []]
            await self.gates.set_remote(room_id, event.territory, badges, mode)
        else:
            await self.gates.remove_remote(room_id, event.territory)
        self.invalidate(room_id=room_id)

    async def on_badge_event(self, event: EventEnvelope) -> None:
        badge = str(event.data["badge"])
        if event.territory == self.territory:
            # Our own award: whose it is comes from our database, not from the event.
            award_id = event.data.get("award_id")
            award = await self.awards.get(award_id) if isinstance(award_id, int) else None
            if award is None:
                log.warning("%s %s names no award of ours: ignored", event.type, event.id)
                return
            if not award.user_id.startswith("@"):
                # Its holder asked to be forgotten: the award names a pseudonym now, so whoever
                # of ours no longer holds the badge leaves the rooms that need it.
                await self._recheck_members_of(self.territory, award.badge_slug, event.type)
                return
            await self._follow_badge(event.type, award.user_id, award.badge_slug)
            return
        if "user_id" not in event.data:
            # A territory that keeps its members' data at home says only which badge changed.
            await self._recheck_members_of(event.territory, badge, event.type)
            return
        user_id = str(event.data["user_id"])
        if not await self._speaks_for(event.territory, user_id):
            log.info(
                "Ignoring %s from %s about %s: not that territory's member",
                event.type,
                event.territory,
                user_id,
            )
            return
        await self._follow_badge(event.type, user_id, badge)

    async def _recheck_members_of(self, territory: str, badge: str, event_type: str) -> None:
        """Ask ``badge.check`` about ``territory``'s members in our rooms that need ``badge``: on
        an award, those whose knock was refused (they are invited when it now says yes); on a
        revocation or expiry, those inside (they leave when it no longer vouches for them)."""
        home = await self.territories.get(territory_code(territory))
        if home is None or not home.server_name:
            return
        for gate in await self.gates.requiring(badge):
            if event_type in ("badge.awarded", "badge.renewed"):
                for knocker in await self.gates.refused_knockers(gate.room_id, home.server_name):
                    decision = await self.decide(knocker, gate.room_id, fresh=True)
                    if decision.allowed:
                        await self.effects.membership(
                            "invite",
                            RoomID(gate.room_id),
                            knocker,
                            f"Your badge {badge} opens this room.",
                        )
                        self.metrics.actions.labels("invited").inc()
                        await self.gates.forget_knock(gate.room_id, knocker)
                continue
            try:
                members = await self.matrix.bot.get_joined_members(RoomID(gate.room_id))
            except MatrixError as exc:
                log.warning("Cannot read the members of gated room %s: %s", gate.room_id, exc)
                continue
            for member in members:
                if server_of(member) == home.server_name:
                    await self._follow_badge(event_type, str(member), badge, only=gate)

    async def _follow_badge(
        self, event_type: str, user_id: str, badge: str, *, only: Gate | None = None
    ) -> None:
        self.invalidate(user_id=user_id)
        for gate in [only] if only else await self.gates.requiring(badge):
            room = RoomID(gate.room_id)
            try:
                members = await self.matrix.bot.get_joined_members(room)
            except MatrixError as exc:
                log.warning("Cannot read the members of gated room %s: %s", room, exc)
                continue
            decision = await self.decide(user_id, gate.room_id, fresh=True)
            if event_type in ("badge.revoked", "badge.expired"):
                if (
                    UserID(user_id) in members
                    and not decision.allowed
                    and not await self._is_exempt(user_id, gate.room_id)
                ):
                    why = "revoked" if event_type == "badge.revoked" else "expired"
                    await self._remove(
                        user_id,
                        gate.room_id,
                        f"Your badge {badge} {why}. {decision.reason}",
                        "removed",
                    )
            elif decision.allowed and UserID(user_id) not in members:
                await self.effects.membership(
                    "invite", room, user_id, f"Your badge {badge} opens this room."
                )
                self.metrics.actions.labels("invited").inc()
