"""The round-trip result as a table for people or as JSON for scripts."""

from __future__ import annotations

import os
from typing import Any

from .roundtrip import DESCRIPTIONS, KINDS, RoundTripResult
from .stats import Ratio, Summary

COLUMNS = ("n", "p50", "p95", "mean", "min", "max")


def table(
    title: str,
    rows: list[tuple[str, str, Summary | None]],
    ratios: dict[str, Ratio | None],
    error: str | None = None,
) -> str:
    """A titled table of summaries (kind, description, summary) and the ratios under it."""
    width = max([6, *(len(kind) for kind, _, _ in rows)])
    lines = [title, "", f"{'':<{width}} {'':<30}" + "".join(f"{c:>9}" for c in COLUMNS)]
    for kind, description, summary in rows:
        label = f"{kind:<{width}} {description:<30}"
        if summary is None:
            lines.append(f"{label}{'no samples':>9}")
            continue
        values = [f"{summary.n:>9}"] + [f"{getattr(summary, c):>9.1f}" for c in COLUMNS[1:]]
        lines.append(label + "".join(values))
    lines.append("")
    for name, ratio in ratios.items():
        shown = "n/a" if ratio is None else f"p50 {ratio.p50:.2f}x   p95 {ratio.p95:.2f}x"
        lines.append(f"{name:<15} {shown}")
    if error:
        lines += ["", f"FAILED: {error}"]
    return "\n".join(lines)


def as_text(result: RoundTripResult) -> str:
    options = result.options
    title = (
        f"Round trips on one local stack (Synapse {result.synapse_version}, "
        f"{os.cpu_count()} CPUs): {options.runs} interleaved iterations after "
        f"{options.warmup} warm-up, times in ms"
    )
    rows = [(kind, DESCRIPTIONS[kind], summary) for kind, summary in result.summaries().items()]
    return table(title, rows, result.ratios(), result.error)


def as_json(result: RoundTripResult) -> dict[str, Any]:
    options = result.options
    return {
        "benchmark": "roundtrip",
        "synapse_version": result.synapse_version,
        "cpus": os.cpu_count(),
        "runs": options.runs,
        "warmup": options.warmup,
        "timeout_s": options.timeout_s,
        "unit": "ms",
        "results": {
            kind: {
                "description": DESCRIPTIONS[kind],
                **(summary.as_dict() if summary else {"n": 0}),
            }
            for kind, summary in result.summaries().items()
        },
        "ratios": {
            name: ratio.as_dict() if ratio else None for name, ratio in result.ratios().items()
        },
        "samples": {kind: [round(ms, 2) for ms in result.samples[kind]] for kind in KINDS},
        "error": result.error,
    }
