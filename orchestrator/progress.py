"""The living progress view of a run: one checklist that every adapter renders in place.

Built from what is durable (the run, its steps with their own tokens, cost and duration,
the worker reports, a pending escalation) rather than from the last notice, so the view
is right whichever notice triggered it, includes the step that just ended, and can be
finalised from the run's outcome when the answer goes out. Plain frozen data with a JSON
form, because it travels inside a Notice to ports in other processes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator import wording
from orchestrator.store.models import RunStatus
from orchestrator.store.progress import RunFacts

# Item states, as Slack's task cards name them.
DONE = "complete"
WORKING = "in_progress"
PENDING = "pending"
FAILED = "error"

# View states.
QUEUED = "queued"
RUNNING = "working"
PAUSED = "paused"
FINISHED = "finished"
ABORTED = "aborted"
ENDED_FAILED = "failed"
ENDED = frozenset({FINISHED, ABORTED, ENDED_FAILED})

REPORT_CHARS = 280  # a glimpse of a worker's report; the answer carries the full text
TITLE_CHARS = 160

_ASSIGNED = re.compile(r"^Supervisor assigned (.*)$", re.S)
_REVIEW = re.compile(r" \(review of ([^:]+): (accepted|rejected)\)$")
_PAUSED = re.compile(r"^Paused by (\w+): (.*)$", re.S)
_ROUTED = re.compile(r"^Team (\S+) chosen by the router$")


@dataclass(frozen=True)
class Item:
    """One line of the checklist: a step of the run, or the step now in flight."""

    id: str
    title: str
    status: str
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class View:
    run_id: int
    team: str | None
    state: str
    items: tuple[Item, ...] = ()
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    waiting_for: str | None = None  # while paused: what a person must decide
    ended_by: str | None = None  # a user id: who aborted the run
    ended_reason: str | None = None  # why it ended, when not by a person
    earlier: int = 0  # items left out at the top to keep the view short

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> View:
        values = dict(data)
        values["items"] = tuple(Item(**item) for item in values.get("items", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class _Builder:
    facts: RunFacts
    items: list[Item] = field(default_factory=list)

    def step_items(self) -> None:
        reports: dict[int, list[str]] = {}
        for report in self.facts.reports:
            reports.setdefault(report.version, []).append(report.body)
        for step in self.facts.steps:
            title, status = _step_title(step.node, step.summary)
            detail = ""
            if step.node in ("worker", "fanout") and reports.get(step.version):
                detail = "\n".join(
                    wording.excerpt(body, REPORT_CHARS)[0] for body in reports[step.version]
                )
            self.items.append(
                Item(
                    id=str(step.version),
                    title=wording.excerpt(title, TITLE_CHARS)[0],
                    status=status,
                    tokens=step.tokens_in + step.tokens_out,
                    cost=step.cost_usd,
                    seconds=step.latency_ms / 1000,
                    detail=detail,
                )
            )


def _step_title(node: str, summary: str) -> tuple[str, str]:
    summary = summary.strip()
    if node == "router":
        routed = _ROUTED.match(summary)
        return (f"Router chose team {routed.group(1)}" if routed else summary), DONE
    if node == "supervisor":
        assigned = _ASSIGNED.match(summary)
        if assigned:
            text = assigned.group(1)
            review = _REVIEW.search(text)
            if review:
                text = text[: review.start()]
                verdict = "accepted" if review.group(2) == "accepted" else "sent back"
                return f"Reviewed {review.group(1)} ({verdict}); assigned {text}", DONE
            return f"Assigned {text}", DONE
        return summary, DONE
    if node == "guard":
        paused = _PAUSED.match(summary)
        if paused:
            return f"Paused: {wording.pause_reason(paused.group(1), paused.group(2))}", DONE
        return summary, DONE
    if node == "end":
        return summary, FAILED
    return summary, DONE


def _in_flight(facts: RunFacts) -> Item | None:
    """What the team is doing now, said from the last step it finished."""
    run = facts.run
    number = str((facts.steps[-1].version if facts.steps else 0) + 1)
    if not facts.steps:
        what = "Routing the request to a team" if not run.team else "Supervisor is planning"
        return Item(number, what, WORKING)
    last = facts.steps[-1]
    if last.node == "supervisor":
        assigned = _ASSIGNED.match(last.summary.strip())
        if assigned:
            text = _REVIEW.sub("", assigned.group(1))
            names = [part.split(":", 1)[0].strip() for part in text.split("; ")]
            who = ", ".join(n for n in names if n) or "the workers"
            verb = "is" if len(names) == 1 else "are"
            return Item(number, f"{who} {verb} working on it", WORKING)
    if last.node in ("worker", "fanout"):
        return Item(number, "Supervisor is reviewing the report", WORKING)
    return Item(number, "Supervisor is deciding what comes next", WORKING)


def build(facts: RunFacts, *, max_items: int = 20, now: datetime | None = None) -> View:
    """The view of one run as its facts stand; `max_items` keeps the newest lines."""
    run = facts.run
    builder = _Builder(facts)
    builder.step_items()
    items = builder.items
    state = {
        RunStatus.QUEUED: QUEUED,
        RunStatus.RUNNING: RUNNING,
        RunStatus.AWAITING_APPROVAL: PAUSED,
        RunStatus.FINISHED: FINISHED,
        RunStatus.ABORTED: ABORTED,
        RunStatus.FAILED: ENDED_FAILED,
    }.get(run.status, RUNNING)
    waiting_for = None
    if state == PAUSED and facts.pause is not None:
        waiting_for = wording.pause_reason(facts.pause.guard, facts.pause.reason)
    elif state in (QUEUED, RUNNING):
        flight = _in_flight(facts)
        if flight is not None:
            items.append(flight)
    ended_by = facts.ended_by if state == ABORTED else None
    reason = None
    if state in (ABORTED, ENDED_FAILED) and run.error and not ended_by:
        reason = run.error
    moment = now or datetime.now(UTC)
    last = facts.steps[-1].finished_at if facts.steps else None
    end = (last or run.updated_at) if state in ENDED else moment
    seconds = max(0.0, (end - run.created_at).total_seconds()) if run.created_at else 0.0
    earlier = max(0, len(items) - max_items)
    return View(
        run_id=run.id,
        team=run.team,
        state=state,
        items=tuple(items[earlier:]),
        tokens=sum(s.tokens_in + s.tokens_out for s in facts.steps),
        cost=sum(s.cost_usd for s in facts.steps),
        seconds=seconds,
        waiting_for=waiting_for,
        ended_by=ended_by,
        ended_reason=reason,
        earlier=earlier,
    )


def headline(view: View) -> str:
    """The view's one-line state in words, without marks: every adapter adds its own."""
    team = f"team {view.team}" if view.team else "choosing a team"
    if view.state == QUEUED:
        return f"Queued · {team}"
    if view.state == RUNNING:
        return f"Working · {team}"
    if view.state == PAUSED:
        return f"Paused, waiting for approval: {view.waiting_for or 'a decision'}"
    return f"{view.state.capitalize()} · {team}"


def totals(view: View) -> str:
    """Steps, tokens, dollars and time so far (or in all, once the run ended)."""
    steps = sum(1 for item in view.items if item.status != WORKING) + view.earlier
    parts = [f"{steps} step{'s' if steps != 1 else ''}"]
    if view.tokens:
        parts.append(wording.tokens(view.tokens))
    if view.cost:
        parts.append(wording.money(view.cost))
    parts.append(wording.duration(view.seconds))
    return " · ".join(parts)


def item_figures(item: Item) -> str:
    """A step's own spend and time: empty for a step that cost nothing (routing by rule)."""
    parts = []
    if item.tokens:
        parts.append(wording.tokens(item.tokens))
    if item.cost:
        parts.append(wording.money(item.cost))
    if item.status != WORKING and item.seconds:
        parts.append(wording.duration(item.seconds))
    return " · ".join(parts)
