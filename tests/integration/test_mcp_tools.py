"""Workers acting through real MCP servers (the SDK's MCPServer, over stdio and streamable
HTTP), driven by a model stand-in that calls tools the way hosted models do, with approval
in the thread and the tool ledger keeping every side effect to exactly once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import reports, service
from orchestrator.settings import Settings
from orchestrator.store.models import RunStatus
from orchestrator.store.tool_ledger import ToolLedger
from tasks import runtime
from tests.conftest import DEFAULT_TEAMS
from tests.integration.test_real_models import KEY, hosted_tiers
from tests.support.drive import drive, start
from tests.support.hosted_model import HostedModel, Styles
from tests.support.mcp_servers import HttpServer, stdio_server
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration
APPROVER = service.Actor("UAPPROVER", "slack", "C1")
STRANGER = service.Actor("USTRANGER", "slack", "C1")


def teams_with_notes(tmp_path: Path, model_url: str, server: dict[str, Any]) -> Path:
    data = yaml.safe_load(DEFAULT_TEAMS.read_text())
    data["tiers"] = hosted_tiers(model_url)
    data["approvers"] = {"users": ["UAPPROVER"], "slack_usergroups": [], "discord_roles": []}
    data["mcp_servers"] = {"notes": {**server, "tools": {"crash": "deny", "show_env": "deny"}}}
    data["teams"]["research"]["workers"][0]["tools"] = ["notes.*"]
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def calls_made(notes: Path) -> list[dict[str, Any]]:
    path = Path(f"{notes}.calls")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def notes_runtime(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[runtime.Runtime, HostedModel, Path]]]:
    opened: list[Any] = []

    def make(styles: Styles, transport: str = "stdio"):  # type: ignore[no-untyped-def]
        notes = tmp_path / "notes.txt"
        model = HostedModel(api_key=KEY, styles=styles).__enter__()
        opened.append(model)
        if transport == "http":
            server = HttpServer(notes).start()
            opened.append(server)
            entry = server.entry()
        else:
            entry = stdio_server(notes)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        teams = teams_with_notes(tmp_path, model.url, entry)
        rt = runtime.build(Settings(DATABASE_URL=pg_url, SWITCHBOARD_TEAMS_FILE=str(teams)))  # type: ignore[call-arg]
        opened.append(rt.engine.services.tools)
        return rt, model, notes

    yield make
    for thing in reversed(opened):
        if isinstance(thing, HostedModel):
            thing.__exit__(None, None, None)
        elif isinstance(thing, HttpServer):
            thing.stop()
        elif hasattr(thing, "close"):
            thing.close()


def plan(*calls: tuple[str, dict[str, Any]]) -> Styles:
    return Styles(tool_plan=calls, parallel=0.0, report_tokens=50)


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_read_runs_at_once_append_waits_for_an_approver_and_happens_once(
    notes_runtime, transport: str
) -> None:  # type: ignore[no-untyped-def]
    rt, model, notes = notes_runtime(
        plan(("read_notes", {}), ("append_note", {"text": "restart web-1"})), transport
    )
    run = start(rt, "Research case mcp: read the notes, then note the restart")
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL
    [escalation] = rt.store.pending_escalations(run.id)
    assert "notes.append_note" in escalation.reason and "restart web-1" in escalation.reason
    assert calls_made(notes) == []  # nothing changed before the approval
    [read] = ToolLedger(rt.store).for_run(run.id)  # the read-only call ran without a pause
    assert (read.tool, read.decision, read.status) == ("notes.read_notes", "allowed", "done")
    # A non-approver's Approve is refused and audited.
    refused = service.decide(rt.store, rt.config, escalation.id, True, STRANGER)
    assert refused.outcome == service.DecisionOutcome.UNAUTHORISED
    assert any(
        e.action == "approve" and e.outcome == "refused" and e.actor == "USTRANGER"
        for e in rt.store.audit_entries(run.id)
    )
    assert service.decide(rt.store, rt.config, escalation.id, True, APPROVER).resume_version
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert [c["text"] for c in calls_made(notes)] == ["restart web-1"]
    status = reports.status_text(rt.store, run.id)
    assert "notes.read_notes" in status and "approved by UAPPROVER" in status
    offered = {t["function"]["name"] for body in model.completions for t in body.get("tools", [])}
    assert "notes__append_note" in offered and "notes__read_notes" in offered
    assert "notes__crash" not in offered and "notes__show_env" not in offered  # deny


def test_reject_with_a_reason_reaches_the_models_next_request(notes_runtime) -> None:  # type: ignore[no-untyped-def]
    rt, model, notes = notes_runtime(plan(("append_note", {"text": "drop prod"})), "http")
    run = start(rt, "Research case mcp reject: clean up")
    drive(rt, run.id)
    [escalation] = rt.store.pending_escalations(run.id)
    service.decide(
        rt.store, rt.config, escalation.id, False, APPROVER, reject=True, note="not in prod"
    )
    before = len(model.completions)
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    assert calls_made(notes) == []
    following = model.completions[before]
    told = [m["content"] for m in following["messages"] if m["role"] == "tool"]
    assert any("rejected by UAPPROVER: not in prod" in text for text in told)


def test_an_unreachable_server_is_a_tool_error_the_worker_reports(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HostedModel(api_key=KEY, styles=plan(("read_notes", {}))) as model:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        down = {"url": "http://127.0.0.1:9/mcp", "connect_timeout_s": 2}
        teams = teams_with_notes(tmp_path, model.url, down)
        data = yaml.safe_load(teams.read_text())
        data["teams"]["research"]["workers"][0]["tools"] = ["notes.read_notes"]
        teams.write_text(yaml.safe_dump(data))
        rt = runtime.build(Settings(DATABASE_URL=pg_url, SWITCHBOARD_TEAMS_FILE=str(teams)))  # type: ignore[call-arg]
        try:
            run = start(rt, "Research case unreachable: read the notes")
            drive(rt, run.id)
        finally:
            rt.engine.services.tools.close()  # type: ignore[union-attr]
        done = rt.store.get_run(run.id)
        assert done.status == RunStatus.FINISHED, done.error
        told = [
            m["content"]
            for body in model.completions
            for m in body["messages"]
            if m["role"] == "tool"
        ]
        assert told and all("error" in json.loads(text) for text in told)
        system = [
            m["content"]
            for body in model.completions
            for m in body["messages"]
            if m["role"] == "system" and "researcher" in m["content"]
        ]
        assert any("unavailable" in text for text in system)


def test_a_worker_killed_mid_call_never_runs_the_append_twice(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Approve while no worker runs (killed right after the approval), then kill -9 the
    worker while the approved call is in flight (right before its result is recorded): the
    append happens once, and the run asks whether to retry a call that may have happened."""
    from tasks.steps import advance

    notes = tmp_path / "notes.txt"
    styles = plan(("slow_append", {"text": "once", "seconds": 3}))
    with HostedModel(api_key=KEY, styles=styles) as model:
        teams = teams_with_notes(tmp_path, model.url, stdio_server(notes))
        env = {
            "OPENAI_API_KEY": KEY,
            "SWITCHBOARD_STEP_LEASE": "3",
            "SWITCHBOARD_STALLED_AFTER": "3",
        }
        s = stack(teams, **env)
        s.beat()
        worker = s.worker("w1")
        run = s.start("Research case crash: note it once")
        s.wait(run.id)
        [escalation] = s.store.pending_escalations(run.id)
        worker.kill()
        result = service.decide(s.store, s.config, escalation.id, True, APPROVER)
        advance.delay(run.id, result.resume_version)
        worker = s.worker("w2")
        wait_for(lambda: Path(f"{notes}.started").exists(), timeout=60)
        worker.kill()  # mid-call: the keeper lets the server finish the call in flight
        wait_for(lambda: calls_made(notes), timeout=30)
        s.worker("w3")
        doubt = wait_for(
            lambda: [e for e in s.store.pending_escalations(run.id) if e.guard == "tool_in_doubt"],
            timeout=90,
        )[0]
        assert "may or may not have happened" in doubt.reason
        result = service.decide(s.store, s.config, doubt.id, False, APPROVER, reject=True)
        advance.delay(run.id, result.resume_version)
        done = s.wait(run.id, timeout=90, statuses=RunStatus.TERMINAL)
        assert done.status == RunStatus.FINISHED, done.error
        time.sleep(1)
        assert [c["text"] for c in calls_made(notes)] == ["once"]
        [record] = ToolLedger(s.store).for_run(run.id)
        assert record.decision == "skipped"
