"""Read-only queries behind what people see: the living progress view and recent-run lists.

Nothing here writes. The progress view is rebuilt from durable facts (the run row, its
`steps`, the worker reports already queued as highlights, a pending escalation, the audit
trail), so any process can render it and a redelivered notice renders the same view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from orchestrator.notices import Kind
from orchestrator.store.models import (
    AuditEntry,
    Escalation,
    EscalationStatus,
    OutboxItem,
    OutboxStatus,
    Run,
    Step,
)
from orchestrator.store.repository import Store


@dataclass(frozen=True)
class Report:
    """A worker's report as the engine queued it for the thread (a HIGHLIGHT notice)."""

    version: int
    title: str
    body: str


@dataclass(frozen=True)
class Pause:
    escalation_id: int
    guard: str
    reason: str
    grant: dict[str, float]


@dataclass(frozen=True)
class RunFacts:
    run: Run
    steps: list[Step]
    reports: list[Report]
    pause: Pause | None
    ended_by: str | None  # the person who aborted the run, when one did


def run_facts(store: Store, run_id: int) -> RunFacts | None:
    """Everything the progress view shows, read in one short session."""
    with store.sessions() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        steps = list(
            session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.version))
        )
        rows = session.execute(
            select(OutboxItem.key, OutboxItem.payload)
            .where(OutboxItem.run_id == run_id, OutboxItem.kind == str(Kind.HIGHLIGHT))
            .order_by(OutboxItem.id)
        ).all()
        pending = session.scalar(
            select(Escalation)
            .where(Escalation.run_id == run_id, Escalation.status == EscalationStatus.PENDING)
            .order_by(Escalation.id.desc())
            .limit(1)
        )
        ended_by = session.scalar(
            select(AuditEntry.actor)
            .where(AuditEntry.run_id == run_id, AuditEntry.outcome == "aborted")
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
        session.expunge_all()
    reports = [
        Report(_version_of(key), str(payload.get("title", "")), str(payload.get("body", "")))
        for key, payload in rows
    ]
    pause = (
        Pause(pending.id, pending.guard, pending.reason, dict(pending.grant or {}))
        if pending is not None
        else None
    )
    return RunFacts(run, steps, reports, pause, ended_by)


def _version_of(key: str) -> int:
    """Outbox keys are `run:version:kind:index` for a step's notices."""
    parts = key.split(":")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return 0


def final_delivered(store: Store, run_id: int) -> bool:
    """The run's final message (answer, abort or failure) is out: its view is finished."""
    with store.sessions() as session:
        return (
            session.scalar(
                select(OutboxItem.id)
                .where(
                    OutboxItem.run_id == run_id,
                    OutboxItem.kind.in_([str(Kind.RESULT), str(Kind.ERROR)]),
                    OutboxItem.status == OutboxStatus.SENT,
                )
                .limit(1)
            )
            is not None
        )


def recent_runs_of(
    store: Store, requester: str, *, platform: str | None = None, limit: int = 10
) -> list[Run]:
    """A person's newest runs, across every session and channel they used."""
    with store.sessions() as session:
        query = select(Run).where(Run.requester == requester)
        if platform is not None:
            query = query.where(Run.platform == platform)
        runs = list(session.scalars(query.order_by(Run.id.desc()).limit(limit)))
        session.expunge_all()
    return runs


def escalation_decision(
    store: Store, escalation_id: int
) -> tuple[str | None, datetime | None, str | None]:
    """Who decided an escalation, when, and which guard had paused the run."""
    with store.sessions() as session:
        row = session.get(Escalation, escalation_id)
        if row is None:
            return None, None, None
        return row.decided_by, row.decided_at, row.guard
