"""!badge: list, info, define, award, revoke, renew, verify."""

from __future__ import annotations

from datetime import date, datetime

from mautrix.types import UserID

from core.errors import Refused, Unavailable
from core.html import code, escape
from core.ports import BadgeChecker, BadgeCheckError
from workflows.badge_credentials import BadgeCredentials
from workflows.badges import BadgeService

from .decorators import argument, command, option, requires
from .errors import PermissionDenied
from .parsers import iso_date, positive_days, slug, slug_list, user_id
from .permissions import Permission, PermissionChecker
from .router import CommandContext


def _until(expires_at: datetime | None) -> str:
    return f"valid until {expires_at:%Y-%m-%d}" if expires_at else "does not expire"


class BadgeCommands:
    def __init__(
        self,
        badges: BadgeService,
        checks: BadgeChecker,
        credentials: BadgeCredentials,
        server_name: str,
        permissions: PermissionChecker,
    ) -> None:
        self.permissions = permissions
        self.badges = badges
        self.checks = checks
        self.credentials = credentials
        self.server_name = server_name

    @command("badge list", help="Badges you (or another member) hold, with expiry")
    @argument("user", parser=user_id, required=False, metavar="@user")
    async def list(self, ctx: CommandContext, user: UserID | None) -> None:
        holder = user or ctx.sender
        awards = await self.badges.awards.held_by(holder)
        if holder != ctx.sender:  # a look at another member's data: the access audit keeps it
            await self.badges.audit.record(
                ctx.sender,
                "personal_data.viewed",
                target=holder,
                room_id=ctx.room_id,
                details={"what": "badges", "via": "chat"},
            )
        who = "You hold" if holder == ctx.sender else f"{escape(holder)} holds"
        if not awards:
            none = "You hold" if holder == ctx.sender else f"{escape(holder)} holds"
            await ctx.reply(
                f"{none} no badges yet. Send {code(ctx.prefix + 'course list')} to earn some."
            )
            return
        items = []
        for award in awards:
            badge = await self.badges.definitions.get(award.badge_slug)
            name = escape(badge.name if badge else award.badge_slug)
            items.append(
                f"<li><strong>{name}</strong> ({code(award.badge_slug)}) — "
                f"{_until(award.expires_at)}</li>"
            )
        await ctx.reply(
            f"{who} {len(awards)} badge{'s' if len(awards) > 1 else ''}:<ul>{''.join(items)}</ul>"
        )

    @command("badge info", help="What a badge is, how long it lasts and what it requires")
    @argument("badge", parser=slug)
    async def info(self, ctx: CommandContext, badge: str) -> None:
        definition = await self.badges.definition(badge)
        courses = await self.badges.courses.awarding(badge)
        lines = [f"<strong>{escape(definition.name)}</strong> ({code(badge)})"]
        if definition.description:
            lines.append(escape(definition.description))
        validity = (
            f"valid for {definition.valid_days:g} days"
            if definition.valid_days
            else "does not expire"
        )
        home = (
            "this territory"
            if definition.defined_in == self.badges.territory
            else f"territory {escape(definition.defined_in)}"
        )
        details = [f"<li>defined by {home} ({code(definition.defined_in)})</li>"]
        details.append(f"<li>{validity}</li>")
        if definition.prerequisites:
            details.append(
                "<li>requires: " + ", ".join(code(p) for p in definition.prerequisites) + "</li>"
            )
        if courses:
            details.append(
                "<li>earned by completing: "
                + ", ".join(
                    f"{escape(c.title)} ({code(ctx.prefix + 'course enroll ' + c.slug)})"
                    for c in courses
                )
                + "</li>"
            )
        else:
            details.append("<li>awarded by a badge issuer</li>")
        await ctx.reply("<br>".join(lines) + f"<ul>{''.join(details)}</ul>")

    @command("badge define", help="Define or change a badge")
    @requires(Permission.BADGE_ADMIN)
    @argument("badge", parser=slug)
    @argument("name", rest=True)
    @option("--valid-days", parser=positive_days, metavar="N")
    @option("--requires", parser=slug_list, metavar="b1,b2")
    async def define(
        self,
        ctx: CommandContext,
        badge: str,
        name: str,
        valid_days: float | None,
        requires: tuple[str, ...] | None,
    ) -> None:
        created = await self.badges.define(
            badge, name, valid_days=valid_days, requires=requires or (), actor=ctx.sender
        )
        verb = "Defined" if created else "Updated"
        await ctx.reply(f"{verb} the badge <strong>{escape(name)}</strong> ({code(badge)}).")

    @command("badge award", help="Award a badge to a member")
    @requires(Permission.BADGE_ISSUER)
    @argument("user", parser=user_id, metavar="@user")
    @argument("badge", parser=slug)
    @option("--expires", parser=iso_date, metavar="YYYY-MM-DD")
    async def award(
        self, ctx: CommandContext, user: UserID, badge: str, expires: date | None
    ) -> None:
        if user == ctx.sender:
            raise PermissionDenied("Nobody awards a badge to themselves; ask another issuer.")
        if not await self.permissions.may_issue(ctx.sender, badge):
            raise PermissionDenied(f"Your issuer scope does not include {badge}.")
        if badge in self.permissions.role_badges() and not self.permissions.is_admin(ctx.sender):
            raise PermissionDenied(
                f"{badge} grants a role in this territory: only a territory admin may award it."
            )
        outcome = await self.badges.award(
            user, badge, by=ctx.sender, source="issuer", expires=expires, room_id=ctx.room_id
        )
        verb = "Renewed" if outcome.renewed else "Awarded"
        await ctx.reply(
            f"{verb} {code(badge)} for {escape(user)} ({_until(outcome.award.expires_at)})."
        )

    @command("badge revoke", help="Revoke a member's badge, with a reason")
    @requires(Permission.BADGE_ISSUER)
    @argument("user", parser=user_id, metavar="@user")
    @argument("badge", parser=slug)
    @argument("reason", rest=True, required=False)
    async def revoke(
        self, ctx: CommandContext, user: UserID, badge: str, reason: str | None
    ) -> None:
        await self.badges.revoke(user, badge, by=ctx.sender, reason=reason, room_id=ctx.room_id)
        because = f" Reason: {escape(reason)}" if reason else ""
        await ctx.reply(f"Revoked {code(badge)} from {escape(user)}.{because}")

    @command("badge renew", help="Renew one of your badges when its renewal rule is met")
    @argument("badge", parser=slug)
    async def renew(self, ctx: CommandContext, badge: str) -> None:
        outcome = await self.badges.renew_by_holder(ctx.sender, badge)
        await ctx.reply(f"Renewed {code(badge)}: {_until(outcome.award.expires_at)}.")

    @command("badge verify", help="Whether a member holds a badge now (other territories too)")
    @argument("user", parser=user_id, metavar="@user")
    @argument("badge", parser=slug)
    async def verify(self, ctx: CommandContext, user: UserID, badge: str) -> None:
        if user.split(":", 1)[1] == self.server_name:
            await self._verify_local(ctx, user, badge)
            return
        try:
            status = await self.checks.check(user, badge)
        except BadgeCheckError as exc:
            raise Unavailable(f"Cannot verify {badge} for {user}: {exc}.") from exc
        where = f" (answered by their territory, {status.answered_by})"
        if status.error:
            raise Refused(f"Cannot verify {badge} for {user}: {status.error}.")
        if status.valid:
            await ctx.reply(
                f"✅ {escape(user)} holds {code(badge)}, {_until(status.expires_at)}{where}."
            )
        else:
            await ctx.reply(f"❌ {escape(user)} does not hold a valid {code(badge)} now{where}.")

    async def _verify_local(self, ctx: CommandContext, user: UserID, badge: str) -> None:
        """Our own award: check its signed credential as any verifier would."""
        await self.badges.definition(badge)
        award = await self.badges.awards.latest(user, badge)
        if award is None:
            await ctx.reply(f"❌ {escape(user)} does not hold {code(badge)}.")
            return
        result = await self.credentials.verify_award(award)
        link = self.credentials.issuer.credential_id(award.credential_id)
        if result.valid:
            await ctx.reply(
                f"✅ {escape(user)} holds {code(badge)}, {_until(award.expires_at)}: the signed "
                "credential checks out (signature, validity window, not revoked). "
                f'<a href="{escape(link)}">Credential</a>'
            )
        else:
            reasons = "; ".join(escape(r) for r in result.reasons)
            await ctx.reply(
                f"❌ {escape(user)} does not hold a valid {code(badge)} now: {reasons}."
            )
