"""`python -m bench BENCHMARK [options]`: roundtrip, commands, gate, forum, media, federation,
events, backlog, load, scale, or all (every one, then bench-results.json and the chart).

Exit codes: 0 measured, 1 a round trip failed or timed out (for `all`: a benchmark failed), 3 the
stack could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import report
from .roundtrip import RoundTripOptions, run

EXIT_ROUND_TRIP_FAILED = 1
EXIT_SETUP_FAILED = 3


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log the stack's INFO lines")


def _common(
    parser: argparse.ArgumentParser, *, runs: int, warmup: int, timeout: float | None, unit: str
) -> None:
    """--runs, --warmup, --timeout (when the benchmark has one) and -v, with its defaults."""
    parser.add_argument(
        "--runs", type=_positive, default=runs, help=f"measured iterations (default: {runs})"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=warmup,
        help=f"iterations run first and discarded (default: {warmup})",
    )
    if timeout is not None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=timeout,
            help=f"seconds one {unit} may take before the run fails (default: {timeout:g})",
        )
    _verbose(parser)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="UnityPlan benchmarks")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    roundtrip = benchmarks.add_parser(
        "roundtrip",
        help="!help round trip vs. a minimal echo appservice vs. plain delivery",
        description="Start one local stack and time, interleaved: alice's !help answered by "
        "UnityPlan's bot, by a minimal echo appservice, and a plain alice -> bob message.",
    )
    _common(roundtrip, runs=50, warmup=5, timeout=10.0, unit="round trip")
    roundtrip.add_argument("--json", action="store_true", help="print the result as JSON")
    commands = benchmarks.add_parser(
        "commands",
        help="!course progress and !badge list round trips vs. !help and plain delivery",
        description="Start one local stack and time, interleaved: !course progress, !badge list "
        "(both read the database), !help, and a plain alice -> bob message.",
    )
    _common(commands, runs=50, warmup=5, timeout=10.0, unit="round trip")
    gate = benchmarks.add_parser(
        "gate",
        help="knock -> invite and unauthorised join -> kick vs. plain delivery; decision time",
    )
    _common(gate, runs=30, warmup=3, timeout=10.0, unit="reaction")
    forum = benchmarks.add_parser(
        "forum",
        help="room message -> API comment and API comment -> room vs. plain; ingest rate",
        description="Start one local stack and time, interleaved: a message in a forum topic "
        "room until the API lists it as a comment, a comment posted over the API until bob's "
        "sync brings it, and a plain alice -> bob message; then the sustained ingest rate of "
        "100-event transactions PUT straight to the appservice.",
    )
    _common(forum, runs=30, warmup=3, timeout=10.0, unit="round trip or transaction")
    forum.add_argument(
        "--transactions", type=_positive, default=10, help="100-event transactions ingested"
    )
    media = benchmarks.add_parser(
        "media",
        help="room file -> pinned CID recorded vs. delivery + download + add (100 KB to 100 MB)",
        description="Start one local stack (the appservice in its own process) and time, "
        "interleaved per size (100 KB, 5 MB, 100 MB): a file alice uploads and sends into a "
        "forum topic room until the media bridge has recorded its pinned CID (the appservice's "
        "RSS sampled meanwhile); the same file sent to bob, downloaded by him and added "
        "directly; and a direct add + pin of other bytes of the same size. Every recorded CID "
        "must equal a direct add of the same bytes.",
    )
    _common(media, runs=20, warmup=1, timeout=120.0, unit="file stored or added")
    media.add_argument(
        "--runs-large", type=_positive, default=5, help="iterations with 5 MB files (default: 5)"
    )
    media.add_argument(
        "--runs-huge", type=_positive, default=3, help="iterations with 100 MB files (default: 3)"
    )
    federation = benchmarks.add_parser(
        "federation",
        help="a dk topic message seen on ca and as a dk comment vs. plain federated delivery",
        description="Start two federating territories and time, interleaved: a dk user's message "
        "in a dk topic room until a ca member's sync brings it and until dk's API lists it, a ca "
        "member's message there until dk's API lists it, and plain federated delivery.",
    )
    _common(federation, runs=30, warmup=3, timeout=10.0, unit="round trip")
    events = benchmarks.add_parser(
        "events",
        help="outbox commit -> JetStream PubAck vs. plain JetStream publishes",
        description="Start one local stack and time, interleaved: an event committed through "
        "the transactional outbox until its PubAck, and a plain nats-py JetStream publish; "
        "then a burst of each.",
    )
    _common(events, runs=200, warmup=20, timeout=None, unit="")
    events.add_argument("--burst", type=_positive, default=500, help="events in the burst")
    events.add_argument("--json", action="store_true", help="print the result as JSON")
    backlog = benchmarks.add_parser(
        "backlog",
        help="a backlog drained after an outage vs. the same backlog drained by the echo bot",
    )
    backlog.add_argument("--messages", type=_positive, default=1000, help="messages queued")
    backlog.add_argument("--timeout", type=float, default=300.0, help="seconds a drain may take")
    _verbose(backlog)
    load = benchmarks.add_parser(
        "load", help="command round trips while many users talk at once vs. the echo bot"
    )
    load.add_argument("--users", type=_positive, default=50, help="users at once (default: 50)")
    load.add_argument("--seconds", type=float, default=60.0, help="how long they talk")
    load.add_argument("--pause", type=float, default=1.0, help="longest pause between rounds")
    _verbose(load)
    scale = benchmarks.add_parser(
        "scale",
        help="100 territories, 1k gated rooms, 100k awards, 1M comments: start-up, gate, "
        "pages, memory",
    )
    scale.add_argument("--decisions", type=_positive, default=2000, help="gate decisions timed")
    scale.add_argument("--runs", type=_positive, default=30, help="round trips and page loads")
    scale.add_argument("--soak", type=float, default=120.0, help="seconds of the soak")
    _verbose(scale)
    everything = benchmarks.add_parser(
        "all",
        help="every benchmark, then one JSON file, a chart and the goal table (make bench)",
    )
    everything.add_argument("--quick", action="store_true", help="fewer iterations each")
    everything.add_argument(
        "--out", type=Path, default=Path("bench-results.json"), help="the JSON file written"
    )
    everything.add_argument(
        "--chart", type=Path, default=Path("docs/benchmarks.svg"), help="the SVG chart written"
    )
    everything.add_argument("-v", "--verbose", action="store_true", help="log INFO lines")
    redraw = benchmarks.add_parser(
        "chart", help="draw the chart (and print the goal table) of a bench-results.json again"
    )
    redraw.add_argument("results", type=Path, help="the JSON file `bench all` wrote")
    redraw.add_argument(
        "--chart", type=Path, default=Path("docs/benchmarks.svg"), help="the SVG chart written"
    )
    redraw.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.benchmark == "events":
        return _events(args)
    if args.benchmark == "backlog":
        from . import backlog

        backlog_options = backlog.BacklogOptions(messages=args.messages, timeout_s=args.timeout)
        return _measured(args, lambda: backlog.run(backlog_options))
    if args.benchmark == "load":
        from . import load

        load_options = load.LoadOptions(users=args.users, seconds=args.seconds, pause_s=args.pause)
        return _measured(args, lambda: load.run(load_options))
    if args.benchmark == "scale":
        from . import scale

        scale_options = scale.ScaleOptions(
            decisions=args.decisions, runs=args.runs, soak_s=args.soak
        )
        return _measured(args, lambda: scale.run(scale_options))
    if args.benchmark == "chart":
        from . import chart, goals

        stored = json.loads(args.results.read_text())
        found = goals.from_json(stored["goals"])
        title = chart.title(stored["run_at"], stored["machine"]["cpus"])
        args.chart.write_text(chart.svg(found, title))
        print(goals.as_markdown(found))
        return 0
    if args.benchmark == "all":
        from . import everything

        return everything.run(
            everything.RunOptions(quick=args.quick, out=args.out, chart=args.chart)
        )
    if args.benchmark == "commands":
        return _commands(args)
    if args.benchmark == "gate":
        return _gate(args)
    if args.benchmark == "forum":
        return _forum(args)
    if args.benchmark == "media":
        return _media(args)
    if args.benchmark == "federation":
        return _federation(args)
    options = RoundTripOptions(runs=args.runs, warmup=max(args.warmup, 0), timeout_s=args.timeout)
    try:
        result = asyncio.run(run(options))
    except Exception as exc:
        logging.getLogger("unityplan.bench").critical(
            "The benchmark could not set up its stack: %s", exc, exc_info=args.verbose
        )
        return EXIT_SETUP_FAILED
    print(json.dumps(report.as_json(result), indent=2) if args.json else report.as_text(result))
    if result.error and args.json:
        print(f"FAILED: {result.error}", file=sys.stderr)
    return EXIT_ROUND_TRIP_FAILED if result.error else 0


def _measured(args: argparse.Namespace, run_it: Callable[[], Coroutine[Any, Any, Any]]) -> int:
    """Run one benchmark, print its table; exit codes as in the module docstring."""
    try:
        result: Any = asyncio.run(run_it())
    except Exception as exc:
        logging.getLogger("unityplan.bench").critical(
            "The benchmark could not set up its stack: %s", exc, exc_info=args.verbose
        )
        return EXIT_SETUP_FAILED
    print(result.as_text())
    return EXIT_ROUND_TRIP_FAILED if result.error else 0


def _round_trip_options(args: argparse.Namespace) -> RoundTripOptions:
    return RoundTripOptions(runs=args.runs, warmup=max(args.warmup, 0), timeout_s=args.timeout)


def _commands(args: argparse.Namespace) -> int:
    from . import commands

    return _measured(args, lambda: commands.run(_round_trip_options(args)))


def _gate(args: argparse.Namespace) -> int:
    from . import gate

    return _measured(args, lambda: gate.run(_round_trip_options(args)))


def _forum(args: argparse.Namespace) -> int:
    from . import forum

    options = forum.ForumOptions(
        runs=args.runs,
        warmup=max(args.warmup, 0),
        timeout_s=args.timeout,
        transactions=args.transactions,
    )
    return _measured(args, lambda: forum.run(options))


def _federation(args: argparse.Namespace) -> int:
    from . import federation

    return _measured(args, lambda: federation.run(_round_trip_options(args)))


def _media(args: argparse.Namespace) -> int:
    from . import media

    options = media.MediaOptions(
        runs=args.runs,
        runs_large=args.runs_large,
        runs_huge=args.runs_huge,
        warmup=max(args.warmup, 0),
        timeout_s=args.timeout,
    )
    return _measured(args, lambda: media.run(options))


def _events(args: argparse.Namespace) -> int:
    from . import events

    options = events.EventsOptions(runs=args.runs, warmup=max(args.warmup, 0), burst=args.burst)
    try:
        result = asyncio.run(events.run(options))
    except TimeoutError:
        logging.getLogger("unityplan.bench").critical("An event was not acknowledged in time")
        return EXIT_ROUND_TRIP_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "events",
                    "unit": "ms",
                    "runs": options.runs,
                    "warmup": options.warmup,
                    "ours_ms": [round(v, 3) for v in result.ours_ms],
                    "plain_ms": [round(v, 3) for v in result.plain_ms],
                    "burst": options.burst,
                    "burst_ours_s": result.burst_ours_s,
                    "burst_plain_s": result.burst_plain_s,
                },
                indent=2,
            )
        )
    else:
        print(result.as_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
