"""OpenTelemetry traces: one trace per run, carried across the Celery hop.

A run crosses processes: the bot accepts the command, a worker executes each step, the
notify task posts to chat. :func:`inject_context` puts the W3C ``traceparent`` into the
Celery task headers and :func:`extract_context` / :func:`use_context` continue the trace
in the worker, so a run shows up as one trace in Jaeger/Tempo.

Without ``OTEL_EXPORTER_OTLP_ENDPOINT`` nothing is exported and the span helpers cost
almost nothing (the API's no-op tracer); context still propagates.

Model spans follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "carrier_from_celery_request",
    "chat_delivery_span",
    "extract_context",
    "inject_context",
    "model_span",
    "record_model_usage",
    "run_span",
    "setup_tracing",
    "step_span",
    "tool_span",
    "use_context",
]

TRACER_NAME = "switchboard"
_PROPAGATION_KEYS = ("traceparent", "tracestate", "baggage")


def setup_tracing(
    service_name: str, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install a global TracerProvider exporting over OTLP/HTTP when configured.

    The OTLP exporter reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and ``..._HEADERS``) itself.
    Pass ``exporter`` to export elsewhere (tests use ``InMemorySpanExporter``; it is
    flushed synchronously). Returns None, leaving the no-op provider, when there is
    nowhere to send spans. Call once per process, at start-up: OpenTelemetry refuses to
    replace a global provider.
    """
    if exporter is None and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    resource = Resource.create({"service.name": service_name, "service.namespace": "switchboard"})
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _tracer() -> trace.Tracer:
    # Looked up per call so a provider installed after import is still used.
    return trace.get_tracer(TRACER_NAME)


@contextlib.contextmanager
def _span(
    name: str, attributes: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    with _tracer().start_as_current_span(
        name, kind=kind, attributes=dict(attributes), record_exception=True
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # error.type is the semantic-convention attribute dashboards group failures by.
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def run_span(
    run_id: str, team: str, *, name: str = "run"
) -> contextlib.AbstractContextManager[Span]:
    """Root span of a run: opened where the run is accepted (bot or start task)."""
    return _span(name, {"switchboard.run_id": run_id, "switchboard.team": team})


def step_span(
    run_id: str, step: int, team: str, node: str
) -> contextlib.AbstractContextManager[Span]:
    """Span around one step (checkpoint load → decide/act → commit) in a worker."""
    return _span(
        f"step {node}",
        {
            "switchboard.run_id": run_id,
            "switchboard.step": step,
            "switchboard.team": team,
            "switchboard.node": node,
        },
    )


def model_span(
    model: str, tier: str, *, provider: str | None = None, operation: str = "chat"
) -> contextlib.AbstractContextManager[Span]:
    """Client span of one gateway call; fill usage in with :func:`record_model_usage`."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "switchboard.model_tier": tier,
    }
    if provider:
        attributes["gen_ai.provider.name"] = provider
    return _span(f"{operation} {model}", attributes, kind=SpanKind.CLIENT)


def record_model_usage(
    span: Span,
    *,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    response_model: str | None = None,
) -> None:
    """Attach token usage and dollar cost to a model span once the reply is in."""
    span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
    span.set_attribute("switchboard.cost_usd", cost_usd)
    if response_model:
        span.set_attribute("gen_ai.response.model", response_model)


def tool_span(tool: str, *, run_id: str | None = None) -> contextlib.AbstractContextManager[Span]:
    """Span of one tool execution (sandboxed code, search, ...)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
    }
    if run_id:
        attributes["switchboard.run_id"] = run_id
    return _span(f"execute_tool {tool}", attributes)


def chat_delivery_span(
    platform: str, kind: str, *, run_id: str | None = None
) -> contextlib.AbstractContextManager[Span]:
    """Client span of one outbox notice posted or updated on a chat platform."""
    attributes: dict[str, Any] = {
        "switchboard.chat.platform": platform,
        "switchboard.notice.kind": kind,
    }
    if run_id:
        attributes["switchboard.run_id"] = run_id
    return _span(f"chat.deliver {kind}", attributes, kind=SpanKind.CLIENT)


def inject_context() -> dict[str, str]:
    """The current trace context as headers (``traceparent``…) for ``apply_async``.

    Usage: ``step.apply_async(args, headers=inject_context())``.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, Any] | None) -> Context:
    """Rebuild the caller's trace context from headers written by :func:`inject_context`."""
    clean = {k: str(v) for k, v in (carrier or {}).items() if k in _PROPAGATION_KEYS and v}
    return propagate.extract(clean)


def carrier_from_celery_request(request: object) -> dict[str, str]:
    """Find propagation headers on a Celery ``task.request``.

    Celery copies custom message headers onto the request object; depending on version
    and protocol they appear as attributes or under ``request.headers``.
    """
    carrier: dict[str, str] = {}
    headers = getattr(request, "headers", None)
    if isinstance(headers, Mapping):
        carrier.update({k: v for k, v in headers.items() if k in _PROPAGATION_KEYS and v})
    for key in _PROPAGATION_KEYS:
        value = getattr(request, key, None)
        if isinstance(value, str) and value and key not in carrier:
            carrier[key] = value
    return carrier


@contextlib.contextmanager
def use_context(carrier: Mapping[str, Any] | None) -> Iterator[Context]:
    """Make the extracted context current, so spans opened inside join the caller's trace."""
    ctx = extract_context(carrier)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)
