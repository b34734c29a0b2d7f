"""Both default teams against a model that answers the way hosted models do.

The stand-in (tests/support/hosted_model.py) speaks OpenAI's Chat Completions API over HTTP;
litellm, the gateway, the engine, Celery, Postgres and the console run for real.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator import reports, service
from orchestrator.notices import Notice
from orchestrator.store.models import LLMCall, OutboxItem, RunStatus
from tests.support.drive import build, drive, start
from tests.support.hosted_model import HostedModel, Styles

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-hosted-0123456789"


def hosted_tiers(url: str, **overrides: dict[str, Any]) -> dict[str, Any]:
    tiers: dict[str, Any] = {
        "cheap": {
            "model": "openai/gpt-test-mini",
            "api_base": url,
            "params": {"temperature": 0, "max_tokens": 512},
            "input_cost_per_token": 1.5e-7,
            "output_cost_per_token": 6e-7,
        },
        "premium": {
            "model": "openai/gpt-test",
            "api_base": url,
            "params": {"temperature": 0.3, "max_tokens": 256},
            "input_cost_per_token": 2e-6,
            "output_cost_per_token": 8e-6,
            "max_tokens_cap": 1024,
        },
    }
    for name, values in overrides.items():
        tiers[name] = {**tiers[name], **values}
    return tiers


def test_twenty_runs_of_each_default_team_finish_on_the_celery_path(
    stack: Callable[..., Any], make_teams: Callable[..., Path]
) -> None:
    rng = random.Random(11)
    styles = Styles(
        report_tokens=400, capitalised_names=0.3, prose_with_tool_calls=0.4, tool_calls_as_text=0.2
    )
    with HostedModel(api_key=KEY, styles=styles, latency=lambda: rng.uniform(0.0, 0.05)) as model:
        s = stack(make_teams(tiers=hosted_tiers(model.url)), OPENAI_API_KEY=KEY)
        s.worker(concurrency=24)
        runs = []
        for i in range(20):
            team = None if i % 2 else "research"  # half are routed (router via tool call)
            runs.append(s.start(f"Research case {i}: compare Redis and Postgres queues", team=team))
            team = None if i % 2 else "engineering"
            runs.append(s.start(f"Engineering case {i}: write a function for durations", team=team))
        done = [s.wait(run.id, timeout=240, statuses=RunStatus.TERMINAL) for run in runs]
        failed = [(run.id, run.status, run.error) for run in done if run.status != "finished"]
        assert not failed, failed
        assert Counter(run.team for run in done) == {"research": 20, "engineering": 20}
        with s.store.session() as session:
            calls = session.execute(select(LLMCall.run_id, LLMCall.call_index, LLMCall.purpose))
            calls = list(calls)
        # A reply cut at max_tokens was asked again with more room, and the run went on.
        assert any(index >= 5000 for _, index, _ in calls)
        nodes = {step.node for run in done for step in s.store.steps(run.id)}
        assert "fanout" in nodes  # parallel assign calls
        answers = [run.answer or "" for run in done]
        assert any("```python\n" in a and a.rstrip().endswith(("```", "detail.")) for a in answers)
        assert not any("[supervisor]" in a or "Assigned " in a for a in answers)
        sent = model.completions
        assert any(body.get("tools") and body.get("tool_choice") for body in sent)
        # No credentials in the ledger.
        with s.store.session() as session:
            stored = session.scalars(select(LLMCall.request)).all()
        assert not any(KEY in str(request) for request in stored)


def test_text_and_json_modes_in_the_console(
    tmp_path: Path, make_teams: Callable[..., Path]
) -> None:
    """The premium tier answers JSON in text (fenced, in prose, bare); the cheap tier under a
    response-format schema; both teams finish in a piped console session."""
    rng = random.Random(5)
    with HostedModel(api_key=KEY, seed=3, latency=lambda: rng.uniform(0.0, 0.03)) as model:
        tiers = hosted_tiers(model.url, premium={"protocol": "text"}, cheap={"protocol": "json"})
        teams = make_teams(tiers=tiers)
        lines = []
        for i in range(5):
            lines.append(f"/agent compare message queues, case {i}")
            lines.append(f"/agent --team engineering write a function for case {i}")
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
            "SWITCHBOARD_TEAMS_FILE": str(teams),
            "OPENAI_API_KEY": KEY,
            "PATH": "/usr/bin:/bin",
            "SWITCHBOARD_MAX_RUNS_PER_USER": "0",  # ten runs at once from one console user
        }
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "chat"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("✔ Finished") == 10, result.stdout[-4000:]
        sent = model.completions
        assert not any(body.get("tools") for body in sent if "(switchboard/" in str(body))
        assert any(body.get("response_format") for body in sent)


@pytest.fixture
def hosted_runtime(pg_url: str, make_teams: Callable[..., Path], monkeypatch):  # type: ignore[no-untyped-def]
    """A runtime in this process whose tiers point at a hosted-model stand-in."""
    made: list[HostedModel] = []

    def make(model: HostedModel, key: str | None = KEY, **tier_overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
        made.append(model.__enter__())
        if key is None:
            monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        else:
            monkeypatch.setenv("OPENAI_API_KEY", key)
        teams = make_teams(tiers=hosted_tiers(model.url, **tier_overrides))
        return build(pg_url, teams, SWITCHBOARD_MODEL_RETRIES=1)

    yield make
    for model in made:
        model.__exit__(None, None, None)


def _ledger_is_one_row_per_call(rt, run_id: int) -> None:  # type: ignore[no-untyped-def]
    with rt.store.session() as session:
        rows = session.execute(
            select(LLMCall.step, LLMCall.call_index, func.count())
            .where(LLMCall.run_id == run_id)
            .group_by(LLMCall.step, LLMCall.call_index)
        ).all()
    assert rows and all(count == 1 for _, _, count in rows)


def test_a_decision_cut_off_twice_pauses_with_retry_and_retry_finishes(hosted_runtime) -> None:  # type: ignore[no-untyped-def]
    model = HostedModel(
        api_key=KEY, styles=Styles(finish_with_report=0.0, answer_tokens=400, parallel=0.0)
    )
    rt = hosted_runtime(model, premium={"params": {"max_tokens": 96}, "max_tokens_cap": 150})
    run = start(rt, "Research case cut: compare queues", requester="U1")
    outcome = drive(rt, run.id)
    paused = rt.store.get_run(run.id)
    assert paused.status == RunStatus.AWAITING_APPROVAL
    [escalation] = rt.store.pending_escalations(run.id)
    assert escalation.guard == "protocol_failure"
    assert "cut off at max_tokens 150 on tier premium" in escalation.reason
    with rt.store.session() as session:
        payloads = session.scalars(
            select(OutboxItem.payload).where(
                OutboxItem.run_id == run.id, OutboxItem.kind == "escalation"
            )
        ).all()
    assert [a.label for a in Notice.from_json(payloads[-1]).actions] == ["Retry", "Abort"]
    # The model stops writing novels; the requester presses Retry.
    model.styles.answer_tokens = 5
    result = service.retry_run(rt.store, rt.config, run.id, service.Actor("U1", "test", "C1"))
    assert result.resume_version == outcome.version
    drive(rt, run.id)
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED, finished.error
    assert "Here is the answer." in finished.answer
    _ledger_is_one_row_per_call(rt, run.id)


def test_a_provider_down_for_good_pauses_and_retry_after_recovery_finishes(
    hosted_runtime,
) -> None:  # type: ignore[no-untyped-def]
    model = HostedModel(api_key=KEY)
    rt = hosted_runtime(model)
    run = start(rt, "Research case outage: compare queues", team=None)
    model.fail_always(500)
    drive(rt, run.id)
    paused = rt.store.get_run(run.id)
    assert paused.status == RunStatus.AWAITING_APPROVAL
    [escalation] = rt.store.pending_escalations(run.id)
    assert escalation.guard == "provider_failure"
    assert "InternalServerError" in escalation.reason and "tier 'cheap'" in escalation.reason
    model.fail_always(None)
    result = service.retry_run(rt.store, rt.config, run.id, service.Actor("U1", "test", "C1"))
    assert result.resume_version is not None
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    _ledger_is_one_row_per_call(rt, run.id)


@pytest.mark.parametrize("key", ["sk-wrong-key-000000000000", None])
def test_a_rejected_or_missing_key_fails_fast_naming_the_key(hosted_runtime, key) -> None:  # type: ignore[no-untyped-def]
    rt = hosted_runtime(HostedModel(api_key=KEY), key=key)
    run = start(rt, "Research case keys: compare queues", team=None)
    began = time.monotonic()
    drive(rt, run.id)
    took = time.monotonic() - began
    failed = rt.store.get_run(run.id)
    assert failed.status == RunStatus.FAILED
    assert "OPENAI_API_KEY" in failed.error and "tier cheap" in failed.error
    assert "sk-wrong" not in failed.error
    assert took < 2.0, took


def test_an_unpriced_tier_with_dollar_limits_warns_and_budget_says_unpriced(
    hosted_runtime, make_teams: Callable[..., Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model = HostedModel(api_key=KEY)
    unpriced = {"input_cost_per_token": None, "output_cost_per_token": None}
    rt = hosted_runtime(model, premium=unpriced)
    teams = make_teams(tiers=hosted_tiers(model.url, premium=unpriced), name="unpriced.yaml")
    check = subprocess.run(
        [sys.executable, "-m", "bot.cli", "teams", "validate", str(teams)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": KEY},
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stderr
    assert "no price is known for tier premium" in check.stderr
    run = start(rt, "Research case price: compare queues")
    drive(rt, run.id)
    budget = reports.budget_text(rt.store, rt.config, channel="C1")
    assert "team research today: unpriced" in budget
    assert "cost: unpriced" in reports.status_text(rt.store, run.id)


def _paused_by_the_protocol(rt, request: str):  # type: ignore[no-untyped-def]
    """Start and drive a run the supervisor's replies keep failing: its one pending pause."""
    run = start(rt, request)
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL
    [escalation] = rt.store.pending_escalations(run.id)
    assert escalation.guard == "protocol_failure"
    return escalation


def test_a_refusal_is_reasked_and_a_lasting_one_is_quoted_in_the_pause(hosted_runtime) -> None:  # type: ignore[no-untyped-def]
    """OpenAI's refusal shape (`content` null, `refusal` set): a supervisor that refuses once
    is asked again and the run finishes; one that keeps refusing pauses the run, quoting it."""
    model = HostedModel(api_key=KEY, styles=Styles(refuse_first=True, parallel=0.0))
    rt = hosted_runtime(model)
    run = start(rt, "Research case refusal: compare queues")
    drive(rt, run.id)
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED, finished.error

    model.styles.refuse_always = True
    escalation = _paused_by_the_protocol(rt, "Research case refusal again: compare brokers")
    assert "I'm sorry, but I can't help with that." in escalation.reason


def test_a_worker_that_refuses_reports_its_refusal_to_the_supervisor(hosted_runtime) -> None:  # type: ignore[no-untyped-def]
    model = HostedModel(
        api_key=KEY, styles=Styles(worker_refuses=True, parallel=0.0, finish_with_report=0.0)
    )
    rt = hosted_runtime(model)
    run = start(rt, "Research case worker refusal: compare queues")
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    supervisor_read = [
        str(m.get("content"))
        for body in model.completions
        if "assign" in {t["function"]["name"] for t in body.get("tools") or []}
        for m in body["messages"]
    ]
    assert any("I'm sorry, but I can't help with that." in text for text in supervisor_read)


def test_a_filtered_reply_is_said_as_filtered(hosted_runtime) -> None:  # type: ignore[no-untyped-def]
    """Azure's content filter (finish_reason content_filter, content null): a worker's report
    says it was withheld; a supervisor filtered every time pauses the run saying why."""
    model = HostedModel(
        api_key=KEY, styles=Styles(worker_filtered=True, parallel=0.0, finish_with_report=1.0)
    )
    rt = hosted_runtime(model)
    run = start(rt, "Research case filtered: compare queues")
    drive(rt, run.id)
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED, finished.error
    assert "content filter withheld the reply" in finished.answer

    model.styles.worker_filtered, model.styles.supervisor_filtered = False, True
    escalation = _paused_by_the_protocol(rt, "Research case filtered again: compare brokers")
    assert "finish_reason content_filter" in escalation.reason


def test_fenced_tool_call_arguments_cost_no_reasks(hosted_runtime) -> None:  # type: ignore[no-untyped-def]
    model = HostedModel(api_key=KEY, styles=Styles(fenced_arguments=1.0))
    rt = hosted_runtime(model)
    run = start(rt, "Research case fenced: compare queues")
    drive(rt, run.id)
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED, finished.error
    reasked = [
        m
        for body in model.completions
        for m in body["messages"]
        if m["role"] == "user" and "That reply was invalid" in str(m.get("content"))
    ]
    assert reasked == []
