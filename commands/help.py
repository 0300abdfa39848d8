"""!help: the commands the sender may run, or one command's usage."""

from __future__ import annotations

from itertools import groupby

from core.html import code, escape

from .decorators import argument, command
from .router import CommandContext, CommandRouter


class HelpCommands:
    def __init__(self, router: CommandRouter) -> None:
        self.router = router

    @command("help", help="List the commands you may use, or show how to use one")
    @argument("command", required=False, rest=True)
    async def help(self, ctx: CommandContext, command: str | None) -> None:
        router = self.router
        allowed = [
            spec for spec in router.commands if await router.may_run(spec, ctx.sender, ctx.room_id)
        ]
        words = command.removeprefix(ctx.prefix).split() if command else []
        if words:  # "!help !" names no command: the whole list
            spec = router.find(words)
            matches = [spec] if spec else router.group(words[0])
            if not matches:
                await ctx.reply(
                    f"There is no command {code(ctx.prefix + ' '.join(words))}. "
                    f"Send {code(ctx.prefix + 'help')} for the list."
                )
                return
            items = "".join(
                f"<li>{code(s.usage(ctx.prefix))} — {escape(s.help)}"
                + ("" if s in allowed else " <em>(not available to you)</em>")
                + "</li>"
                for s in matches
            )
            await ctx.reply(f"<ul>{items}</ul>")
            return
        sections = []
        for group, specs in groupby(allowed, key=lambda s: s.path[0]):
            items = "".join(
                f"<li>{code(s.usage(ctx.prefix))} — {escape(s.help)}</li>" for s in specs
            )
            sections.append(f"<li><strong>{escape(group)}</strong><ul>{items}</ul></li>")
        await ctx.reply(
            "<strong>Commands you can use here</strong>"
            f"<ul>{''.join(sections)}</ul>"
            f"Send {code(ctx.prefix + 'help <command>')} for details."
        )
