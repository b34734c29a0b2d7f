"""Outbox delivery: inline after a step when this process has the platform's port, and as a
task (with countdown) to retry after a 429 or hand delivery to a process that has one."""

from __future__ import annotations

import logging

from celery import Task

from orchestrator.outbox import OutboxSender
from tasks import runtime
from tasks.app import app

log = logging.getLogger(__name__)


def deliver_now(run_id: int, platform: str) -> None:
    """Drain this run's outbox if a port is here; schedule a retry if something must wait."""
    port = runtime.port_for(platform)
    if port is None:
        return
    result = OutboxSender(runtime.get().store, port, platform).drain(run_ids=[run_id])
    if result.retry_in is not None:
        notify.apply_async(args=[platform, [run_id]], countdown=result.retry_in)


@app.task(name="switchboard.notify", bind=True, acks_late=True, max_retries=None)
def notify(self: Task, platform: str, run_ids: list[int] | None = None) -> int:
    port = runtime.port_for(platform)
    if port is None:
        return 0
    result = OutboxSender(runtime.get().store, port, platform).drain(run_ids=run_ids)
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in)
    return result.delivered
