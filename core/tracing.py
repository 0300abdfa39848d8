"""OpenTelemetry traces (seed section 9.3): one trace from a homeserver transaction through the
event's handling and its database transaction, the effects it queued (delivered later by the
effect sender) and the domain events it emitted (published later by the relay, consumed by every
territory's consumers), exported over OTLP/HTTP when ``tracing.otlp_endpoint`` is set.

Off by default: without an endpoint the API's no-op tracer makes every span free. The trace
context crosses the queues as W3C ``traceparent`` text: in an effect's payload (``_trace``), in
the outbox row and from there in the NATS message headers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span

TRACER_NAME = "unityplan"
TRACE_KEY = "_trace"  # where an effect's payload keeps the context of what queued it

_provider: Any = None


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def setup_tracing(service_name: str, otlp_endpoint: str | None, export_delay_ms: int) -> bool:
    """Export spans to ``otlp_endpoint`` (OTLP/HTTP, e.g. http://collector:4318); once per
    process. Returns whether tracing is on."""
    global _provider
    if not otlp_endpoint:
        return False
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Send what is buffered (at stop)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def current_context() -> dict[str, str]:
    """The active trace context as W3C headers (``traceparent``), {} when no span is recording."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


@contextmanager
def span(
    name: str,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span; under ``parent`` (headers of ``current_context``) when given, so work that left a
    queue continues the trace of what queued it."""
    token = None
    if parent:
        token = otel_context.attach(propagate.extract(dict(parent)))
    try:
        with tracer().start_as_current_span(
            name, attributes={k: v for k, v in (attributes or {}).items() if v is not None}
        ) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)
