"""The Celery app: at-least-once delivery, made safe by idempotent steps.

acks_late + reject_on_worker_lost redeliver a step whose worker died mid-way; the run's
lease keeps a redelivery from running beside a still-living first attempt (the Redis
visibility-timeout trap), and the unique (run, version) makes the slower copy a no-op.
With no BROKER_URL the same tasks run in-process on kombu's memory transport.
"""

from __future__ import annotations

from celery import Celery

from orchestrator.settings import get_settings

VISIBILITY_TIMEOUT_S = (
    3600  # longer than the longest step (model timeout 60 s x retries, plus fallbacks)
)


def make_app() -> Celery:
    settings = get_settings()
    app = Celery(
        "switchboard", include=["tasks.steps", "tasks.notify", "tasks.periodic", "tasks.signals"]
    )
    app.conf.update(
        broker_url=settings.broker_url or "memory://localhost/",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            # The embedded memory transport polls; keep its hop far below a model call.
            **({} if settings.broker_url else {"polling_interval": 0.01}),
        },
        task_default_queue="switchboard",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        beat_schedule={
            "expire-escalations": {
                "task": "switchboard.expire_escalations",
                "schedule": settings.beat_interval_s,
            },
            "reap-stalled-runs": {
                "task": "switchboard.reap_stalled",
                "schedule": settings.beat_interval_s,
            },
            "sweep-outbox": {"task": "switchboard.sweep_outbox", "schedule": 15.0},
            "prune-inbound-events": {"task": "switchboard.prune_inbound", "schedule": 3600.0},
            "prune-alert-groups": {"task": "switchboard.prune_alerts", "schedule": 3600.0},
        },
    )
    return app


app = make_app()


def use_broker(url: str) -> None:
    """Point this process's producer at another broker (benchmarks and tests)."""
    app.conf.broker_url = url
    app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    # Celery caches the connection and producer pools it built for the old URL.
    app._pool = None
    app.amqp._producer_pool = None
