"""Step tasks: a task executes one unit of one run, then goes straight on to the next.

Each step is still its own transaction (the engine commits v(n+1) before the next step
starts), but the worker that holds a run does not pay a broker round trip per step: it
continues the run in process, the commit keeping the run's lease for the next step so
that step starts without a database round trip. It hands the run back to the queue only
when the run waits for a human, ends, has used its fairness slice (SWITCHBOARD_SLICE_STEPS
/ _SECONDS), a continued step fails, or the worker is shutting down (warm shutdown enqueues
the next step, so the run is picked up elsewhere). A worker killed mid-slice loses
nothing: the lease lapses and beat's reaper re-enqueues the run, exactly as for a worker
killed mid-step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Task, signals

from orchestrator import service
from orchestrator.engine import Outcome, StepOutcome
from orchestrator.intake import Caps
from orchestrator.store.models import RunStatus
from orchestrator.telemetry.tracing import carrier_from_celery_request
from tasks import bridge, runtime
from tasks.app import app
from tasks.notify import deliver_now

log = logging.getLogger(__name__)

MAX_STEP_RETRIES = 8


START_RETRIES = 5


@app.task(name="switchboard.start_run", bind=True, acks_late=True, max_retries=START_RETRIES)
def start_run(
    self: Task,
    *,
    request: str,
    team: str | None,
    platform: str,
    channel: str,
    thread: str | None,
    requester: str,
    origin_key: str,
    reply_to: dict[str, Any] | None = None,
) -> int | None:
    """Create the run (once per origin key, however often this is delivered) and step it.

    This runs after the platform was acked, so nothing may fail silently: a refused request
    is said to the user at once (through `reply_to`), and any other failure is retried and,
    if it persists, said too. Retrying is safe: the run is found again by its origin key.
    """
    run_id: int | None = None
    try:
        rt = runtime.get()
        run, _created = service.start_run(
            rt.store,
            rt.config,
            request=request,
            team=team,
            platform=platform,
            channel=channel,
            thread=thread,
            requester=requester,
            origin_key=origin_key,
            caps=Caps.from_settings(),  # counted again here: the bot's count raced others
        )
        run_id = run.id
        deliver_now(run.id, run.platform)
        if run.version == 0 and run.status == RunStatus.QUEUED:
            advance.delay(run.id, 0)
        return run.id
    except service.UserError as exc:
        runtime.tell(platform, reply_to, str(exc))
        return None
    except Exception as exc:
        retries = self.request.retries or 0
        if retries < START_RETRIES:
            log.warning("start of %s failed (%s); retrying", origin_key, type(exc).__name__)
            raise self.retry(exc=exc, countdown=min(30, 2**retries)) from exc
        log.exception("start of %s failed for good", origin_key)
        if run_id is not None:
            text = (
                f"Run {run_id} was saved but could not be queued ({type(exc).__name__}); "
                "it starts by itself once the queue recovers."
            )
        else:
            text = (
                f"Your run could not be started ({type(exc).__name__}); nothing was started. "
                "Try again in a minute; if it keeps failing, ask whoever runs Switchboard "
                "to check the worker's logs."
            )
        runtime.tell(platform, reply_to, text)
        return None


@app.task(name="switchboard.advance", bind=True, acks_late=True, max_retries=None)
def advance(self: Task, run_id: int, version: int) -> str:
    """Execute step `version` -> `version + 1` of a run, then go on with it for a slice;
    idempotent under redelivery."""
    rt = runtime.get()
    carrier = carrier_from_celery_request(self.request)
    try:
        # The whole slice is one coroutine on the process's loop: no thread handoff per step.
        handback = bridge.run(run_slice(rt, run_id, version, carrier or None))
    except Exception as exc:
        retries = self.request.retries or 0
        if retries >= MAX_STEP_RETRIES:
            log.exception("run %s step %s failed for good", run_id, version)
            fail_run(run_id, f"Internal error after {retries} retries: {type(exc).__name__}")
            return "failed"
        log.warning("run %s step %s: %s; retrying", run_id, version, type(exc).__name__)
        raise self.retry(exc=exc, countdown=min(60, 2**retries)) from exc
    outcome = handback.outcome
    if outcome.outcome is Outcome.BUSY and outcome.version == version:
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    if handback.countdown is not None:
        enqueue(outcome.run_id, outcome.version, outcome.trace_parent, handback.countdown)
    return str(outcome.outcome)


SHUTTING_DOWN = threading.Event()


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    SHUTTING_DOWN.set()


@dataclass(frozen=True)
class Handback:
    """Where a slice left the run; `countdown` set: enqueue its next step after that long."""

    outcome: StepOutcome
    countdown: float | None = None


async def run_slice(
    rt: runtime.Runtime, run_id: int, version: int, carrier: dict[str, str] | None = None
) -> Handback:
    """Step the run, then go on with it in this worker for one fairness slice.

    A step that will be followed by another keeps the run's lease through its commit
    (`hold_next`), so the next step starts without a round trip. The first step's failure
    propagates (the task retries it with backoff); a later one hands the run to the queue.
    """
    settings = rt.settings
    deadline = time.monotonic() + settings.slice_s

    def more(steps: int) -> bool:
        return (
            steps < settings.slice_steps
            and time.monotonic() < deadline
            and not SHUTTING_DOWN.is_set()
        )

    outcome = await rt.engine.step(run_id, version, carrier, hold_next=more(1))
    steps = 1
    while True:
        if outcome.outcome in (Outcome.BUSY, Outcome.DUPLICATE):
            return Handback(outcome)
        # The outcome carries the run's trace context and platform: no read after the commit.
        if outcome.platform is not None and runtime.may_deliver(outcome.platform):
            await asyncio.to_thread(deliver_now, outcome.run_id, outcome.platform)
        if outcome.outcome is not Outcome.ADVANCED:
            return Handback(outcome)
        if not more(steps):
            await rt.engine.release(outcome.run_id, outcome.version)
            return Handback(outcome, countdown=0.0)
        carrier = {"traceparent": outcome.trace_parent} if outcome.trace_parent else None
        try:
            following = await rt.engine.step(
                outcome.run_id, outcome.version, carrier, hold_next=more(steps + 1)
            )
        except Exception as exc:  # the queue retries it, with its backoff
            log.warning(
                "run %s step %s: %s; handing it to the queue",
                outcome.run_id,
                outcome.version,
                type(exc).__name__,
            )
            return Handback(outcome, countdown=1.0)
        if following.outcome is Outcome.BUSY:
            return Handback(outcome, countdown=following.retry_in)
        outcome, steps = following, steps + 1


def enqueue(
    run_id: int, version: int, traceparent: str | None = None, countdown: float | None = None
) -> None:
    """Hand a run's next step to the queue; its trace context travels in the headers."""
    headers = {"traceparent": traceparent} if traceparent else None
    advance.apply_async((run_id, version), headers=headers, countdown=countdown or None)


def fail_run(run_id: int, reason: str) -> None:
    """End a run that cannot make progress, and say so in its thread."""
    service.fail_run(runtime.get().store, run_id, reason)


@app.task(name="switchboard.resolve_escalation", bind=True, acks_late=True)
def resolve_escalation(self: Task, escalation_id: int, approve: bool, actor: dict[str, Any]) -> str:
    """Apply a decision from an adapter that prefers not to touch the database itself."""
    rt = runtime.get()
    result = service.decide(rt.store, rt.config, escalation_id, approve, service.Actor(**actor))
    if result.resume_version is not None and result.run_id is not None:
        advance.delay(result.run_id, result.resume_version)
    if result.run_id is not None:
        run = rt.store.get_run(result.run_id)
        if run is not None:
            deliver_now(run.id, run.platform)
    return result.outcome
