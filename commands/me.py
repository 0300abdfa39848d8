"""!me export and !me forget: a member's own data (in a direct message with the bot)."""

from __future__ import annotations

from core.errors import Refused
from core.html import code, escape
from db.repositories.direct_rooms import DirectRoomRepository
from workflows.data_rights import MemberDataService

from .decorators import argument, command
from .router import CommandContext


class MeCommands:
    def __init__(
        self, data: MemberDataService, direct_rooms: DirectRoomRepository, territory: str
    ) -> None:
        self.data = data
        self.direct_rooms = direct_rooms
        self.territory = territory

    async def _in_direct_message(self, ctx: CommandContext, what: str) -> bool:
        """Personal data goes only to the member's DM with the bot."""
        if await self.direct_rooms.get(ctx.sender) == ctx.room_id:
            return True
        await ctx.reply(
            f"Your data goes only to a direct message with me: I sent you one. Send "
            f"{code(ctx.prefix + what)} there."
        )
        await self.data.effects.dm(
            ctx.sender, f"Send {code(ctx.prefix + what)} here, and I will answer here."
        )
        return False

    @command("me export", help="Everything this territory holds about you, as a file (in a DM)")
    async def export(self, ctx: CommandContext) -> None:
        if not await self._in_direct_message(ctx, "me export"):
            return
        await self.data.queue_export(ctx.sender, ctx.room_id)
        await ctx.reply(
            "Your export follows as a file: a JSON file with every field, and a README.md that "
            "sums it up (profile, badges with their signed credentials, courses and answers, "
            "forum comments with their earlier versions and votes, files and their CIDs, and the "
            "audit log entries about you). This export is itself recorded in the audit log."
        )

    @command("me forget", help="Erase your data in this territory (asks for a word to confirm)")
    @argument("word", required=False, metavar="word")
    async def forget(self, ctx: CommandContext, word: str | None) -> None:
        if not await self._in_direct_message(ctx, "me forget"):
            return
        if word is None:
            await self._ask(ctx)
            return
        expected = await self.data.pending_word(ctx.sender)
        if expected is None:
            raise Refused(
                f"There is no erasure waiting for a word (or it expired). Send "
                f"{code(ctx.prefix + 'me forget')} and I will ask for one. Nothing was erased."
            )
        if word.strip().lower() != expected:
            raise Refused(
                "That is not the word I asked for; nothing was erased. Send the command with the "
                f"word from my question, or {code(ctx.prefix + 'me forget')} for a new one."
            )
        report = await self.data.erase(ctx.sender)
        e = report.erased
        comments = (
            f"{e.comments_removed} comments removed (their text erased; their messages redacted "
            "where I may)"
            if report.policy == "remove"
            else f"{e.comments_kept} comments kept, signed “a former member”"
        )
        done = (
            f"<li>{comments}</li>"
            f"<li>{e.enrollments} course enrolments and {e.answers} quiz answers removed, "
            f"{e.votes} votes removed</li>"
            f"<li>{e.awards_revoked} badges revoked: their credentials now say revoked and no "
            "longer name you</li>"
            f"<li>{e.files} files no longer yours; {len(e.sole_cids)} that only you uploaded are "
            "unpinned from IPFS</li>"
            f"<li>your profile, direct-message room record and {e.other_rows} other records "
            "removed</li>"
            "<li>the audit log entries about you: they name a pseudonym instead of you</li>"
        )
        server = ctx.sender.split(":", 1)[1]
        if report.deactivating:
            account = (
                f"Your Matrix account {escape(ctx.sender)} is being deactivated, with erasure, by "
                "its homeserver."
            )
        elif report.local:
            account = (
                f"Your Matrix account {escape(ctx.sender)} itself stays: ask the admin of "
                f"{escape(server)} to deactivate it with erasure (the admin guide says how)."
            )
        else:
            account = (
                f"Your Matrix account is on {escape(server)}, another territory's homeserver: "
                "ask there to erase what that territory holds (send this command to its bot)."
            )
        await ctx.reply(
            f"<strong>Done: territory {escape(self.territory)} has forgotten you.</strong>"
            f"<ul>{done}</ul>"
            "The audit log keeps one record that an erasure happened, under a pseudonym. "
            "<strong>What I cannot erase:</strong> messages already sent to other homeservers "
            "over federation (they keep their copies), copies of files that others pinned on "
            "IPFS, and events already published on the territories' event bus (kept until the "
            f"stream's age limit). {account}"
        )
        if report.deactivating:  # after the reply above, so that it reaches them
            await self.data.queue_deactivation(ctx.sender, ctx.room_id)

    async def _ask(self, ctx: CommandContext) -> None:
        word = await self.data.ask_erasure(ctx.sender)
        comments = (
            "removed: their text is erased and their messages redacted where I may"
            if self.data.comment_policy == "remove"
            else "kept, signed “a former member”"
        )
        await ctx.reply(
            f"<strong>This erases your data in territory {escape(self.territory)}.</strong><ul>"
            f"<li>your forum comments: {comments}</li>"
            "<li>your course enrolments, progress and quiz answers: removed</li>"
            "<li>your badges: revoked; their credentials will say revoked and no longer name "
            "you</li>"
            "<li>files only you uploaded: unpinned from IPFS</li>"
            "<li>your profile here: cleared</li></ul>"
            "It cannot be undone. To confirm, send "
            f"{code(ctx.prefix + 'me forget ' + word)} within 10 minutes."
        )
