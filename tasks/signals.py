"""Process-level wiring for Celery processes: metrics endpoints, tracing, multiprocess cleanup.

Each long-running process serves /metrics on METRICS_PORT. Only beat registers the state
collector (database and broker figures), so those gauges are not scraped once per worker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import signals
from sqlalchemy import func, select

from orchestrator.settings import get_settings
from orchestrator.store.models import Escalation, EscalationStatus, Run, RunStatus
from orchestrator.telemetry import metrics
from orchestrator.telemetry.tracing import setup_tracing

log = logging.getLogger(__name__)
QUEUE = "switchboard"


def _serve(service: str) -> None:
    settings = get_settings()
    setup_tracing(service)
    if settings.metrics_port:
        metrics.serve_metrics(settings.metrics_port)
        log.info("%s serves /metrics on :%s", service, settings.metrics_port)


def state_snapshot() -> metrics.StateSnapshot:
    """Read the figures that live in the database and the broker, at scrape time."""
    from tasks import runtime

    rt = runtime.get()
    moment = datetime.now(UTC)
    with rt.store.sessions() as session:
        pending = session.execute(
            select(func.count(), func.min(Escalation.created_at)).where(
                Escalation.status == EscalationStatus.PENDING
            )
        ).one()
        active = dict(
            session.execute(
                select(Run.status, func.count())
                .where(Run.status.notin_(list(RunStatus.TERMINAL)))
                .group_by(Run.status)
            ).all()
        )
    oldest = pending[1]
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    depth: dict[str, int] = {}
    if rt.settings.broker_url and rt.settings.broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(rt.settings.broker_url, socket_timeout=2)
        depth[QUEUE] = int(client.llen(QUEUE))
    budgets = {
        name: team.limits.max_dollars_per_team_day
        for name, team in rt.config.teams.items()
        if team.limits.max_dollars_per_team_day is not None
    }
    return metrics.StateSnapshot(
        escalations_pending=int(pending[0]),
        escalation_oldest_age_seconds=(moment - oldest).total_seconds() if oldest else 0.0,
        queue_depth=depth,
        runs_active=active,
        team_daily_budget_dollars=budgets,
    )


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    _serve("switchboard-worker")


@signals.worker_process_shutdown.connect
def _worker_process_shutdown(pid: int | None = None, **kwargs: Any) -> None:
    metrics.celery_process_shutdown(pid, **kwargs)


@signals.beat_init.connect
def _beat_init(**_: Any) -> None:
    from tasks import runtime

    runtime.without_tools()  # beat reads gauges; it must not start MCP servers
    _serve("switchboard-beat")
    metrics.register_state_collector(state_snapshot)
