"""Context budgets: workers get a running summary plus the last few messages, not everything."""

from __future__ import annotations

import pytest

from orchestrator.store.models import RunStatus
from tests.support.drive import build, drive, start

pytestmark = pytest.mark.integration


def test_transcript_past_the_threshold_is_summarised_by_the_cheap_tier(
    pg_url: str, make_teams
) -> None:  # type: ignore[no-untyped-def]
    teams = make_teams(
        limits={"summary_threshold_tokens": 100, "keep_last_messages": 2, "stuck_window": 50}
    )
    rt = build(pg_url, teams)
    request = (
        "summarise the design of the billing system, its ledger, its invoices, its retry "
        "policy, its reconciliation jobs, its failure modes and the alerts that cover them"
    )
    run = start(rt, request)
    drive(rt, run.id)
    assert rt.store.get_run(run.id).status == RunStatus.FINISHED
    calls = rt.store.llm_calls(run.id)
    summaries = [c for c in calls if c.purpose == "summary"]
    assert summaries, "the transcript passed 100 tokens, so the cheap tier summarised it"
    assert all(c.tier == "cheap" and c.model == "scripted/cheap" for c in summaries)
    final = rt.store.load_checkpoint(run.id, rt.store.get_run(run.id).version)
    assert final["summary"].startswith("Summary: ")
    assert 0 < final["summarised_upto"] <= len(final["messages"]) - 2
    # A worker after the first summary sees the summary and at most the last 2 messages.
    first = min(c.step for c in summaries)
    later = [c for c in calls if c.purpose.startswith("worker:") and c.step > first]
    assert later
    prompt = later[0].request["messages"][1]["content"]
    assert "Summary of earlier work:" in prompt
    assert prompt.split("Recent reports:\n", 1)[1].count("\n- [") <= 1
