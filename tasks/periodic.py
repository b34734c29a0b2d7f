"""Beat tasks: expire unanswered escalations, restart lost runs, sweep the outbox."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from orchestrator import service
from tasks import runtime
from tasks.app import app
from tasks.notify import notify
from tasks.steps import advance

log = logging.getLogger(__name__)

INBOUND_RETENTION = timedelta(hours=1)  # Slack retries for about 5 minutes; keep far longer
# Alertmanager re-sends for minutes (group_interval, retries, slow replicas); a resolved
# incident's row recognises those late copies, so it is kept far longer, then forgotten.
ALERT_RETENTION = timedelta(days=7)


@app.task(name="switchboard.expire_escalations")
def expire_escalations() -> list[int]:
    rt = runtime.get()
    expired = service.expire_escalations(rt.store)
    for escalation_id in expired:
        escalation = rt.store.escalation(escalation_id)
        run = rt.store.get_run(escalation.run_id) if escalation else None
        if run is not None:
            notify.delay(run.platform, [run.id])
    return expired


@app.task(name="switchboard.reap_stalled")
def reap_stalled() -> int:
    """A run whose step task was lost (a Redis restart, a crash before enqueue) moves again."""
    rt = runtime.get()
    stalled = rt.store.stalled_runs(rt.settings.stalled_after_s)
    for run_id, version in stalled:
        log.warning("run %s stalled at version %s; re-enqueueing", run_id, version)
        rt.store.touch(run_id)
        advance.delay(run_id, version)
    return len(stalled)


@app.task(name="switchboard.sweep_outbox")
def sweep_outbox() -> None:
    for platform in runtime.PORT_FACTORIES:
        notify.delay(platform)


@app.task(name="switchboard.prune_inbound")
def prune_inbound() -> int:
    return runtime.get().store.forget_inbound_before(datetime.now(UTC) - INBOUND_RETENTION)


@app.task(name="switchboard.prune_alerts")
def prune_alerts() -> int:
    from orchestrator.store.alerts import AlertStore

    cutoff = datetime.now(UTC) - ALERT_RETENTION
    return AlertStore(runtime.get().store).prune_resolved(cutoff)
