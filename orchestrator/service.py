"""What adapters may ask of the core: start, inspect, abort, and decide escalations.

Adapters call these with plain values and enqueue step tasks themselves (through tasks/),
so the core never imports the queue or a chat SDK. A change a human (or beat) makes to a run
commits in one transaction with its audit record and the thread messages that announce it:
whatever dies afterwards, the thread says what happened, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from orchestrator import intake, reports
from orchestrator.errors import UserError
from orchestrator.intake import Caps
from orchestrator.nodes.endings import RETRYABLE_PAUSES, partial_results
from orchestrator.nodes.tools import APPROVAL as TOOL_APPROVAL
from orchestrator.nodes.tools import IN_DOUBT as TOOL_IN_DOUBT
from orchestrator.notices import Kind, Notice
from orchestrator.store.models import AuditEntry, Escalation, EscalationStatus, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig
from orchestrator.telemetry import metrics
from orchestrator.telemetry.tracing import inject_context, run_span


@dataclass(frozen=True)
class Actor:
    """Who is acting, where: used for authorisation and the audit trail."""

    user: str
    platform: str
    channel: str | None = None
    groups: tuple[str, ...] = ()  # Slack user groups or Discord roles the user holds


BEAT = Actor(user="switchboard", platform="beat")
RETRYABLE_GUARDS = RETRYABLE_PAUSES
TOOL_GUARDS = frozenset({TOOL_APPROVAL, TOOL_IN_DOUBT})


class DecisionOutcome(StrEnum):
    APPLIED = "applied"
    UNAUTHORISED = "unauthorised"
    ALREADY_DECIDED = "already_decided"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class DecisionResult:
    outcome: DecisionOutcome
    message: str
    run_id: int | None = None
    resume_version: int | None = None  # set when a step must be enqueued
    people: tuple[str, ...] = ()  # user ids in `message`, for adapters to show as names


def opened_notice(request: str, requester: str, team: str | None) -> Notice:
    title = f"Run for {requester}: {request}"
    return Notice(Kind.OPENED, 0, title, figures={"team": team or "routing"}, requester=requester)


def validate_request(
    config: TeamsConfig, request: str, team: str | None, *, caps: Caps | None = None
) -> str:
    """The request as it will be stored, or UserError saying what is wrong with it."""
    caps = caps or Caps.from_settings()
    cleaned = intake.clean_text(request, limit=caps.request_chars)
    if not cleaned:
        raise UserError("The request is empty. Try: /agent <what you need>")
    if team is not None and team not in config.teams:
        intake.check_text(team, what="team name")
        known = ", ".join(sorted(config.teams))
        raise UserError(f"Unknown team {intake.strip_controls(team)[:64]!r}. Teams: {known}")
    return cleaned


def check_capacity(
    store: Store, *, platform: str, channel: str, requester: str, caps: Caps | None = None
) -> None:
    """Refuse a run over the per-user or per-channel cap (adapters ask before queueing, to
    answer at once; the start counts again, in the transaction that creates the run)."""
    with store.sessions() as session:
        intake.check_capacity(
            session,
            caps or Caps.from_settings(),
            platform=platform,
            channel=channel,
            requester=requester,
        )


def start_run(
    store: Store,
    config: TeamsConfig,
    *,
    request: str,
    team: str | None,
    platform: str,
    channel: str,
    thread: str | None,
    requester: str,
    origin_key: str | None,
    caps: Caps | None = None,
    follow_up_of: Run | None = None,
) -> tuple[Run, bool]:
    """Create the run (idempotent on origin_key); the caller enqueues its first step.

    `caps` are an entry point's limits on runs in flight: adapters pass
    `Caps.from_settings()`; without them (internal callers, tests, benchmarks) only the
    request itself is checked. A redelivered start finds its run by origin key before any
    cap is counted, so the run it already made never counts against itself. A follow-up
    starts seeded with the previous run's request, answer and summary.
    """
    cleaned = validate_request(config, request, team, caps=caps)
    if origin_key is not None:
        existing = store.run_by_origin(origin_key)
        if existing is not None:
            return existing, False
    admit = None
    if caps is not None:
        limits = caps

        def admit(session: Session) -> None:
            intake.check_capacity(
                session, limits, platform=platform, channel=channel, requester=requester
            )

    seed = None
    if follow_up_of is not None:
        previous = store.load_checkpoint(follow_up_of.id, follow_up_of.version) or {}
        seed = {
            "previous": {
                "run": follow_up_of.id,
                "request": follow_up_of.request,
                "answer": follow_up_of.answer or follow_up_of.error or "",
                "summary": previous.get("summary", ""),
            }
        }
    run, created = store.create_run(
        origin_key=origin_key,
        request=cleaned,
        team=team,
        platform=platform,
        channel=channel,
        thread=thread,
        requester=requester,
        opened=opened_notice(cleaned, requester, team),
        seed=seed,
        admit=admit,
    )
    if created:
        metrics.RUNS_STARTED.labels(team=team or "routed").inc()
        # The run's root span: every step, in whichever worker, joins this trace.
        with run_span(str(run.id), team or "routed", name="run"):
            traceparent = inject_context().get("traceparent")
        if traceparent:
            store.set_trace_parent(run.id, traceparent)
            run.trace_parent = traceparent
    return run, created


def add_human_input(store: Store, run_id: int, text: str, actor: Actor) -> None:
    """A person's reply in the run's thread; the next supervisor step reads it."""
    text = intake.clean_text(text, limit=Caps.from_settings().request_chars, what="reply")
    run = store.get_run(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id}.")
    if run.status in RunStatus.TERMINAL:
        raise UserError(f"Run {run_id} already ended ({run.status}); start a new one with /agent.")
    _audit(store, actor, "human_input", "received", run_id=run_id, detail=text)


def continue_in_thread(
    store: Store,
    config: TeamsConfig,
    run_id: int,
    text: str,
    actor: Actor,
    *,
    origin_key: str | None,
    caps: Caps | None = None,
) -> tuple[Run | None, str]:
    """A reply in a run's thread: input for a run still going, else a follow-up run in the
    same thread that knows the previous request and answer ("now make it shorter")."""
    text = intake.clean_text(text, limit=Caps.from_settings().request_chars, what="reply")
    run = store.get_run(run_id)
    if run is None or not may_see(config, run, actor):
        raise UserError(f"There is no run {run_id} here.")
    if run.status not in RunStatus.TERMINAL:
        add_human_input(store, run_id, text, actor)
        return None, f"Noted for run {run_id}; the supervisor reads it at its next step."
    team = run.team if run.team in config.teams else None
    new, _ = start_run(
        store,
        config,
        request=text,
        team=team,
        platform=run.platform,
        channel=run.channel,
        thread=run.thread or run.opened_ref,
        requester=actor.user,
        origin_key=origin_key,
        caps=caps,
        follow_up_of=run,
    )
    return new, f"Run {new.id} follows up run {run_id} in this thread."


def _audit(
    store: Store,
    actor: Actor,
    action: str,
    outcome: str,
    *,
    run_id: int,
    escalation_id: int | None = None,
    detail: str = "",
    within: Session | None = None,
) -> None:
    """Every decision and refusal: who, when, from which platform and channel. `within` the
    transaction that applied a decision, so the record and the change commit together."""
    store.audit(
        within=within,
        run_id=run_id,
        escalation_id=escalation_id,
        actor=actor.user,
        platform=actor.platform,
        channel=actor.channel,
        action=action,
        outcome=outcome,
        detail=detail,
    )


def may_approve(config: TeamsConfig, team: str | None, actor: Actor) -> bool:
    if actor.platform == "console":
        return True  # the console is the local operator's own terminal
    approvers = config.approvers_for(team or "")
    if actor.user in approvers.users:
        return True
    allowed_groups = set(approvers.slack_usergroups) | set(approvers.discord_roles)
    return bool(allowed_groups & set(actor.groups))


def may_see(config: TeamsConfig, run: Run, actor: Actor) -> bool:
    """A run shows in its own channel, and to its team's approvers anywhere.

    Its request, steps, tool results and answer are the channel's business; someone who
    guesses a run id elsewhere learns nothing, not even that it exists. Channel ids do not
    collide across platforms (Slack `C…`, Discord snowflakes, `console-…` sessions).
    """
    if actor.channel is not None and run.channel == actor.channel:
        return True
    return may_approve(config, run.team, actor)


def status_report(
    store: Store, config: TeamsConfig, run_id: int | None, actor: Actor, *, mine: bool = False
) -> str:
    """`/agent status [RUN_ID]` as the actor may see it: recent runs of their channel, or
    with `mine` their own runs on this platform (the console, whose sessions each have a
    channel of their own)."""
    if run_id is None:
        if mine:
            return reports.status_text(store, None, requester=actor.user, platform=actor.platform)
        if actor.channel is None:
            return "No runs here."
        return reports.status_text(store, None, channel=actor.channel)
    run = store.get_run(run_id)
    if run is None or not may_see(config, run, actor):
        return f"There is no run {run_id} here."
    return reports.status_text(store, run_id, channel=actor.channel)


def decide(
    store: Store,
    config: TeamsConfig,
    escalation_id: int,
    approve: bool,
    actor: Actor,
    *,
    reject: bool = False,
    note: str | None = None,
) -> DecisionResult:
    """Apply Approve, Reject or Abort once: the first committed decision wins, later ones are
    refused. Reject refuses held tool calls (the run goes on; `note` is the reason the model
    reads); a note with Approve is guidance the supervisor reads as human input."""
    escalation = store.escalation(escalation_id)
    if escalation is None:
        return DecisionResult(DecisionOutcome.NOT_FOUND, f"There is no escalation {escalation_id}.")
    run = store.get_run(escalation.run_id)
    assert run is not None
    if reject and escalation.guard not in TOOL_GUARDS:
        return DecisionResult(
            DecisionOutcome.NOT_FOUND, f"Escalation {escalation_id} has no tool call to reject."
        )
    approve = approve and not reject
    action = "reject" if reject else "approve" if approve else "abort"
    # The requester may always abort, and may retry a model failure (Retry grants nothing).
    own = actor.user == run.requester and (
        (not approve and not reject) or escalation.guard in RETRYABLE_GUARDS
    )
    allowed = may_approve(config, run.team, actor) or own
    if not allowed:
        _audit(
            store,
            actor,
            action,
            "refused",
            run_id=run.id,
            escalation_id=escalation_id,
            detail="not an approver",
        )
        what = action
        return DecisionResult(
            DecisionOutcome.UNAUTHORISED,
            f"You are not allowed to {what} run {run.id}. "
            f"{reports.approvers_text(config, run.team, actor.platform)}",
            run.id,
        )
    moment = datetime.now(UTC)
    new_status = (
        EscalationStatus.REJECTED
        if reject
        else EscalationStatus.APPROVED
        if approve
        else EscalationStatus.ABORTED
    )
    with store.session() as session:
        claimed = (
            session.execute(
                update(Escalation)
                .where(
                    Escalation.id == escalation_id, Escalation.status == EscalationStatus.PENDING
                )
                .values(
                    status=new_status,
                    decided_by=actor.user,
                    decided_at=moment,
                    decided_platform=actor.platform,
                    decided_channel=actor.channel,
                    note=(note or "").strip()[:4000] or None,
                )
            ).rowcount
            == 1
        )
        if claimed:
            run_row = session.get(Run, run.id)
            assert run_row is not None
            if approve or reject:
                grant = escalation.grant or {}
                run_row.extra_steps += int(grant.get("steps", 0))
                run_row.extra_tokens += int(grant.get("tokens", 0))
                run_row.extra_dollars += float(grant.get("dollars", 0.0))
                run_row.extra_seconds += float(grant.get("seconds", 0.0))
                run_row.cleared_version = run_row.version
                run_row.status = RunStatus.RUNNING
            else:
                run_row.status = RunStatus.ABORTED
                run_row.error = f"Aborted by {actor.user}"
            resume = run_row.version
            # What the decision says and leaves behind commits with it.
            _audit(
                store,
                actor,
                action,
                new_status,
                run_id=run.id,
                escalation_id=escalation_id,
                detail=(note or "").strip()[:4000],
                within=session,
            )
            if approve and note and note.strip():
                # Guidance given with Approve reaches the supervisor as human input.
                _audit(
                    store,
                    actor,
                    "human_input",
                    "received",
                    run_id=run.id,
                    detail=note.strip()[:4000],
                    within=session,
                )
            _post_decision(store, escalation, new_status, actor.user, moment, within=session)
            if not approve and not reject:
                _post_partial(
                    store, run_row, f"Aborted by {actor.user}.", actor.user, within=session
                )
    if not claimed:
        current = store.escalation(escalation_id)
        assert current is not None
        _audit(store, actor, action, "already_decided", run_id=run.id, escalation_id=escalation_id)
        when = (
            current.decided_at.strftime("%Y-%m-%d %H:%M UTC") if current.decided_at else "earlier"
        )
        return DecisionResult(
            DecisionOutcome.ALREADY_DECIDED,
            f"Already {current.status} by {current.decided_by} at {when}.",
            run.id,
            people=(current.decided_by or "",),
        )
    metrics.ESCALATIONS_DECIDED.labels(reason=escalation.guard, decision=new_status).inc()
    if not approve and not reject:
        metrics.RUNS_FINISHED.labels(team=run.team or "unrouted", outcome="aborted").inc()
    if approve or reject:
        verb = "Rejected" if reject else "Approved"
        return DecisionResult(
            DecisionOutcome.APPLIED,
            f"{verb} by {actor.user}; run {run.id} resumes.",
            run.id,
            resume_version=resume,
            people=(actor.user,),
        )
    return DecisionResult(
        DecisionOutcome.APPLIED,
        f"Run {run.id} aborted by {actor.user}.",
        run.id,
        people=(actor.user,),
    )


def _post_decision(
    store: Store,
    escalation: Escalation,
    status: str,
    who: str,
    when: datetime,
    *,
    within: Session,
) -> None:
    text = f"{status.capitalize()} by {who} at {when.strftime('%Y-%m-%d %H:%M UTC')}"
    notice = Notice(
        Kind.DECISION,
        escalation.run_id,
        text,
        body=escalation.reason,
        figures=dict(escalation.figures or {}),
        escalation_id=escalation.id,
        outcome=status,
        actor=who,
        at=when.timestamp(),
        guard=escalation.guard,
    )
    store.add_notices(escalation.run_id, f"esc{escalation.id}", [notice], within=within)


def _post_partial(
    store: Store, run: Run, reason: str, actor: str | None = None, *, within: Session
) -> None:
    """The ended run's result message: why it ended and what its workers had got to."""
    state = store.load_checkpoint(run.id, run.version, within=within) or {}
    notice = Notice(
        Kind.RESULT,
        run.id,
        "Aborted",
        body=reason + partial_results(state),
        outcome="aborted",
        requester=run.requester,
        actor=actor,
    )
    store.add_notices(run.id, "aborted", [notice], within=within)


def abort_run(store: Store, config: TeamsConfig, run_id: int, actor: Actor) -> str:
    """The requester or an approver may abort a run that has not ended."""
    run = store.get_run(run_id)
    if run is None:
        raise UserError(f"There is no run {run_id} here.")
    own = run.platform == actor.platform and run.requester == actor.user
    if not (own or may_see(config, run, actor)):
        _audit(store, actor, "abort", "refused", run_id=run_id, detail="not visible here")
        raise UserError(f"There is no run {run_id} here.")
    if actor.user != run.requester and not may_approve(config, run.team, actor):
        _audit(
            store,
            actor,
            "abort",
            "refused",
            run_id=run_id,
            detail="not the requester or an approver",
        )
        raise UserError(f"Only the requester or an approver can abort run {run_id}.")
    if run.status in RunStatus.TERMINAL:
        return f"Run {run_id} already ended ({run.status})."
    moment = datetime.now(UTC)
    with store.session() as session:
        ended = (
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status.notin_(list(RunStatus.TERMINAL)))
                .values(
                    status=RunStatus.ABORTED, error=f"Aborted by {actor.user}", updated_at=moment
                )
            ).rowcount
            == 1
        )
        pending = []
        if ended:
            pending = list(
                session.scalars(
                    select(Escalation).where(
                        Escalation.run_id == run_id,
                        Escalation.status == EscalationStatus.PENDING,
                    )
                )
            )
            for escalation in pending:
                escalation.status = EscalationStatus.ABORTED
                escalation.decided_by, escalation.decided_at = actor.user, moment
                escalation.decided_platform = actor.platform
                escalation.decided_channel = actor.channel
                _post_decision(
                    store, escalation, EscalationStatus.ABORTED, actor.user, moment, within=session
                )
            _audit(store, actor, "abort", "aborted", run_id=run_id, within=session)
            ended_row = session.get(Run, run_id)
            assert ended_row is not None
            _post_partial(store, ended_row, f"Aborted by {actor.user}.", actor.user, within=session)
    if not ended:
        return f"Run {run_id} already ended."
    metrics.RUNS_FINISHED.labels(team=run.team or "unrouted", outcome="aborted").inc()
    for escalation in pending:
        metrics.ESCALATIONS_DECIDED.labels(reason=escalation.guard, decision="aborted").inc()
    return f"Run {run_id} aborted."


def retry_run(store: Store, config: TeamsConfig, run_id: int, actor: Actor) -> DecisionResult:
    """Run a failed run's failed step again, or answer a paused run's Retry; the requester
    or an approver may. The caller enqueues `resume_version`."""
    run = store.get_run(run_id)
    if run is None or not may_see(config, run, actor):
        raise UserError(f"There is no run {run_id} here.")
    pending = [e for e in store.pending_escalations(run_id) if e.guard in RETRYABLE_GUARDS]
    if pending:
        return decide(store, config, pending[0].id, True, actor)
    if actor.user != run.requester and not may_approve(config, run.team, actor):
        _audit(
            store,
            actor,
            "retry",
            "refused",
            run_id=run_id,
            detail="not the requester or an approver",
        )
        raise UserError(f"Only the requester or an approver can retry run {run_id}.")
    if run.status != RunStatus.FAILED:
        raise UserError(
            f"Run {run_id} is {run.status}; only a failed run, or one paused because its model "
            "failed, can be retried."
        )
    with store.session() as session:
        claimed = (
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.FAILED)
                .values(
                    status=RunStatus.RUNNING,
                    error=None,
                    cleared_version=Run.version,
                    updated_at=datetime.now(UTC),
                )
            ).rowcount
            == 1
        )
        if claimed:
            _audit(store, actor, "retry", "applied", run_id=run_id, within=session)
    if not claimed:
        return DecisionResult(
            DecisionOutcome.ALREADY_DECIDED, f"Run {run_id} is already being retried.", run_id
        )
    return DecisionResult(
        DecisionOutcome.APPLIED,
        f"Retrying run {run_id}.",
        run_id,
        resume_version=run.version,
    )


def expire_escalations(store: Store, at: datetime | None = None) -> list[int]:
    """Abort runs whose escalation went unanswered past its TTL (run by Celery beat)."""
    expired = []
    for escalation in store.due_escalations(at):
        moment = datetime.now(UTC)
        with store.session() as session:
            claimed = (
                session.execute(
                    update(Escalation)
                    .where(
                        Escalation.id == escalation.id,
                        Escalation.status == EscalationStatus.PENDING,
                    )
                    .values(
                        status=EscalationStatus.EXPIRED,
                        decided_by="switchboard",
                        decided_at=moment,
                        decided_platform="beat",
                    )
                ).rowcount
                == 1
            )
            if claimed:
                session.execute(
                    update(Run)
                    .where(Run.id == escalation.run_id)
                    .values(status=RunStatus.ABORTED, error="Escalation expired unanswered")
                )
                _audit(
                    store,
                    BEAT,
                    "expire",
                    EscalationStatus.EXPIRED,
                    run_id=escalation.run_id,
                    escalation_id=escalation.id,
                    within=session,
                )
                _post_decision(
                    store,
                    escalation,
                    EscalationStatus.EXPIRED,
                    "switchboard",
                    moment,
                    within=session,
                )
                expired_run = session.get(Run, escalation.run_id)
                assert expired_run is not None
                team = expired_run.team or "unrouted"
                _post_partial(
                    store,
                    expired_run,
                    "The escalation expired unanswered, so the run was aborted.",
                    within=session,
                )
        if not claimed:
            continue
        metrics.ESCALATIONS_DECIDED.labels(reason=escalation.guard, decision="expired").inc()
        metrics.RUNS_FINISHED.labels(team=team, outcome="expired").inc()
        expired.append(escalation.id)
    return expired


def fail_run(store: Store, run_id: int, reason: str) -> bool:
    """End a run that cannot make progress (its step failed for good) and say so in its
    thread, in one transaction; False if it had already ended."""
    with store.session() as session:
        changed = (
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status.notin_(list(RunStatus.TERMINAL)))
                .values(status=RunStatus.FAILED, error=reason)
            ).rowcount
            == 1
        )
        if changed:
            # A retried run can fail again: each failure after a retry has its own message.
            retries = session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.run_id == run_id, AuditEntry.action == "retry")
            )
            notice = Notice(Kind.ERROR, run_id, "Failed", body=reason, outcome="failed")
            store.add_notices(run_id, f"failed{retries or ''}", [notice], within=session)
            failed = session.get(Run, run_id)
            team = (failed.team if failed else None) or "unrouted"
    if changed:
        metrics.RUNS_FINISHED.labels(team=team, outcome="failed").inc()
    return changed
