"""`python -m bench commands`: bot commands that read the database, against `!help` and plain delivery.

On one local stack, interleaved: alice (enrolled in the demo course, holding a few badges) sends
``!course progress`` and ``!badge list`` and sees the bot's reply; the same for ``!help`` (no
database); and a plain alice -> bob message seen via sync.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from appservice.stack.seed import seed_demo

from .environment import Environment, running_environment
from .report import table
from .roundtrip import Probe, RoundTripFailed, RoundTripOptions, measure, progress
from .stats import Ratio, Summary
from .synced_user import event_key, reply_key

KINDS = ("progress", "badges", "help", "plain")
DESCRIPTIONS = {
    "progress": "!course progress (DB read)",
    "badges": "!badge list (DB read)",
    "help": "!help (no DB)",
    "plain": "alice -> bob via sync",
}


@dataclass
class CommandsResult:
    options: RoundTripOptions
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None

    def as_text(self) -> str:
        summaries = {kind: Summary.of(self.samples[kind]) for kind in KINDS}
        ratios = {
            f"{kind}/{base}": Ratio.of(summaries[kind], summaries[base])
            for kind in ("progress", "badges")
            for base in ("help", "plain")
        }
        return table(
            f"Command round trips on one local stack: {self.options.runs} interleaved "
            f"iterations after {self.options.warmup} warm-up, times in ms",
            [(kind, DESCRIPTIONS[kind], summaries[kind]) for kind in KINDS],
            ratios,
            self.error,
        )


async def _seed(env: Environment) -> None:
    platform = env.stack.platform
    assert platform is not None
    admin = next(u.user_id for u in env.stack.demo_users if u.role == "admin")
    demo = await seed_demo(platform, admin)
    alice = env.alice.user_id
    await platform.courses.enroll(alice, demo["course"])
    for _ in range(2):
        await platform.courses.next(alice, demo["course"])
    for slug in ("bench-first-aid", "bench-navigation", "bench-cooking"):
        await platform.badges.define(slug, slug.title(), valid_days=365, requires=(), actor=admin)
        await platform.badges.award(alice, slug, by=admin, source="issuer")


def _probes(env: Environment) -> list[Probe]:
    def bot_reply(sent: str) -> str:
        return reply_key(env.bot_user_id, sent)

    return [
        Probe("progress", env.bot_room, "!course progress", env.alice, bot_reply),
        Probe("badges", env.bot_room, "!badge list", env.alice, bot_reply),
        Probe("help", env.bot_room, "!help", env.alice, bot_reply),
        Probe("plain", env.bob_room, "hello bob", env.bob, event_key),
    ]


async def run(options: RoundTripOptions) -> CommandsResult:
    result = CommandsResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with running_environment(Path(tmp)) as env:
            await _seed(env)
            progress(f"Measuring {options.warmup} warm-up + {options.runs} iterations...")
            try:
                await measure(env, options, result.samples, _probes(env))
            except RoundTripFailed as exc:
                result.error = str(exc)
            progress("Stopping the stack...")
    return result
