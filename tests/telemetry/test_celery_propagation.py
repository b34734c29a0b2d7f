"""Trace context crosses a real Celery hop (kombu in-memory broker, a real worker thread)."""

from __future__ import annotations

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from orchestrator.telemetry import tracing


@pytest.fixture()
def celery_app() -> Celery:
    app = Celery("propagation-test", broker="memory://", backend="cache+memory://")
    app.conf.update(task_always_eager=False, worker_hijack_root_logger=False)
    return app


def test_traceparent_in_task_headers_reaches_the_worker(celery_app: Celery) -> None:
    @celery_app.task(bind=True, name="test.step")
    def step(self) -> dict[str, str]:
        carrier = tracing.carrier_from_celery_request(self.request)
        with tracing.use_context(carrier):
            ctx = trace.get_current_span().get_span_context()
        return {"carrier": carrier.get("traceparent", ""), "trace_id": f"{ctx.trace_id:032x}"}

    tracer = TracerProvider().get_tracer("test")
    with (
        start_worker(celery_app, pool="solo", perform_ping_check=False),
        tracer.start_as_current_span("bot: start run") as span,
    ):
        headers = tracing.inject_context()
        result = step.apply_async(headers=headers).get(timeout=20)
    assert result["carrier"] == headers["traceparent"]
    assert result["trace_id"] == f"{span.get_span_context().trace_id:032x}"
