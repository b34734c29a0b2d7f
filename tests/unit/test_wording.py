"""Words people read: why a run paused, durations, glimpses, who may approve, tool runs."""

from __future__ import annotations

from orchestrator import reports, wording
from orchestrator.teams import load_teams
from tests.conftest import DEFAULT_TEAMS


def test_pauses_are_said_in_words() -> None:
    assert (
        wording.pause_reason(
            "ping_pong", "The supervisor gave the same assignment 3 times in a row."
        )
        == "the team has given the same assignment 3 times"
    )
    assert (
        wording.pause_reason("stuck", "Worker coder produced near-identical output 4 times.")
        == "coder has produced nearly the same output 4 times"
    )
    assert wording.pause_reason("max_steps", "The run has used 3 of its 3 steps.") == (
        "it has used all the steps it was allowed"
    )
    assert wording.pause_reason("new_guard", "Something odd happened.") == "Something odd happened"
    assert wording.pause_reason("new_guard") == "new guard"


def test_durations_and_glimpses() -> None:
    assert [wording.duration(s) for s in (0.01, 2.34, 42, 245, 3720)] == [
        "<0.1s",
        "2.3s",
        "42s",
        "4m 05s",
        "1h 02m",
    ]
    text, cut = wording.excerpt("one two three four five", 12)
    assert (text, cut) == ("one two…", True)
    assert wording.excerpt("short", 12) == ("short", False)


def test_refusals_can_name_the_approvers_on_each_platform() -> None:
    config = load_teams(DEFAULT_TEAMS)
    config.approvers.users[:] = ["U0APPROVE1", "1100000000000000101"]
    config.approvers.slack_usergroups[:] = ["S0LEADS"]
    config.approvers.discord_roles[:] = ["1100000000000000777"]
    assert reports.approvers_text(config, "research", "slack") == (
        "Ask one of <@U0APPROVE1>, <@1100000000000000101> or <!subteam^S0LEADS>."
    )
    assert "<@&1100000000000000777>" in reports.approvers_text(config, "research", "discord")
    config.approvers.users[:] = []
    config.approvers.slack_usergroups[:] = []
    assert "No approvers are configured" in reports.approvers_text(config, None, "slack")


def test_tool_calls_read_as_sentences() -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.store.models import ToolCallRecord

    start = datetime(2026, 1, 1, tzinfo=UTC)
    record = ToolCallRecord(
        step=4,
        worker="coder",
        tool="run_code",
        arguments={"language": "python"},
        status="done",
        decision="allowed",
        result='{"exit_code": 0}',
        started_at=start,
        finished_at=start + timedelta(milliseconds=120),
    )
    assert reports._tool_line(record) == (
        'step 4: coder called run_code {"language": "python"}: exit code 0, 0.1s'
    )
    record.decision, record.decided_by, record.result = "rejected", "UAPPROVER", '{"error": "no"}'
    assert "rejected by UAPPROVER: error: no" in reports._tool_line(record)
    record.status = "started"
    assert "in doubt" in reports._tool_line(record)
