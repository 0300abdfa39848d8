"""Prometheus metrics of one appservice instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from commands.router import CommandMetrics, Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics(CommandMetrics):
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.transactions = Counter(
            "unityplan_transactions",
            "Appservice transactions received from the homeserver, by result",
            ["result"],  # handled, replayed, unauthorized, forbidden, bad_request
            registry=self.registry,
        )
        self.transaction_seconds = Histogram(
            "unityplan_transaction_seconds",
            "Time from receiving a transaction to answering it",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "unityplan_events",
            "Matrix events from transactions, by type and result",
            ["type", "result"],  # handled, retried, dead, dropped_echo
            registry=self.registry,
        )
        self.inbox = Gauge(
            "unityplan_inbox_events",
            "Events in the inbox by state (pending, done, failed: waiting for a retry, dead)",
            ["state"],
            registry=self.registry,
        )
        self.commands = Counter(
            "unityplan_commands",
            "Bot commands, by command and outcome",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "unityplan_command_seconds",
            "Time to handle a bot command, reply included",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, command: str, outcome: Outcome, seconds: float) -> None:
        self.commands.labels(command, outcome.value).inc()
        self.command_seconds.labels(command).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
