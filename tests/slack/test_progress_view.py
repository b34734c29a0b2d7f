"""What a channel member sees of a run, as the sequence of Web API calls Slack receives.

Runs go through the real engine (scripted models through litellm) on Postgres, one step
at a time, and the real outbox and Slack port drain after every step as the notify task
would; Slack is the local stand-in. Progress is throttled to one update a second while
the steps take milliseconds, which is how a late, throttled update used to land after
the final message.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import streaming
from bot.slack.port import SlackChatPort
from orchestrator import service
from orchestrator.engine import Outcome
from orchestrator.outbox import OutboxSender
from orchestrator.store.models import RunStatus
from tasks import bridge, runtime
from tests.slack.fake_slack import PEOPLE, FakeSlack
from tests.slack.test_render import BROADCASTS, _strings
from tests.support.drive import build

REQUESTER = "UREQUEST1"
APPROVER = "UAPPROVER1"
THREAD_POSTS = ("chat.postMessage", "chat.startStream")
VIEW_EDITS = ("chat.update", "chat.appendStream", "chat.stopStream")
READABLE = ("text", "blocks", "chunks", "markdown_text", "status")  # what people read
RAW_ID = re.compile(r"(?<![<@\w])U[A-Z0-9]{6,}\b")


@pytest.fixture
def fake() -> Any:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def rt(pg_url: str, make_teams: Any) -> runtime.Runtime:
    teams = make_teams(approvers={"users": [APPROVER], "slack_usergroups": []})
    return build(pg_url, teams)


def port_for(fake: FakeSlack) -> SlackChatPort:
    """A port with its own memory of what the workspace refused, as a fresh process has."""
    client = WebClient(token="xoxb-test", base_url=fake.url)
    return SlackChatPort(client, capabilities=streaming.Capabilities())


def start(rt: runtime.Runtime, request: str, channel: str, team: str | None = None) -> int:
    run, _ = service.start_run(
        rt.store,
        rt.config,
        request=request,
        team=team,
        platform="slack",
        channel=channel,
        thread=None,
        requester=REQUESTER,
        origin_key=None,
    )
    return run.id


def step_and_deliver(rt: runtime.Runtime, sender: OutboxSender, run_id: int) -> Outcome:
    """Step the run until it stops advancing, draining the outbox after every step."""
    sender.drain(run_ids=[run_id])
    run = rt.store.get_run(run_id)
    assert run is not None
    version = run.version
    for _ in range(100):
        outcome = bridge.run(rt.engine.step(run_id, version))
        sender.drain(run_ids=[run_id])
        if outcome.outcome is not Outcome.ADVANCED:
            return outcome.outcome
        version = outcome.version
    raise AssertionError("the run did not stop")


def settle(sender: OutboxSender, run_id: int) -> None:
    """What the notify task's countdown does: come back once the throttle has passed."""
    time.sleep(1.1)
    sender.drain(run_ids=[run_id])


def thread_calls(fake: FakeSlack, channel: str, thread: str) -> list[Any]:
    return [
        c
        for c in fake.all_calls(channel)
        if c.error is None
        and (
            (c.method in THREAD_POSTS and c.params.get("thread_ts") == thread)
            or c.method in VIEW_EDITS
        )
    ]


def test_an_eight_step_run_posts_three_thread_messages_and_the_view_ends_first(
    rt: runtime.Runtime, fake: FakeSlack
) -> None:
    channel = "C" + uuid.uuid4().hex[:9].upper()
    request = "compare the two queue designs and recommend one " * 12  # over 300 characters
    run_id = start(rt, request, channel)
    sender = OutboxSender(rt.store, port_for(fake), "slack", progress_interval_s=1.0)
    assert step_and_deliver(rt, sender, run_id) is Outcome.DONE
    settle(sender, run_id)
    run = rt.store.get_run(run_id)
    assert run is not None and run.status == RunStatus.FINISHED
    assert len(rt.store.steps(run_id)) == 8

    posts = [c for c in fake.all_calls(channel) if c.method in THREAD_POSTS and c.error is None]
    opening, *in_thread = posts
    assert opening.params.get("thread_ts") is None
    assert [c.method for c in in_thread] == [
        "chat.postMessage",  # the whole request
        "chat.startStream",  # the progress view
        "chat.postMessage",  # the answer
    ]
    whole, view, answer = in_thread
    assert view.params["task_display_mode"] == "plan"
    assert all(c.params["thread_ts"] == run.opened_ref for c in in_thread)
    assert request.strip() in "".join(whole.texts()).replace("&amp;", "&")
    assert opening.texts()[0].endswith("…") and len(opening.texts()[0]) < 400
    assert "*" not in opening.texts()[0].split("\n", 1)[1]  # no bold request cut mid-word

    # Every edit of the view comes before the answer; the last one finishes the stream.
    calls = fake.all_calls(channel)
    answer_at = calls.index(answer)
    assert (run.progress_ref or "").startswith("stream:")
    edits = [c for c in calls if c.method in VIEW_EDITS and c.error is None]
    view_edits = [c for c in edits if c.method != "chat.update"]
    assert view_edits and all(calls.index(c) < answer_at for c in view_edits)
    last = view_edits[-1]
    assert last.method == "chat.stopStream"
    closing = "".join(chunk.get("text", "") for chunk in last.params["chunks"])
    assert "Finished" in closing and "tokens" in closing and "$" in closing
    cards = [
        chunk
        for c in view_edits
        for chunk in c.params.get("chunks") or []
        if chunk["type"] == "task_update"
    ]
    assert {card["status"] for card in cards[-8:]} == {"complete"}
    assert any("Router chose team" in card["title"] for card in cards)
    # The opening message shows the outcome before the answer appears, and nothing after.
    opening_edits = [c for c in edits if c.method == "chat.update"]
    assert opening_edits and opening_edits[-1].params["ts"] == run.opened_ref
    assert calls.index(opening_edits[-1]) < answer_at
    assert "Finished" in str(opening_edits[-1].blocks())
    assert calls[-1] == answer or all(c.method not in VIEW_EDITS for c in calls[answer_at:])
    # Slack's thread status said the team was working, and was cleared at the end.
    statuses = [c.params["status"] for c in fake.calls_to("assistant.threads.setStatus", channel)]
    assert streaming.WORKING_STATUS in statuses and statuses[-1] == ""


@pytest.mark.parametrize(
    "error", ["not_allowed_token_type", "feature_not_enabled", "unknown_method"]
)
def test_refused_streaming_falls_back_to_updates_once_per_workspace(
    rt: runtime.Runtime, fake: FakeSlack, error: str
) -> None:
    fake.refuse_ai(error)
    port = port_for(fake)
    channel = "C" + uuid.uuid4().hex[:9].upper()
    sender = OutboxSender(rt.store, port, "slack", progress_interval_s=1.0)
    for request in ("summarise the release notes", "list the open risks"):
        run_id = start(rt, request, channel, team="research")
        step_and_deliver(rt, sender, run_id)
        settle(sender, run_id)
    refused = [c for c in fake.all_calls(channel) if c.error == error]
    assert [c.method for c in refused] == ["assistant.threads.setStatus", "chat.startStream"]
    assert fake.calls_to("chat.appendStream") == fake.calls_to("chat.stopStream") == []
    calls = fake.all_calls(channel)
    for run in (rt.store.get_run(r) for r in _runs(rt, channel)):
        assert run is not None and run.progress_ref and not run.progress_ref.startswith("stream")
        view_updates = [
            c for c in calls if c.method == "chat.update" and c.params["ts"] == run.progress_ref
        ]
        answer = next(
            c
            for c in calls
            if c.method == "chat.postMessage"
            and c.params.get("thread_ts") == run.opened_ref
            and "Finished" in c.texts()[0]
        )
        assert view_updates and calls.index(view_updates[-1]) < calls.index(answer)
        final = view_updates[-1]
        assert ":white_check_mark: *Finished" in final.texts()[0]
        assert "tokens" in str(final.blocks()) and "$" in str(final.blocks())
        thread = [
            c
            for c in calls
            if c.method == "chat.postMessage" and c.params.get("thread_ts") == run.opened_ref
        ]
        assert len(thread) == 2  # the view and the answer


def test_a_stream_slack_ended_is_edited_as_a_message(rt: runtime.Runtime, fake: FakeSlack) -> None:
    channel = "C" + uuid.uuid4().hex[:9].upper()
    run_id = start(rt, "summarise the release notes", channel, team="research")
    sender = OutboxSender(rt.store, port_for(fake), "slack", progress_interval_s=0)
    sender.drain(run_ids=[run_id])
    outcome = bridge.run(rt.engine.step(run_id, 0))
    sender.drain(run_ids=[run_id])
    assert len(fake.calls_to("chat.startStream", channel)) == 1
    run = rt.store.get_run(run_id)
    assert run is not None and (run.progress_ref or "").startswith(streaming.REF_PREFIX)
    ts = run.progress_ref[len(streaming.REF_PREFIX) :]
    fake.end_stream(ts)
    assert outcome.outcome is Outcome.ADVANCED
    assert step_and_deliver(rt, sender, run_id) is Outcome.DONE
    calls = fake.all_calls(channel)
    refused = [c for c in calls if c.error == "message_not_in_streaming_state"]
    assert refused and refused[0].method == "chat.appendStream"
    edits = [c for c in calls if c.method == "chat.update" and c.params["ts"] == ts]
    answer = next(c for c in calls if c.method == "chat.postMessage" and "Answer" in str(c.params))
    assert edits and calls.index(edits[-1]) < calls.index(answer)
    assert ":white_check_mark: *Finished" in edits[-1].texts()[0]


def _runs(rt: runtime.Runtime, channel: str) -> list[int]:
    from sqlalchemy import select

    from orchestrator.store.models import Run

    with rt.store.sessions() as session:
        return list(session.scalars(select(Run.id).where(Run.channel == channel)))


def test_an_escalation_waits_in_the_view_and_people_have_names(
    pg_url: str, make_teams: Any, fake: FakeSlack
) -> None:
    teams = make_teams(
        limits={"max_steps": 3, "stuck_window": 50, "grant_steps": 2},
        approvers={"users": [APPROVER], "slack_usergroups": []},
    )
    rt = build(pg_url, teams)
    channel = "C" + uuid.uuid4().hex[:9].upper()
    nasty = "tell " + " ".join(BROADCASTS) + " about it"
    run_id = start(rt, nasty, channel, team="research")
    sender = OutboxSender(rt.store, port_for(fake), "slack", progress_interval_s=1.0)
    assert step_and_deliver(rt, sender, run_id) is Outcome.WAITING
    calls = fake.all_calls(channel)
    escalation = next(c for c in calls if any(b["type"] == "actions" for b in c.blocks()))
    assert "paused: it has used all the steps it was allowed" in escalation.params["text"]
    before = calls[: calls.index(escalation)]
    last_view = [c for c in before if c.method in ("chat.startStream", "chat.appendStream")][-1]
    plan = next(ch for ch in last_view.params["chunks"] if ch["type"] == "plan_update")
    assert plan["title"].startswith("Paused, waiting for approval: it has used all the steps")
    statuses = [c.params["status"] for c in fake.calls_to("assistant.threads.setStatus", channel)]
    assert statuses[-1] == ""  # nothing is working while the run waits

    (pending,) = rt.store.pending_escalations(run_id)
    actor = service.Actor(APPROVER, "slack", channel)
    result = service.decide(rt.store, rt.config, pending.id, False, actor)
    assert result.outcome == service.DecisionOutcome.APPLIED
    sender.drain(run_ids=[run_id])
    settle(sender, run_id)
    calls = fake.all_calls(channel)
    ref = pending_ref(rt, pending.id)
    decision = next(c for c in calls if c.method == "chat.update" and c.params["ts"] == ref)
    heading = decision.texts()[0]
    assert f"Aborted by <@{APPROVER}> at <!date^" in heading and "UTC>" in heading
    aborted = next(c for c in calls if c.method == "chat.postMessage" and "Aborted" in c.texts()[0])
    assert f"Aborted by {PEOPLE[APPROVER]}." in "".join(aborted.texts())
    stop = fake.calls_to("chat.stopStream", channel)[-1]
    assert calls.index(stop) < calls.index(aborted)
    assert f"Aborted by {PEOPLE[APPROVER]}" in str(stop.params["chunks"])

    # Nothing a person reads shows a raw user id, and nothing broadcasts.
    for call in calls:
        if call.method in ("users.info", "auth.test"):
            continue
        readable = {k: v for k, v in call.params.items() if k in READABLE}
        for text in _strings(readable):
            assert not RAW_ID.search(text.replace("\u200b", "")), (call.method, text[:200])
        for text in _strings(call.params):
            for token in BROADCASTS:
                assert token not in text, (call.method, token, text[:200])


def pending_ref(rt: runtime.Runtime, escalation_id: int) -> str:
    escalation = rt.store.escalation(escalation_id)
    assert escalation is not None and escalation.message_ref
    return escalation.message_ref


def test_names_are_looked_up_once_and_unknown_people_fall_back_to_slack_mentions(
    fake: FakeSlack,
) -> None:
    port = port_for(fake)
    assert port.display_name("UREQUEST1") == "Riley Requester"
    assert port.display_name("UREQUEST1") == "Riley Requester"
    assert len(fake.calls_to("users.info")) == 1
    assert port.display_name("UNOBODY99") == "<@UNOBODY99>"
    assert port.display_name("console-alice") == "console-alice"


def test_the_stand_in_follows_slacks_streaming_rules() -> None:
    """A stream into a channel names its recipient, and refuses edits until it stops."""
    with FakeSlack() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url)
        with pytest.raises(SlackApiError) as missing:
            client.api_call("chat.startStream", json={"channel": "C1", "thread_ts": "1.1"})
        assert missing.value.response["error"] == "missing_recipient_user_id"
        ts = client.api_call(
            "chat.startStream",
            json={
                "channel": "C1",
                "thread_ts": "1.1",
                "recipient_user_id": "U1",
                "recipient_team_id": "T1",
            },
        )["ts"]
        with pytest.raises(SlackApiError) as conflict:
            client.chat_update(channel="C1", ts=ts, text="x")
        assert conflict.value.response["error"] == "streaming_state_conflict"
        client.api_call("chat.stopStream", json={"channel": "C1", "ts": ts})
        with pytest.raises(SlackApiError) as stopped:
            client.api_call("chat.appendStream", json={"channel": "C1", "ts": ts})
        assert stopped.value.response["error"] == "message_not_in_streaming_state"
        client.chat_update(channel="C1", ts=ts, text="edited after the stream stopped")
