"""Trace context survives the Celery hop; spans carry GenAI attributes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestrator.telemetry import tracing

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    installed = tracing.setup_tracing("switchboard-test", exporter=_EXPORTER)
    assert installed is not None
    if trace.get_tracer_provider() is not installed:
        pytest.skip("another test installed a global TracerProvider first")
    return installed


@pytest.fixture()
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_no_endpoint_means_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.setup_tracing("switchboard-test") is None


def test_context_round_trips_through_task_headers(spans: InMemorySpanExporter) -> None:
    # Bot side: the run span is current when the task is enqueued.
    with tracing.run_span("run-1", "research") as root:
        sent = tracing.inject_context()
    assert sent["traceparent"].startswith("00-")

    # Worker side: a Celery request carries the headers as attributes.
    class FakeRequest:
        traceparent = sent["traceparent"]
        headers = None

    carrier = tracing.carrier_from_celery_request(FakeRequest())
    with tracing.use_context(carrier), tracing.step_span("run-1", 1, "research", "supervisor"):
        with tracing.model_span("gpt-4o-mini", "cheap", provider="openai") as model:
            tracing.record_model_usage(model, input_tokens=120, output_tokens=30, cost_usd=0.0004)
        with tracing.tool_span("python", run_id="run-1"):
            pass
    with tracing.use_context(carrier), tracing.chat_delivery_span("slack", "progress"):
        pass

    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {
        "run",
        "step supervisor",
        "chat gpt-4o-mini",
        "execute_tool python",
        "chat.deliver progress",
    }
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in finished.values()} == {trace_id}
    step = finished["step supervisor"]
    assert step.parent is not None
    assert step.parent.span_id == root.get_span_context().span_id
    assert step.attributes["switchboard.run_id"] == "run-1"
    assert step.attributes["switchboard.step"] == 1
    model_call = finished["chat gpt-4o-mini"]
    assert model_call.kind is SpanKind.CLIENT
    assert model_call.parent.span_id == step.context.span_id
    assert model_call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert model_call.attributes["gen_ai.usage.input_tokens"] == 120
    assert model_call.attributes["gen_ai.usage.output_tokens"] == 30
    assert model_call.attributes["switchboard.cost_usd"] == pytest.approx(0.0004)
    assert finished["chat.deliver progress"].parent.span_id == root.get_span_context().span_id


def test_headers_under_request_headers_are_found(spans: InMemorySpanExporter) -> None:
    with tracing.run_span("run-2", "research"):
        headers = tracing.inject_context()

    class FakeRequest:
        def __init__(self) -> None:
            self.headers = dict(headers)

    assert tracing.carrier_from_celery_request(FakeRequest()) == headers


def test_failed_span_records_error_type(spans: InMemorySpanExporter) -> None:
    with pytest.raises(TimeoutError), tracing.model_span("gpt-4o", "premium"):
        raise TimeoutError("provider timed out")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "TimeoutError"
    assert any(e.name == "exception" for e in span.events)


def test_extract_ignores_garbage() -> None:
    ctx = tracing.extract_context({"traceparent": "not-a-traceparent", "other": "x"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert not trace.get_current_span(tracing.extract_context(None)).get_span_context().is_valid
