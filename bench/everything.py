"""`python -m bench all` (what `make bench` runs): every benchmark, one after another, each on its
own throwaway stack; then one JSON file with every result and the goal figures, and an SVG chart
of those figures. ``--quick`` runs each with fewer iterations (for a first look, not a report)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import (
    backlog,
    chart,
    commands,
    events,
    federation,
    forum,
    gate,
    goals,
    load,
    media,
    roundtrip,
    scale,
)
from . import report as roundtrip_report
from .roundtrip import RoundTripOptions, progress

log = logging.getLogger("unityplan.bench")


@dataclass(frozen=True)
class RunOptions:
    quick: bool = False
    out: Path = Path("bench-results.json")
    chart: Path = Path("docs/benchmarks.svg")


def _plan(quick: bool) -> dict[str, Callable[[], Coroutine[Any, Any, Any]]]:
    """Each benchmark's run with the iterations of a report (or a quick look)."""
    q = quick
    return {
        "roundtrip": lambda: roundtrip.run(RoundTripOptions(runs=10 if q else 50, warmup=2)),
        "commands": lambda: commands.run(RoundTripOptions(runs=10 if q else 50, warmup=2)),
        "gate": lambda: gate.run(RoundTripOptions(runs=5 if q else 30, warmup=1)),
        "forum": lambda: forum.run(
            forum.ForumOptions(runs=5 if q else 30, warmup=1, transactions=20 if q else 50)
        ),
        "events": lambda: events.run(events.EventsOptions(runs=50 if q else 200, burst=2000)),
        "backlog": lambda: backlog.run(backlog.BacklogOptions(messages=300 if q else 1000)),
        "load": lambda: load.run(load.LoadOptions(users=10 if q else 50, seconds=15 if q else 60)),
        "media": lambda: media.run(
            media.MediaOptions(
                runs=5 if q else 20, runs_large=2 if q else 5, runs_huge=1 if q else 3
            )
        ),
        "federation": lambda: federation.run(RoundTripOptions(runs=5 if q else 30, warmup=1)),
        "scale": lambda: scale.run(
            scale.ScaleOptions(
                decisions=500 if q else 2000, runs=10 if q else 30, soak_s=20 if q else 120
            )
        ),
    }


def _as_json(name: str, result: Any) -> dict[str, Any]:
    if name == "roundtrip":
        return roundtrip_report.as_json(result)
    if hasattr(result, "as_json"):
        return dict(result.as_json())
    return {"benchmark": name, "text": result.as_text(), "error": getattr(result, "error", None)}


def _synapse_version() -> str:
    try:
        return version("matrix-synapse")
    except PackageNotFoundError:
        return "?"


def run(options: RunOptions) -> int:
    results: dict[str, Any] = {}
    report: dict[str, Any] = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "synapse": _synapse_version(),
            "quick": options.quick,
        },
        "benchmarks": {},
    }
    failed = []
    for name, start in _plan(options.quick).items():
        progress(f"=== {name} ===")
        started = time.monotonic()
        try:
            result = asyncio.run(start())
        except Exception as exc:
            log.critical("The %s benchmark could not set up its stack: %s", name, exc)
            report["benchmarks"][name] = {"benchmark": name, "error": f"set-up: {exc}"}
            failed.append(name)
            continue
        results[name] = result
        text = result.as_text() if hasattr(result, "as_text") else roundtrip_report.as_text(result)
        print(f"\n=== {name} ({time.monotonic() - started:.0f} s) ===\n{text}\n", flush=True)
        report["benchmarks"][name] = _as_json(name, result)
        if getattr(result, "error", None):
            failed.append(name)
    found = goals.figures(results)
    report["goals"] = [figure.as_json() for figure in found]
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    options.chart.parent.mkdir(parents=True, exist_ok=True)
    options.chart.write_text(chart.svg(found, chart.title(report["run_at"], os.cpu_count())))
    print(goals.as_markdown(found))
    print(f"\nWrote {options.out} and {options.chart}", file=sys.stderr)
    if failed:
        print(f"Benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
