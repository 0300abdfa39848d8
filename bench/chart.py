"""An SVG bar chart of the goal figures: each bar is the measured value as a share of its goal
(1 = the goal; shorter bars meet it, for figures where higher is better the share is inverted), so
figures of different units sit on one axis. Plain SVG, no plotting library."""

from __future__ import annotations

from html import escape

from .goals import Figure

WIDTH = 1150
ROW = 26
LABEL = 390
BAR_SPACE = 420
MAX_SHARE = 2.0  # bars longer than twice the goal are cut (and say so)


def title(run_at: str, cpus: object) -> str:
    """The chart's title for a run (``run_at`` in ISO format)."""
    return f"UnityPlan benchmarks, {run_at[:10]}, {cpus} CPUs"


def svg(figures: list[Figure], title: str) -> str:
    height = 60 + ROW * len(figures) + 30
    scale = BAR_SPACE / MAX_SHARE
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="24" font-size="16" font-weight="bold">{escape(title)}</text>',
        '<text x="10" y="44" fill="#555">bar = measured / goal (inverted where higher is '
        "better); left of the line meets the goal</text>",
    ]
    top = 60
    for n, figure in enumerate(figures):
        y = top + n * ROW
        parts.append(f'<text x="10" y="{y + 17}">{escape(figure.name)}</text>')
        share = figure.share_of_goal
        if share is None:
            parts.append(f'<text x="{LABEL}" y="{y + 17}" fill="#888">not measured</text>')
            continue
        length = min(share, MAX_SHARE) * scale
        colour = "#2e8b57" if figure.met else "#c0392b"
        parts.append(
            f'<rect x="{LABEL}" y="{y + 4}" width="{length:.1f}" height="{ROW - 8}" '
            f'fill="{colour}"/>'
        )
        cut = " ▸" if share > MAX_SHARE else ""
        parts.append(
            f'<text x="{LABEL + length + 6:.1f}" y="{y + 17}">'
            f"{escape(figure.value_text)} (goal {escape(figure.goal_text)}){cut}</text>"
        )
    goal_x = LABEL + scale
    bottom = top + ROW * len(figures)
    parts.append(
        f'<line x1="{goal_x:.1f}" y1="{top - 4}" x2="{goal_x:.1f}" y2="{bottom + 4}" '
        'stroke="black" stroke-dasharray="4 3"/>'
    )
    parts.append(f'<text x="{goal_x - 14:.1f}" y="{bottom + 20}">goal</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
