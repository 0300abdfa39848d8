"""Prometheus metrics of the event spine, registered on the appservice's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EventMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outbox_backlog = Gauge(
            "unityplan_outbox_backlog", "Outbox events not yet published", registry=registry
        )
        self.publish_lag = Histogram(
            "unityplan_outbox_publish_lag_seconds",
            "From the outbox row's creation to JetStream's PubAck",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.duplicates_dropped = Counter(
            "unityplan_outbox_duplicates",
            "Re-published events that JetStream recognised as duplicates",
            registry=registry,
        )
        self.consumed = Counter(
            "unityplan_events_consumed",
            "Events taken by durable consumers, by consumer and result",
            ["consumer", "result"],  # applied, already_processed, retried, dead_letter
            registry=registry,
        )
        self.redeliveries = Counter(
            "unityplan_consumer_redeliveries",
            "Deliveries of an event after its first, by consumer",
            ["consumer"],
            registry=registry,
        )
        self.rejected = Counter(
            "unityplan_events_rejected",
            "Events a consumer refused to believe (unsigned, wrongly signed, foreign subject)",
            ["consumer", "reason"],
            registry=registry,
        )
        self.answers_rejected = Counter(
            "unityplan_badge_check_answers_rejected",
            "badge.check answers not signed by the territory asked",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "unityplan_dead_letters",
            "Events given up on after max deliveries, by consumer",
            ["consumer"],
            registry=registry,
        )
