"""The figures issue 16 sets goals for, taken from one run of each benchmark."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from .backlog import BacklogResult
from .events import EventsResult
from .forum import ForumResult
from .load import LoadResult
from .media import HUGE, SIZE_NAMES, MediaResult
from .scale import ScaleResult
from .stats import Ratio, Summary


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None  # None: the benchmark did not produce it (see its error)
    unit: str
    goal: float
    better: Literal["lower", "higher"]

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.better == "lower" else self.value >= self.goal

    @property
    def share_of_goal(self) -> float | None:
        """How far from the goal, as a factor where 1 is the goal and below 1 meets it."""
        if self.value is None or not self.goal:
            return None
        if self.better == "lower":
            return self.value / self.goal
        return self.goal / self.value if self.value > 0 else 99.0

    @property
    def goal_text(self) -> str:
        return f"{'≤' if self.better == 'lower' else '≥'} {_number(self.goal)} {self.unit}".strip()

    @property
    def value_text(self) -> str:
        return "-" if self.value is None else f"{_number(self.value)} {self.unit}".strip()

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "share_of_goal": self.share_of_goal}


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figures(results: dict[str, Any]) -> list[Figure]:
    """The goal table's rows from the results there are (a missing benchmark gives None)."""
    found: list[Figure] = []
    backlog: BacklogResult | None = results.get("backlog")
    drain = backlog.ratio if backlog else None
    found.append(Figure("backlog drain, ours / echo", drain, "x", 1.5, "lower"))
    forum: ForumResult | None = results.get("forum")
    rate = forum.ingest.rate if forum is not None and forum.ingest is not None else None
    found.append(Figure("ingest, 100-event transactions", rate, "events/s", 3000, "higher"))
    load: LoadResult | None = results.get("load")
    ratio = Ratio.of(Summary.of(load.ours_ms), Summary.of(load.floor_ms)) if load else None
    found.append(
        Figure(
            "command round trip under load, ours / echo, p95",
            ratio.p95 if ratio else None,
            "x",
            1.10,
            "lower",
        )
    )
    scale: ScaleResult | None = results.get("scale")
    fresh = Summary.of(scale.fresh_ms) if scale else None
    found.append(
        Figure(
            "gate decision at 1k rooms / 100k awards, fresh p99",
            fresh.p99 if fresh else None,
            "ms",
            1.0,
            "lower",
        )
    )
    found.append(
        Figure(
            "start-up at 100 territories, 100k awards",
            scale.startup_s if scale else None,
            "s",
            5.0,
            "lower",
        )
    )
    found.append(
        Figure(
            "appservice RSS after the soak",
            scale.rss_mb[-1][1] if scale and scale.rss_mb else None,
            "MB",
            200,
            "lower",
        )
    )
    found.append(
        Figure(
            "RSS growth over the soak's second half",
            scale.rss_growth_mb if scale and scale.rss_mb else None,
            "MB",
            10,
            "lower",
        )
    )
    media: MediaResult | None = results.get("media")
    for size, name in SIZE_NAMES.items():
        samples = media.samples.get(size) if media else None
        over = Ratio.of(Summary.of(samples.ours), Summary.of(samples.floor)) if samples else None
        found.append(
            Figure(
                f"media {name}, ours / (delivery + download + add), p50",
                over.p50 if over else None,
                "x",
                1.2,
                "lower",
            )
        )
    huge = media.samples.get(HUGE) if media else None
    found.append(
        Figure(
            "peak RSS growth while storing a 100 MB file",
            max(huge.rss_growth_mb) if huge and huge.rss_growth_mb else None,
            "MB",
            50,
            "lower",
        )
    )
    events: EventsResult | None = results.get("events")
    found.append(
        Figure(
            "outbox burst / pipelined raw JetStream",
            events.burst_over_pipelined if events else None,
            "x",
            0.8,
            "higher",
        )
    )
    return found


def from_json(rows: list[dict[str, Any]]) -> list[Figure]:
    """The figures as ``as_json`` wrote them (to draw the chart of an earlier run again)."""
    return [Figure(r["name"], r["value"], r["unit"], r["goal"], r["better"]) for r in rows]


def as_markdown(found: list[Figure]) -> str:
    lines = ["| figure | goal | measured | met |", "|---|---|---|---|"]
    for figure in found:
        met = {True: "yes", False: "**no**", None: "not measured"}[figure.met]
        lines.append(f"| {figure.name} | {figure.goal_text} | {figure.value_text} | {met} |")
    return "\n".join(lines)
