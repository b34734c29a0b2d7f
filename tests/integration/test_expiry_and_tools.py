"""Escalation expiry through real beat and worker processes; the coder's run_code tool."""

from __future__ import annotations

import json

import pytest

from orchestrator.outbox import OutboxSender
from orchestrator.store.models import EscalationStatus, RunStatus
from tests.support.drive import build, drive, start
from tests.support.recording_port import RecordingPort

pytestmark = pytest.mark.integration


def test_unanswered_escalation_expires_via_beat_and_aborts(stack, make_teams) -> None:  # type: ignore[no-untyped-def]
    s = stack(
        make_teams(limits={"max_steps": 3, "stuck_window": 50}), SWITCHBOARD_ESCALATION_TTL="2"
    )
    s.worker()
    s.beat()
    run = s.start("summarise the design")
    assert s.wait(run.id).status == RunStatus.AWAITING_APPROVAL
    [escalation] = s.store.pending_escalations(run.id)
    ended = s.wait(run.id, timeout=30, statuses=RunStatus.TERMINAL)
    assert ended.status == RunStatus.ABORTED
    assert ended.error == "Escalation expired unanswered"
    expired = s.store.escalation(escalation.id)
    assert expired.status == EscalationStatus.EXPIRED and expired.decided_by == "switchboard"
    [audit] = [a for a in s.store.audit_entries(run.id) if a.action == "expire"]
    assert audit.platform == "beat"
    port = RecordingPort()
    OutboxSender(s.store, port, "test", progress_interval_s=0).drain()
    bodies = [c.notice.body for c in port.calls if c.notice.kind == "result"]
    assert any("expired unanswered" in b and "Partial results:" in b for b in bodies), bodies
    decision = next(c for c in port.calls if c.notice.kind == "decision")
    assert decision.method == "update"  # the escalation message itself says it expired
    assert decision.notice.title.startswith("Expired by switchboard at")


def test_coder_runs_code_in_the_sandbox_and_gets_the_output(pg_url: str, make_teams) -> None:
    from orchestrator.tools import toolbox_from_env

    box = toolbox_from_env()
    try:
        sandbox = box._box()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no sandbox backend: {exc}")
    if sandbox is None:
        pytest.skip("no sandbox backend (no Docker engine, no bubblewrap)")
    rt = build(pg_url, make_teams())
    rt.engine.tools = box
    run = start(rt, "[code] compute the answer", team="engineering")
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    state = rt.store.load_checkpoint(run.id, rt.store.get_run(run.id).version)
    results = state["tool_results"]
    assert len(results) == 2  # the coder runs code for its draft and again after review
    result = results[0]
    assert result["worker"] == "coder" and result["tool"] == "run_code"
    payload = json.loads(result["result"])
    assert payload["stdout"] == "42\n" and payload["exit_code"] == 0
    assert "ran the code; stdout was '42'" in state["outputs"]["coder"][0]["text"]
    calls = [c for c in rt.store.llm_calls(run.id) if c.purpose == "worker:coder"]
    assert calls[0].request["tools"][0]["function"]["name"] == "run_code"
    assert calls[1].request["messages"][-1]["role"] == "tool"  # the output went back to the model
    steps = rt.store.steps(run.id)
    tool_step = next(x for x in steps if x.detail.get("tools"))
    assert tool_step.detail["tools"][0]["exit_code"] == 0
