"""The tool ledger: a tool call is recorded before it runs and its result the moment it returns.

Each write commits on its own, durably, outside the step's transaction: the record must
survive a crash of the step that made it, so a re-executed step replays the result, or sees
a call that started and never reported (in doubt) and asks a human instead of calling twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.store.models import Escalation, ToolCallRecord, ToolCallStatus
from orchestrator.store.repository import Store


@dataclass(frozen=True)
class Origin:
    """Where the model asked for the call: its reply's step and call index, and the call's
    position in that reply. Replies are replayed, so the same call has the same origin."""

    step: int
    index: int
    position: int


class ToolLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, run_id: int, origin: Origin) -> ToolCallRecord | None:
        with self.store.session() as session:
            return session.scalars(
                select(ToolCallRecord).where(
                    ToolCallRecord.run_id == run_id,
                    ToolCallRecord.origin_step == origin.step,
                    ToolCallRecord.origin_index == origin.index,
                    ToolCallRecord.position == origin.position,
                )
            ).one_or_none()

    def start(
        self,
        run_id: int,
        origin: Origin,
        *,
        step: int,
        worker: str,
        tool: str,
        server: str | None,
        arguments: str,
        decision: str,
        decided_by: str | None,
    ) -> ToolCallRecord | None:
        """Record the call as started; None if a concurrent execution recorded it first."""
        try:
            parsed: Any = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            parsed = {"_raw": arguments[:4000]}
        record = ToolCallRecord(
            run_id=run_id,
            origin_step=origin.step,
            origin_index=origin.index,
            position=origin.position,
            step=step,
            worker=worker,
            tool=tool,
            server=server,
            arguments=parsed if isinstance(parsed, dict) else {"_value": parsed},
            status=ToolCallStatus.STARTED,
            decision=decision,
            decided_by=decided_by,
        )
        try:
            with self.store.session() as session:
                session.add(record)
                session.flush()
                session.expunge(record)
        except IntegrityError:
            return None
        return record

    def restart(self, record_id: int, step: int) -> None:
        """A call in doubt that a human chose to run again."""
        with self.store.session() as session:
            session.execute(
                update(ToolCallRecord)
                .where(ToolCallRecord.id == record_id)
                .values(
                    attempts=ToolCallRecord.attempts + 1,
                    step=step,
                    started_at=datetime.now(UTC),
                    decision="retried",
                )
            )

    def finish(self, record_id: int, result: str, *, decision: str | None = None) -> None:
        values: dict[str, Any] = {
            "status": ToolCallStatus.DONE,
            "result": result,
            "finished_at": datetime.now(UTC),
        }
        if decision is not None:
            values["decision"] = decision
        with self.store.session() as session:
            session.execute(
                update(ToolCallRecord).where(ToolCallRecord.id == record_id).values(**values)
            )

    def for_run(self, run_id: int) -> list[ToolCallRecord]:
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(ToolCallRecord)
                    .where(ToolCallRecord.run_id == run_id)
                    .order_by(ToolCallRecord.id)
                )
            )

    def escalation_at(self, run_id: int, version: int) -> Escalation | None:
        """The escalation a step opened (the pause the next step resumes from)."""
        with self.store.session() as session:
            return session.scalars(
                select(Escalation)
                .where(Escalation.run_id == run_id, Escalation.version == version)
                .order_by(Escalation.id.desc())
            ).first()
