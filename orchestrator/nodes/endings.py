"""How a step ends a run or pauses it for a human: the result notices and escalation rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import guards, wording
from orchestrator import state as st
from orchestrator.guards import Verdict
from orchestrator.nodes.context import NodeResult, StepContext, figure_strings
from orchestrator.notices import Action, Kind, Notice, escalation_actions
from orchestrator.store.models import RunStatus

RETRYABLE_PAUSES = frozenset({"protocol_failure", "provider_failure"})


def end(
    ctx: StepContext,
    status: str,
    reason: str,
    *,
    answer: str | None = None,
    updates: list[dict[str, Any]] | None = None,
) -> NodeResult:
    updates = list(updates or [])
    if status == RunStatus.FINISHED:
        notice = Notice(
            Kind.RESULT,
            ctx.run.id,
            "Finished",
            body=answer or "",
            outcome="finished",
            figures=figure_strings(ctx),
            requester=ctx.run.requester,
        )
        return NodeResult(
            node="supervisor",
            summary="Supervisor finished",
            updates=updates,
            status=status,
            notices=(notice,),
            answer=answer,
        )
    # A failed run keeps `next`, so `/agent retry` runs the failed node again.
    updates.append(
        {"error": reason} if status == RunStatus.FAILED else {"next": "done", "error": reason}
    )
    kind = Kind.ERROR if status == RunStatus.FAILED else Kind.RESULT
    notice = Notice(
        kind,
        ctx.run.id,
        "Failed" if status == RunStatus.FAILED else "Aborted",
        body=reason + partial_results(ctx.state),
        outcome=status,
        requester=ctx.run.requester,
    )
    return NodeResult(
        node="end",
        summary=reason,
        updates=updates,
        status=status,
        notices=(notice,),
        error=reason,
    )


def escalate(ctx: StepContext, verdict: Verdict) -> NodeResult:
    retry = verdict.guard in RETRYABLE_PAUSES
    grant = "retry" if retry else guards.describe_grant(verdict.grant)
    expires = datetime.now(UTC) + timedelta(seconds=ctx.services.escalation_ttl_s)
    what = wording.pause_reason(verdict.guard, verdict.reason)
    follow = (
        "Retry asks the model again; Abort ends the run with its partial results."
        if retry
        else f"Approve grants {grant}; Abort ends the run with its partial results."
    )
    notice = Notice(
        Kind.ESCALATION,
        ctx.run.id,
        f"Run {ctx.run.id} paused: {what}",
        body=f"{verdict.reason}\n{follow}",
        figures=verdict.figures,
        actions=_actions(retry, grant),
        requester=ctx.run.requester,
        guard=verdict.guard,
    )
    escalation = {
        "guard": verdict.guard,
        "reason": verdict.reason,
        "figures": verdict.figures,
        "grant": verdict.grant,
        "expires_at": expires,
    }
    ctx.details["guard"] = verdict.guard
    return NodeResult(
        node="guard",
        summary=f"Paused by {verdict.guard}: {verdict.reason}",
        updates=[],
        status=RunStatus.AWAITING_APPROVAL,
        notices=(notice,),
        escalation=escalation,
    )


def _actions(retry: bool, grant: str) -> tuple[Action, ...]:
    approve, note, abort = escalation_actions(0, grant, approve_label="Retry" if retry else None)
    return (approve, abort) if retry else (approve, note, abort)


def partial_results(state: st.State) -> str:
    """The latest output of each worker, for an aborted or failed run."""
    latest = {w: outputs[-1]["text"] for w, outputs in state.get("outputs", {}).items() if outputs}
    if not latest:
        return ""
    return "\n\nPartial results:\n" + "\n".join(f"- {w}: {text}" for w, text in latest.items())
