"""Tool policy, approval and the tool ledger through the real engine, on Postgres.

The tool box here is a test double of the ToolBox seam (a read-only `lookup` and a
destructive `append` that writes to a file); the MCP end-to-end tests use real MCP servers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import reports, service
from orchestrator.nodes.context import ToolInfo
from orchestrator.store.models import RunStatus
from orchestrator.store.tool_ledger import ToolLedger
from tasks import runtime
from tests.integration.test_real_models import KEY, hosted_tiers
from tests.support.drive import drive, start
from tests.support.hosted_model import HostedModel, Styles

pytestmark = pytest.mark.integration
APPROVER = service.Actor("UAPPROVER", "slack", "C1")
STRANGER = service.Actor("USTRANGER", "slack", "C1")


class FileTools:
    """`notes.lookup` (read-only, allow), `notes.append` (destructive, ask), `notes.drop`
    (deny)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[tuple[str, str]] = []
        self.infos = {
            "notes__lookup": ToolInfo("notes__lookup", "notes.lookup", "notes", "allow", True),
            "notes__append": ToolInfo("notes__append", "notes.append", "notes", "ask", False),
            "notes__drop": ToolInfo("notes__drop", "notes.drop", "notes", "deny", False),
        }

    def specs(self, names: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": info.name,
                    "description": info.label,
                    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
                },
            }
            for info in self.infos.values()
            if info.policy != "deny"
        ]

    def info(self, name: str) -> ToolInfo | None:
        return self.infos.get(name)

    def notes(self, names: list[str]) -> list[str]:
        return []

    def execute(self, name: str, arguments: str) -> str:
        self.calls.append((name, arguments))
        if name == "notes__append":
            with self.path.open("a") as handle:
                handle.write(json.loads(arguments)["text"] + "\n")
            return json.dumps({"appended": True})
        return json.dumps({"notes": self.path.read_text() if self.path.exists() else ""})


@pytest.fixture
def gated(pg_url: str, make_teams: Callable[..., Path], tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    models: list[HostedModel] = []

    def make(styles: Styles) -> tuple[runtime.Runtime, FileTools, HostedModel]:
        model = HostedModel(api_key=KEY, styles=styles).__enter__()
        models.append(model)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        teams = make_teams(
            tiers=hosted_tiers(model.url),
            approvers={"users": ["UAPPROVER"], "slack_usergroups": [], "discord_roles": []},
        )
        tools = FileTools(tmp_path / "notes.txt")
        from orchestrator.settings import Settings

        rt = runtime.build(
            Settings(DATABASE_URL=pg_url, SWITCHBOARD_TEAMS_FILE=str(teams)),  # type: ignore[call-arg]
            tools=tools,
        )
        # The researcher may use the notes tools.
        team = rt.config.teams["research"]
        worker = team.workers[0].model_copy(update={"tools": ["notes.*"]})
        rt.config.teams["research"] = team.model_copy(
            update={"workers": [worker, *team.workers[1:]]}
        )
        return rt, tools, model

    yield make
    for model in models:
        model.__exit__(None, None, None)


def plan(*calls: tuple[str, dict[str, Any]], parallel: bool = False) -> Styles:
    return Styles(tool_plan=calls, parallel_tools=parallel, parallel=0.0, report_tokens=50)


def test_a_destructive_call_waits_for_an_approver_and_runs_once(gated) -> None:  # type: ignore[no-untyped-def]
    rt, tools, _model = gated(plan(("append", {"text": "restart web-1"})))
    run = start(rt, "Research case tool: note the restart", requester="UREQ")
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL
    [escalation] = rt.store.pending_escalations(run.id)
    assert escalation.guard == "tool_approval"
    assert "notes.append" in escalation.reason and '"text": "restart web-1"' in escalation.reason
    assert tools.calls == []  # nothing ran before the approval
    refused = service.decide(rt.store, rt.config, escalation.id, True, STRANGER)
    assert refused.outcome == service.DecisionOutcome.UNAUTHORISED
    assert [e.outcome for e in rt.store.audit_entries(run.id) if e.action == "approve"] == [
        "refused"
    ]
    approved = service.decide(rt.store, rt.config, escalation.id, True, APPROVER)
    assert approved.resume_version is not None
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert tools.path.read_text() == "restart web-1\n"
    [record] = ToolLedger(rt.store).for_run(run.id)
    assert (record.tool, record.status, record.decision, record.decided_by) == (
        "notes.append",
        "done",
        "approved",
        "UAPPROVER",
    )
    status = reports.status_text(rt.store, run.id)
    assert "notes.append" in status and "approved by UAPPROVER" in status
    # A re-executed step replays the ledger instead of calling again.
    second = service.decide(rt.store, rt.config, escalation.id, True, APPROVER)
    assert second.outcome == service.DecisionOutcome.ALREADY_DECIDED
    assert len([c for c in tools.calls if c[0] == "notes__append"]) == 1


def test_reject_with_a_reason_reaches_the_model(gated) -> None:  # type: ignore[no-untyped-def]
    rt, tools, model = gated(plan(("append", {"text": "drop the table"})))
    run = start(rt, "Research case reject: clean up")
    drive(rt, run.id)
    [escalation] = rt.store.pending_escalations(run.id)
    result = service.decide(
        rt.store, rt.config, escalation.id, False, APPROVER, reject=True, note="not in prod"
    )
    assert result.resume_version is not None
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert not tools.path.exists()
    told = [
        m["content"] for body in model.completions for m in body["messages"] if m["role"] == "tool"
    ]
    assert any("rejected by UAPPROVER: not in prod" in text for text in told)


def test_read_only_runs_without_pause_and_deny_is_never_offered(gated) -> None:  # type: ignore[no-untyped-def]
    rt, _tools, model = gated(plan(("lookup", {"text": "web-1"})))
    run = start(rt, "Research case lookup: what do the notes say")
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert rt.store.pending_escalations(run.id) == []
    [record] = ToolLedger(rt.store).for_run(run.id)
    assert record.tool == "notes.lookup" and record.status == "done"
    assert "notes.lookup" in reports.status_text(rt.store, run.id)
    offered = {t["function"]["name"] for body in model.completions for t in body.get("tools", [])}
    assert "notes__lookup" in offered and "notes__drop" not in offered


def test_parallel_calls_are_one_question_and_a_crash_in_doubt_asks(gated) -> None:  # type: ignore[no-untyped-def]
    rt, tools, _model = gated(
        plan(("append", {"text": "a"}), ("append", {"text": "b"}), parallel=True)
    )
    run = start(rt, "Research case parallel: two notes")
    drive(rt, run.id)
    [escalation] = rt.store.pending_escalations(run.id)
    assert len(escalation.payload["calls"]) == 2
    # The step that runs the approved calls dies after the first call started: simulate by
    # recording it as started (and its side effect done) without a result.
    from orchestrator.store.tool_ledger import Origin

    first = escalation.payload["calls"][0]
    ToolLedger(rt.store).start(
        run.id,
        Origin(*first["origin"]),
        step=escalation.version + 1,
        worker="researcher",
        tool="notes.append",
        server="notes",
        arguments=first["arguments"],
        decision="approved",
        decided_by="UAPPROVER",
    )
    tools.path.write_text("a\n")
    service.decide(rt.store, rt.config, escalation.id, True, APPROVER)
    drive(rt, run.id)
    [doubt] = rt.store.pending_escalations(run.id)
    assert doubt.guard == "tool_in_doubt"
    assert "may or may not have happened" in doubt.reason
    service.decide(rt.store, rt.config, doubt.id, False, APPROVER, reject=True)  # Skip
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert tools.path.read_text() == "a\nb\n"  # a once (before the crash), b once


def test_a_follow_up_in_a_finished_runs_thread_knows_the_previous_answer(gated) -> None:  # type: ignore[no-untyped-def]
    rt, _, model = gated(Styles(parallel=0.0, report_tokens=50, finish_with_report=1.0))
    run = start(rt, "Research case follow: compare queues", requester="UREQ")
    drive(rt, run.id)
    finished = rt.store.get_run(run.id)
    assert finished.status == RunStatus.FINISHED
    actor = service.Actor("UREQ", "test", "C1")
    # While a run goes on, a reply is input; once it ended, a follow-up run in the thread.
    new, message = service.continue_in_thread(
        rt.store, rt.config, run.id, "now make it shorter", actor, origin_key="follow-1"
    )
    assert new is not None and f"follows up run {run.id}" in message
    assert (new.team, new.channel, new.thread) == (finished.team, finished.channel, None)
    before = len(model.completions)
    drive(rt, new.id)
    assert rt.store.get_run(new.id).status == RunStatus.FINISHED
    first_supervisor = next(
        body
        for body in model.completions[before:]
        if any(t["function"]["name"] == "assign" for t in body.get("tools", []))
    )
    prompt = first_supervisor["messages"][-1]["content"]
    assert "Request: now make it shorter" in prompt
    assert "Earlier request: Research case follow: compare queues" in prompt
    assert finished.answer.strip()[:200] in prompt


def test_approve_with_guidance_reaches_the_supervisor(gated) -> None:  # type: ignore[no-untyped-def]
    rt, _, model = gated(plan(("append", {"text": "x"})))
    run = start(rt, "Research case guidance: note it")
    drive(rt, run.id)
    [escalation] = rt.store.pending_escalations(run.id)
    service.decide(
        rt.store, rt.config, escalation.id, True, APPROVER, note="keep it under 10 words"
    )
    before = len(model.completions)
    drive(rt, run.id)
    prompts_after = [
        m["content"]
        for body in model.completions[before:]
        for m in body["messages"]
        if m["role"] == "user"
    ]
    assert any("UAPPROVER: keep it under 10 words" in text for text in prompts_after)
