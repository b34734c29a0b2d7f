"""Neutral notices: what the core wants said in a chat thread, with no platform in sight.

Adapters render a Notice into Block Kit, a discord.py view, or console lines. Notices are
stored as JSON in the outbox, so they are plain frozen data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    OPENED = "opened"  # the run's opening message; its ref becomes the thread
    PROGRESS = "progress"  # one message per run, updated in place
    HIGHLIGHT = "highlight"  # a worker's or the supervisor's notable output
    NOTE = "note"  # news people in the thread must read (an alert resolved); always posted
    RESULT = "result"  # the final answer (or the partial results of an aborted run)
    ESCALATION = "escalation"  # a question with Approve / Abort actions
    DECISION = "decision"  # an escalation answered; updates the escalation message
    ERROR = "error"  # the run failed; says why
    REQUEST = "request"  # the whole text of a long request, in the thread under the opening


@dataclass(frozen=True)
class Action:
    """A button: `action_id` is stable per platform, `value` carries the escalation id."""

    action_id: str
    label: str
    value: str
    style: str = "default"  # primary | danger | default
    confirm: str | None = None


APPROVE = "escalation_approve"
ABORT = "escalation_abort"
REJECT = "escalation_reject"  # a tool call refused (or skipped); the run goes on
APPROVE_NOTE = "escalation_approve_note"  # Approve with guidance the supervisor reads


@dataclass(frozen=True)
class Notice:
    kind: Kind
    run_id: int
    title: str
    body: str = ""
    figures: dict[str, str] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    escalation_id: int | None = None
    outcome: str | None = None  # for RESULT / OPENED updates: finished | aborted | failed
    requester: str | None = None
    # Structured facts the renderers prefer to parsing titles. The outbox fills them from the
    # database at delivery time when the engine did not: who decided or aborted (a platform
    # user id, shown as a name), when (epoch seconds, shown in the reader's time zone), which
    # guard paused the run, the request as typed, and the living progress view (a
    # `orchestrator.progress.View` as JSON).
    actor: str | None = None
    at: float | None = None
    guard: str | None = None
    request: str | None = None
    view: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        values = dict(data)
        values["kind"] = Kind(values["kind"])
        values["actions"] = tuple(Action(**a) for a in values.get("actions", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def escalation_actions(
    escalation_id: int, grant: str, *, approve_label: str | None = None
) -> tuple[Action, ...]:
    value = str(escalation_id)
    return (
        Action(APPROVE, approve_label or f"Approve ({grant})", value, style="primary"),
        Action(APPROVE_NOTE, "Approve with note…", value),
        Action(
            ABORT,
            "Abort",
            value,
            style="danger",
            confirm="Abort this run? Partial results are posted.",
        ),
    )
