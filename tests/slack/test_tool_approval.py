"""A tool call approved or rejected in Slack: buttons, the reason modal (views.open and the
view_submission Slack sends back), and a follow-up mention in a finished run's thread."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.notices import APPROVE, REJECT
from orchestrator.store.models import RunStatus
from tests.conftest import DEFAULT_TEAMS
from tests.slack.conftest import APPROVER, Bot
from tests.slack.test_slack_adapter import new_channel, wait_post, wait_run
from tests.support.hosted_model import HostedModel, Styles
from tests.support.mcp_servers import stdio_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes") / "notes.txt"


@pytest.fixture(scope="module")
def model_server() -> Iterator[HostedModel]:
    """Hosted-model replies; the researcher appends a note through the MCP server."""
    styles = Styles(
        tool_plan=(("append_note", {"text": "restart web-1"}),),
        parallel=0.0,
        report_tokens=40,
        finish_with_report=1.0,
    )
    with HostedModel(api_key="sk-test", styles=styles) as server:
        yield server


@pytest.fixture(scope="module")
def teams_file(
    tmp_path_factory: pytest.TempPathFactory, model_server: HostedModel, notes: Path
) -> Path:
    data = yaml.safe_load(DEFAULT_TEAMS.read_text())
    tier = {"model": "openai/gpt-test", "api_base": model_server.url, "params": {}}
    data["tiers"] = {"cheap": dict(tier), "premium": dict(tier)}
    data["approvers"] = {"users": [APPROVER], "slack_usergroups": []}
    data["mcp_servers"] = {"notes": stdio_server(notes)}
    data["teams"]["research"]["workers"][0]["tools"] = ["notes.append_note"]
    path = tmp_path_factory.mktemp("teams") / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _calls(notes: Path) -> list[str]:
    path = Path(f"{notes}.calls")
    return [json.loads(x)["text"] for x in path.read_text().splitlines()] if path.exists() else []


def _held(bot: Bot, channel: str) -> tuple[int, dict, str, str]:
    # A request of its own: the model stand-in keeps one conversation per request.
    bot.command(f"--team research note the restart for {channel}", channel=channel)
    run = wait_run(bot.store, channel, {RunStatus.AWAITING_APPROVAL})
    post = wait_post(bot.fake, channel, "notes.append_note")
    [escalation] = bot.store.pending_escalations(run.id)
    bot.fake.wait_for(lambda: bot.store.escalation(escalation.id).message_ref, 10, "message_ref")
    ref = bot.store.escalation(escalation.id).message_ref
    buttons = next(b for b in post.blocks() if b["type"] == "actions")["elements"]
    return escalation.id, {"buttons": buttons, "run": run}, ref, run.opened_ref


def test_reject_opens_a_modal_and_the_reason_reaches_the_model(
    bot: Bot, model_server: HostedModel, notes: Path
) -> None:
    channel, fake = new_channel(), bot.fake
    escalation_id, held, ref, thread = _held(bot, channel)
    assert [b["action_id"] for b in held["buttons"]][-1] == REJECT
    assert '"text": "restart web-1"' in "".join(
        "".join(c.texts()) for c in fake.calls_to("chat.postMessage", channel)
    )
    trigger = fake.trigger()
    where = dict(channel=channel, message_ts=ref, thread_ts=thread, trigger=trigger)
    assert bot.click(REJECT, escalation_id, user=APPROVER, **where).status_code == 200
    view = fake.wait_for(lambda: fake.views and fake.views[-1], 10, "the reason modal")
    [opened] = [c for c in fake.calls if c.method == "views.open"]
    assert opened.params["trigger_id"] == trigger
    # The trigger is good once: Slack refuses it the second time.
    assert bot.click(REJECT, escalation_id, user=APPROVER, **where).status_code == 200
    fake.wait_for(lambda: [c for c in fake.calls if c.error == "exchanged_trigger_id"], 10, "")
    assert (
        bot.submit_view(view, {"note": "not during the freeze"}, user=APPROVER).status_code == 200
    )
    run = wait_run(bot.store, channel, {RunStatus.FINISHED})
    assert _calls(notes) == []
    told = [
        m["content"]
        for body in model_server.completions
        for m in body["messages"]
        if m["role"] == "tool"
    ]
    assert any(f"rejected by {APPROVER}: not during the freeze" in t for t in told)
    assert run.status == RunStatus.FINISHED


def test_approve_runs_the_call_once_and_a_follow_up_mention_starts_a_run(
    bot: Bot, model_server: HostedModel, notes: Path
) -> None:
    channel, fake = new_channel(), bot.fake
    escalation_id, _, ref, thread = _held(bot, channel)
    where = dict(channel=channel, message_ts=ref, thread_ts=thread)
    assert bot.click(APPROVE, escalation_id, user="USTRANGER1", **where).status_code == 200
    fake.wait_for(lambda: fake.calls_to("chat.postEphemeral", channel), 10, "refusal")
    assert bot.click(APPROVE, escalation_id, user=APPROVER, **where).status_code == 200
    first = wait_run(bot.store, channel, {RunStatus.FINISHED})
    assert _calls(notes).count("restart web-1") == 1
    # A mention in the finished run's thread: a follow-up run in the same thread.
    event = {
        "type": "app_mention",
        "user": "UREQUEST1",
        "text": "<@UBOTSWITCH> now make it shorter",
        "ts": "1800000000.000100",
        "thread_ts": thread,
        "channel": channel,
        "event_ts": "1800000000.000100",
    }
    assert bot.event(event, event_id=f"Ev{uuid.uuid4().hex[:10]}").status_code == 200
    follow = bot.fake.wait_for(
        lambda: [r for r in bot.store.recent_runs(channel=channel) if r.id != first.id],
        30,
        "the follow-up run",
    )[0]
    assert follow.thread == thread and follow.team == "research"
    supervisor = bot.fake.wait_for(
        lambda: next(
            (
                body
                for body in model_server.completions
                if "now make it shorter" in json.dumps(body["messages"])
                and any(t["function"]["name"] == "assign" for t in body.get("tools", []))
            ),
            None,
        ),
        30,
        "the follow-up's supervisor request",
    )
    prompt = supervisor["messages"][-1]["content"]
    assert f"Earlier request: note the restart for {channel}" in prompt
    assert (first.answer or "").strip()[:100] in prompt
