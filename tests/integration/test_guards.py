"""Loop guards, budgets and the escalation workflow, on Postgres through the real engine."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from orchestrator import reports, service
from orchestrator.engine import Outcome
from orchestrator.service import Actor, DecisionOutcome
from orchestrator.store.models import EscalationStatus, RunStatus
from tests.support.drive import build, drive, start
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.integration

APPROVER = Actor(user="UBOSS", platform="slack", channel="C1")
STRANGER = Actor(user="USTRANGER", platform="slack", channel="C1")
REQUESTER = Actor(user="U1", platform="slack", channel="C1")


@pytest.fixture
def teams(make_teams):  # type: ignore[no-untyped-def]
    def make(**limits: object) -> Path:
        return make_teams(
            limits=limits, approvers={"users": ["UBOSS"], "slack_usergroups": ["SADMINS"]}
        )

    return make


def escalate(rt, request: str):  # type: ignore[no-untyped-def]
    run = start(rt, request)
    outcome = drive(rt, run.id)
    assert outcome.outcome is Outcome.WAITING, rt.store.get_run(run.id).error
    [escalation] = rt.store.pending_escalations(run.id)
    return run, escalation


def assert_no_more_calls_until_decided(rt, run_id: int) -> None:  # type: ignore[no-untyped-def]
    calls = len(rt.store.llm_calls(run_id))
    run = rt.store.get_run(run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert drive(rt, run_id).outcome is Outcome.DUPLICATE  # a stray step task does nothing
    assert len(rt.store.llm_calls(run_id)) == calls


def test_step_limit_escalates_and_approve_resumes_to_an_answer(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=4, stuck_window=50, grant_steps=20))
    run, escalation = escalate(rt, "summarise the design")
    assert escalation.guard == "max_steps"
    assert escalation.figures["steps"] == "4"
    assert escalation.grant == {"steps": 20}
    assert_no_more_calls_until_decided(rt, run.id)

    result = service.decide(rt.store, rt.config, escalation.id, True, APPROVER)
    assert result.outcome is DecisionOutcome.APPLIED
    assert result.resume_version == rt.store.get_run(run.id).version
    assert rt.store.get_run(run.id).extra_steps == 20
    assert drive(rt, run.id).outcome is Outcome.DONE
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED
    assert finished.answer.startswith("Answer to: summarise the design")
    [entry] = [a for a in rt.store.audit_entries(run.id) if a.action == "approve"]
    assert (entry.actor, entry.platform, entry.channel, entry.outcome) == (
        "UBOSS",
        "slack",
        "C1",
        "approved",
    )


def test_abort_ends_the_run_with_partial_results(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=4, stuck_window=50))
    run, escalation = escalate(rt, "summarise the design")
    result = service.decide(
        rt.store, rt.config, escalation.id, False, REQUESTER
    )  # the requester may abort
    assert result.outcome is DecisionOutcome.APPLIED
    ended = rt.store.get_run(run.id)
    assert ended.status == RunStatus.ABORTED
    from sqlalchemy import select

    from orchestrator.store.models import OutboxItem

    with rt.store.sessions() as session:
        rows = list(session.scalars(select(OutboxItem).where(OutboxItem.run_id == run.id)))
    aborted = [r for r in rows if r.kind == "result"]
    assert aborted and "Partial results:" in aborted[-1].payload["body"]
    assert "researcher:" in aborted[-1].payload["body"]
    assert any(r.kind == "decision" for r in rows)


def test_unauthorised_approver_is_refused_and_recorded(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=4, stuck_window=50))
    run, escalation = escalate(rt, "summarise the design")
    refused = service.decide(rt.store, rt.config, escalation.id, True, STRANGER)
    assert refused.outcome is DecisionOutcome.UNAUTHORISED
    assert "not allowed to approve" in refused.message
    assert rt.store.escalation(escalation.id).status == EscalationStatus.PENDING
    [entry] = rt.store.audit_entries(run.id)
    assert (entry.actor, entry.action, entry.outcome) == ("USTRANGER", "approve", "refused")
    # The requester cannot approve, but a member of an approving user group can.
    assert (
        service.decide(rt.store, rt.config, escalation.id, True, REQUESTER).outcome
        is DecisionOutcome.UNAUTHORISED
    )
    group_member = Actor(user="U9", platform="slack", channel="C1", groups=("SADMINS",))
    assert (
        service.decide(rt.store, rt.config, escalation.id, True, group_member).outcome
        is DecisionOutcome.APPLIED
    )


def test_double_click_and_racing_decisions_act_once(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=4, stuck_window=50))
    run, escalation = escalate(rt, "summarise the design")
    results = []
    barrier = threading.Barrier(6)

    def click(approve: bool) -> None:
        barrier.wait()
        results.append(service.decide(rt.store, rt.config, escalation.id, approve, APPROVER))

    threads = [threading.Thread(target=click, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [r for r in results if r.outcome is DecisionOutcome.APPLIED]
    assert len(applied) == 1
    others = [r for r in results if r.outcome is DecisionOutcome.ALREADY_DECIDED]
    assert len(others) == 5
    assert all("by UBOSS at" in r.message for r in others)
    final = rt.store.escalation(escalation.id).status
    assert final in (EscalationStatus.APPROVED, EscalationStatus.ABORTED)
    expected_run = RunStatus.RUNNING if final == EscalationStatus.APPROVED else RunStatus.ABORTED
    assert rt.store.get_run(run.id).status == expected_run
    if final == EscalationStatus.APPROVED:
        assert rt.store.get_run(run.id).extra_steps == 10  # the grant applied once, not six times


def test_duration_limit(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_duration_s=0.001))
    _, escalation = escalate(rt, "summarise the design")
    assert escalation.guard == "max_duration"


def test_stuck_worker_escalates_with_the_repeated_output(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=50))
    run, escalation = escalate(rt, "[loop] [repeat] keep going")
    assert escalation.guard == "stuck"
    assert "near-identical output 3 times" in escalation.reason
    assert escalation.figures["repeated"] == "researcher: I keep producing the same thing."
    assert_no_more_calls_until_decided(rt, run.id)


def test_ping_pong_supervisor_escalates(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=50))
    run, escalation = escalate(rt, "[loop] keep going")
    assert escalation.guard == "ping_pong"
    assert "same assignment 3 times" in escalation.reason
    assert_no_more_calls_until_decided(rt, run.id)


def test_persona_shift_comes_before_escalation(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=50, stuck_window=50))
    run, escalation = escalate(rt, "[reject] write the parser")
    assert escalation.guard == "review_failures"
    calls = [c for c in rt.store.llm_calls(run.id) if c.purpose == "worker:researcher"]
    shifted = [c for c in calls if "debugger mode" in c.request["messages"][0]["content"]]
    assert len(shifted) == 1, "exactly one retry as a debugger before the human"
    assert shifted[0].request["temperature"] == 0.2  # premium tier 0.7 lowered by 0.5
    normal = [c for c in calls if c not in shifted]
    assert all(c.request["temperature"] == 0.7 for c in normal)
    assert shifted[0].step > max(c.step for c in normal)
    steps = rt.store.steps(run.id)
    assert any(s.detail.get("persona_shift") == "researcher" for s in steps)


def test_token_budget(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_tokens_per_run=600, stuck_window=50))
    _, escalation = escalate(rt, "summarise the design")
    assert escalation.guard == "token_budget"
    assert escalation.grant == {"tokens": 50000}


def test_team_day_dollar_budget(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_dollars_per_team_day=0.04, stuck_window=50))
    first = start(rt, "summarise the design")
    assert drive(rt, first.id).outcome is Outcome.DONE
    spent = rt.store.spend(team="research").dollars
    assert 0 < spent < 0.04
    # Another channel, same team: the team's daily budget still counts the first run.
    run = start(rt, "another request", channel="C2")
    assert drive(rt, run.id).outcome is Outcome.WAITING
    [escalation] = rt.store.pending_escalations(run.id)
    assert escalation.guard == "dollar_budget"
    assert "the team today budget has left" in escalation.reason


def test_call_that_would_cross_the_dollar_budget_is_never_sent(
    pg_url: str, make_teams, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as server:
        tier = {"model": "openai/gpt-4o", "api_base": server.url, "params": {"max_tokens": 2048}}
        teams = make_teams(
            tiers={"cheap": tier, "premium": tier}, limits={"max_dollars_per_run": 0.01}
        )
        rt = build(pg_url, teams)
        run, escalation = escalate(rt, "summarise the design")
        assert server.completions == []
        assert escalation.guard == "dollar_budget"
        assert "would cost about $0.02" in escalation.reason
        assert rt.store.llm_calls(run.id) == []


def test_status_and_budget_reports(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams(max_steps=4, stuck_window=50, max_dollars_per_team_day=5))
    run, escalation = escalate(rt, "summarise the design")
    status = reports.status_text(rt.store, run.id)
    assert f"Run #{run.id} [awaiting_approval] team research" in status
    assert "supervisor" in status and " tok " in status and " ms " in status
    assert f"pending escalation #{escalation.id} (max_steps)" in status
    budget = reports.budget_text(rt.store, rt.config, channel="C1", run_id=run.id)
    assert "team research today: $0.00" in budget and "of $5.0000" in budget
    assert f"run #{run.id}: $" in budget
    assert "this channel today" in budget


def test_abort_command_by_requester_and_refusal_for_others(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams())
    run = start(rt, "summarise the design")
    with pytest.raises(service.UserError, match="Only the requester or an approver"):
        service.abort_run(rt.store, rt.config, run.id, STRANGER)
    assert "aborted" in service.abort_run(rt.store, rt.config, run.id, REQUESTER)
    assert rt.store.get_run(run.id).status == RunStatus.ABORTED
    assert drive(rt, run.id).outcome is Outcome.DUPLICATE
    assert json.dumps([a.action for a in rt.store.audit_entries(run.id)]) == '["abort", "abort"]'


def _outbox(rt, run_id: int) -> list:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from orchestrator.store.models import OutboxItem

    with rt.store.sessions() as session:
        return list(
            session.scalars(
                select(OutboxItem).where(OutboxItem.run_id == run_id).order_by(OutboxItem.id)
            )
        )


def test_a_decision_that_crashes_before_its_message_changes_nothing(
    pg_url: str, teams, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The claim, its audit record and its thread message commit together: a crash while
    writing the message leaves the escalation pending, so the next press applies it whole."""
    rt = build(pg_url, teams(max_steps=4, stuck_window=50))
    run, escalation = escalate(rt, "summarise the design")
    before = len(_outbox(rt, run.id))
    real = rt.store.add_notices

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("worker killed")

    monkeypatch.setattr(rt.store, "add_notices", crash)
    with pytest.raises(ConnectionError):
        service.decide(rt.store, rt.config, escalation.id, False, APPROVER)
    assert rt.store.escalation(escalation.id).status == EscalationStatus.PENDING
    assert rt.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL
    assert not [a for a in rt.store.audit_entries(run.id) if a.action == "abort"]
    assert len(_outbox(rt, run.id)) == before

    monkeypatch.setattr(rt.store, "add_notices", real)
    applied = service.decide(rt.store, rt.config, escalation.id, False, APPROVER)
    assert applied.outcome is DecisionOutcome.APPLIED
    kinds = [r.kind for r in _outbox(rt, run.id)[before:]]
    assert kinds == ["decision", "result"]


def test_expiry_ends_the_run_and_posts_its_messages_in_one_commit(
    pg_url: str, teams, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    rt = build(pg_url, teams(max_steps=4, stuck_window=50))
    run, escalation = escalate(rt, "summarise the design")
    later = datetime.now(UTC) + timedelta(days=30)
    real = rt.store.add_notices
    calls = 0

    def crash_on_second(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:  # the decision message is written, the result is not
            raise ConnectionError("beat killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(rt.store, "add_notices", crash_on_second)
    with pytest.raises(ConnectionError):
        service.expire_escalations(rt.store, later)
    assert rt.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL
    assert not [r for r in _outbox(rt, run.id) if r.kind == "decision"]

    monkeypatch.setattr(rt.store, "add_notices", real)
    assert service.expire_escalations(rt.store, later) == [escalation.id]
    assert service.expire_escalations(rt.store, later) == []  # beat's next tick: nothing
    ended = rt.store.get_run(run.id)
    assert (ended.status, ended.error) == (RunStatus.ABORTED, "Escalation expired unanswered")
    rows = _outbox(rt, run.id)
    assert [r.kind for r in rows if r.kind in ("decision", "result")] == ["decision", "result"]
    assert "Partial results:" in rows[-1].payload["body"]
    [audit] = [a for a in rt.store.audit_entries(run.id) if a.action == "expire"]
    assert audit.platform == "beat"


def test_a_run_that_fails_again_after_a_retry_says_so_again(pg_url: str, teams) -> None:  # type: ignore[no-untyped-def]
    rt = build(pg_url, teams())
    run = start(rt, "summarise the design")
    assert service.fail_run(rt.store, run.id, "Internal error after 8 retries: OperationalError")
    assert not service.fail_run(rt.store, run.id, "a second worker gives up too")  # once
    retried = service.retry_run(rt.store, rt.config, run.id, REQUESTER)
    assert retried.outcome is DecisionOutcome.APPLIED
    assert service.fail_run(rt.store, run.id, "Internal error after 8 retries: PoolTimeout")
    errors = [r.payload["body"] for r in _outbox(rt, run.id) if r.kind == "error"]
    assert errors == [
        "Internal error after 8 retries: OperationalError",
        "Internal error after 8 retries: PoolTimeout",
    ]
    assert rt.store.get_run(run.id).error == "Internal error after 8 retries: PoolTimeout"
