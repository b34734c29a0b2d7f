"""Acceptance for the Slack adapter (issue 5): signed requests through uvicorn and Bolt,
a real Celery worker on Redis and Postgres, Slack's Web API faked at the HTTP boundary."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.slack.app import NOT_IN_CHANNEL, QUEUE_DOWN, Core, Listeners
from bot.slack.port import SlackChatPort
from bot.slack.render import unescape
from orchestrator.notices import ABORT, APPROVE, APPROVE_NOTE, Kind, Notice
from orchestrator.outbox import OutboxSender
from orchestrator.store.models import AuditEntry, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.conftest import DEFAULT_TEAMS
from tests.slack.conftest import APPROVER, GROUP_MEMBER, TOKEN, Bot
from tests.slack.fake_slack import FakeSlack
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.integration


def new_channel() -> str:
    return "C" + uuid.uuid4().hex[:10].upper()


def runs_in(store: Store, channel: str) -> list[Run]:
    with store.sessions() as session:
        return list(session.scalars(select(Run).where(Run.channel == channel).order_by(Run.id)))


def wait_run(store: Store, channel: str, statuses: set[str], timeout: float = 40) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = runs_in(store, channel)
        if runs and runs[-1].status in statuses:
            return runs[-1]
        time.sleep(0.1)
    raise AssertionError(f"run in {channel} never reached {statuses}: {runs_in(store, channel)}")


def posts(fake: FakeSlack, channel: str) -> list[Any]:
    return fake.calls_to("chat.postMessage", channel)


def wait_post(fake: FakeSlack, channel: str, needle: str, timeout: float = 40) -> Any:
    def find() -> Any:
        return next((c for c in posts(fake, channel) if needle in "".join(c.texts())), None)

    return fake.wait_for(find, timeout, f"a post containing {needle!r} in {channel}")


def test_run_opens_in_channel_and_reports_in_its_thread(bot: Bot) -> None:
    channel, fake = new_channel(), bot.fake
    response = bot.command("--team research summarise the release notes", channel=channel)
    assert response.status_code == 200
    assert "Queued" in response.json()["text"]
    run = wait_run(bot.store, channel, {RunStatus.FINISHED})
    result = wait_post(fake, channel, "Answer to:")

    opening, *rest = posts(fake, channel)
    assert opening.params.get("thread_ts") is None
    assert opening.params["text"].startswith(f"Run {run.id} for Riley Requester: summarise")
    thread = run.opened_ref
    assert thread is not None and run.thread == thread
    assert [c.params["thread_ts"] for c in rest] == [thread]  # the answer; the view streams
    assert result.params["thread_ts"] == thread
    # One progress view, streamed in the thread and finished before the answer appeared.
    (stream,) = fake.calls_to("chat.startStream", channel)
    assert stream.params["thread_ts"] == thread and run.progress_ref
    calls = fake.all_calls(channel)
    stop = fake.calls_to("chat.stopStream", channel)
    assert len(stop) == 1 and calls.index(stop[0]) < calls.index(result)
    assert "Finished" in str(stop[0].params["chunks"])
    assert not [c for c in calls[calls.index(result) :] if c.method != "chat.postMessage"]
    # The opening message shows the outcome.
    opening_updates = [u for u in fake.calls_to("chat.update", channel) if u.params["ts"] == thread]
    assert opening_updates and "Finished" in str(opening_updates[-1].blocks())


def _escalation(bot: Bot, channel: str) -> tuple[Run, Any, int]:
    response = bot.command("--team engineering write a parser", channel=channel)
    assert response.status_code == 200
    run = wait_run(bot.store, channel, {RunStatus.AWAITING_APPROVAL})
    post = bot.fake.wait_for(
        lambda: next(
            (
                c
                for c in posts(bot.fake, channel)
                if any(b["type"] == "actions" for b in c.blocks())
            ),
            None,
        ),
        20,
        "the escalation message",
    )
    (escalation,) = bot.store.pending_escalations(run.id)
    bot.fake.wait_for(lambda: bot.store.escalation(escalation.id).message_ref, 10, "message_ref")
    return bot.store.get_run(run.id), post, escalation.id


def test_escalation_buttons_refuse_strangers_and_approve_resumes(bot: Bot) -> None:
    channel, fake = new_channel(), bot.fake
    run, post, escalation_id = _escalation(bot, channel)
    buttons = next(b for b in post.blocks() if b["type"] == "actions")["elements"]
    assert [(b["action_id"], b.get("style"), b["value"]) for b in buttons] == [
        (APPROVE, "primary", str(escalation_id)),
        (APPROVE_NOTE, None, str(escalation_id)),
        (ABORT, "danger", str(escalation_id)),
    ]
    assert "confirm" in buttons[2]
    assert post.params["thread_ts"] == run.opened_ref

    click = dict(
        channel=channel,
        message_ts=bot.store.escalation(escalation_id).message_ref,
        thread_ts=run.opened_ref,
    )
    assert bot.click(APPROVE, escalation_id, user="USTRANGER1", **click).status_code == 200
    refusal = fake.wait_for(lambda: fake.calls_to("chat.postEphemeral", channel), 10, "refusal")
    assert refusal[0].params["user"] == "USTRANGER1"
    assert "not allowed" in refusal[0].params["text"]
    with bot.store.sessions() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.run_id == run.id)).all()
    assert [(a.actor, a.outcome) for a in audit] == [("USTRANGER1", "refused")]
    assert bot.store.get_run(run.id).status == RunStatus.AWAITING_APPROVAL

    # A member of the approvers' user group approves: the message loses its buttons.
    assert bot.click(APPROVE, escalation_id, user=GROUP_MEMBER, **click).status_code == 200
    update = fake.wait_for(
        lambda: [
            u
            for u in fake.calls_to("chat.update", channel)
            if u.params["ts"] == click["message_ts"]
        ],
        20,
        "the decision update",
    )[-1]
    assert all(b["type"] != "actions" for b in update.blocks())
    assert f"<@{GROUP_MEMBER}>" in "".join(update.texts())
    # The run resumed: it took more steps (grant +2) and paused again.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and bot.store.get_run(run.id).version <= run.version:
        time.sleep(0.1)
    assert bot.store.get_run(run.id).version > run.version


def test_abort_button_ends_the_run(bot: Bot) -> None:
    channel, fake = new_channel(), bot.fake
    run, _post, escalation_id = _escalation(bot, channel)
    ref = bot.store.escalation(escalation_id).message_ref
    # A mention in the paused run's thread reaches the run as human input.
    mention = {
        "type": "app_mention",
        "user": "UREQUEST1",
        "text": "<@UBOTSWITCH> use the stdlib only",
        "ts": "1700000200.000300",
        "thread_ts": run.opened_ref,
        "channel": channel,
        "event_ts": "1700000200.000300",
    }
    assert bot.event(mention, event_id=f"Ev{uuid.uuid4().hex[:10].upper()}").status_code == 200
    note = fake.wait_for(lambda: fake.calls_to("chat.postEphemeral", channel), 10, "the note")
    assert note[0].params["text"].startswith(f"Noted for run {run.id}")
    assert note[0].params["thread_ts"] == run.opened_ref
    assert any(a.action == "human_input" for a in bot.store.audit_entries(run.id))
    response = bot.click(
        ABORT,
        escalation_id,
        channel=channel,
        message_ts=ref,
        thread_ts=run.opened_ref,
        user="UREQUEST1",  # the requester may abort their own run
    )
    assert response.status_code == 200
    wait_run(bot.store, channel, {RunStatus.ABORTED}, timeout=10)
    wait_post(fake, channel, "Aborted", timeout=20)
    fake.wait_for(
        lambda: [u for u in fake.calls_to("chat.update", channel) if u.params["ts"] == ref],
        20,
        "the escalation message update",
    )


@pytest.mark.parametrize("how", ["unsigned", "wrong secret", "six minutes old"])
def test_bad_signatures_get_401_and_enqueue_nothing(bot: Bot, how: str) -> None:
    channel = new_channel()
    options: dict[str, Any] = {
        "unsigned": {"sign": False},
        "wrong secret": {"secret": "not-the-secret"},
        "six minutes old": {"timestamp": int(time.time()) - 360},
    }[how]
    response = bot.command("--team research hello", channel=channel, **options)
    assert response.status_code == 401
    time.sleep(0.5)
    assert runs_in(bot.store, channel) == []
    assert bot.fake.all_calls(channel) == []


def test_an_event_delivered_three_times_starts_one_run(bot: Bot) -> None:
    channel = new_channel()
    event = {
        "type": "app_mention",
        "user": "UREQUEST1",
        "text": "<@UBOTSWITCH> --team research compare the two designs",
        "ts": "1700000100.000100",
        "channel": channel,
        "event_ts": "1700000100.000100",
        "client_msg_id": str(uuid.uuid4()),
    }
    event_id = f"Ev{uuid.uuid4().hex[:10].upper()}"
    for retry in (0, 1, 2):
        assert bot.event(event, event_id=event_id, retry=retry).status_code == 200
    run = wait_run(bot.store, channel, {RunStatus.FINISHED})
    time.sleep(1)
    assert len(runs_in(bot.store, channel)) == 1
    assert run.thread == event["ts"]  # a mention's run lives in the mention's thread
    opening = [
        c for c in posts(bot.fake, channel) if "Run " in c.texts()[0] and " for " in c.texts()[0]
    ]
    assert len(opening) == 1 and opening[0].params["thread_ts"] == event["ts"]

    # A mention in the thread of a run that ended starts a follow-up there (live runs: see
    # the abort test).
    reply = {
        **event,
        "text": "<@UBOTSWITCH> focus on latency",
        "ts": "1700000100.000200",
        "thread_ts": event["ts"],
        "client_msg_id": str(uuid.uuid4()),
    }
    assert bot.event(reply, event_id=f"Ev{uuid.uuid4().hex[:10].upper()}").status_code == 200
    note = bot.fake.wait_for(lambda: bot.fake.calls_to("chat.postEphemeral", channel), 10, "ack")
    assert note[0].params["text"].endswith(f"follows up run {run.id} in this thread.")


def test_rate_limited_post_is_retried_once_nothing_lost_or_doubled(bot: Bot) -> None:
    channel, fake = new_channel(), bot.fake
    fake.fail_next("chat.postMessage", 429, retry_after=1, channel=channel)
    started = time.monotonic()
    bot.command("--team research list the risks", channel=channel)
    run = wait_run(bot.store, channel, {RunStatus.FINISHED})
    wait_post(fake, channel, "Answer to:")
    limited = [c for c in fake.calls if c.status == 429]
    assert limited and limited[-1].params.get("channel") == channel
    delivered = posts(fake, channel)
    assert delivered[0].at - limited[-1].at >= 0.9  # Retry-After was honoured
    assert delivered[0].at > started
    texts = [c.params["text"] + "".join(c.texts()) for c in delivered]
    assert sum(f"Run {run.id} for" in t for t in texts) == 1
    assert sum("Answer to:" in t for t in texts) == 1


def test_a_10000_character_answer_arrives_intact(bot: Bot) -> None:
    """Through the real outbox and port: split into sections, reassembled exactly."""
    channel, fake, store = new_channel(), bot.fake, bot.store
    run, _ = store.create_run(
        origin_key=f"long-{channel}",
        request="long",
        team="research",
        platform="slack",
        channel=channel,
        thread=None,
        requester="UREQUEST1",
        opened=Notice(Kind.OPENED, 0, "Run for UREQUEST1: long", requester="UREQUEST1"),
    )
    body = "".join(f"line {i}: a < b & c > d\n" for i in range(500))[:10_000]
    assert len(body) == 10_000
    store.add_notices(
        run.id, "final", [Notice(Kind.RESULT, run.id, "Finished", body=body, outcome="finished")]
    )
    port = SlackChatPort(WebClient(token=TOKEN, base_url=fake.url))
    OutboxSender(store, port, "slack").drain(run_ids=[run.id])
    _opening, result = posts(fake, channel)
    assert result.params["thread_ts"] == store.get_run(run.id).opened_ref
    sections = result.texts()
    assert all(len(s) <= 3000 for s in sections) and len(result.blocks()) <= 50
    assert unescape("".join(sections[1:])) == body


def test_agent_errors_come_back_as_ephemeral_text(bot: Bot) -> None:
    channel = new_channel()
    reply = bot.command("--team nosuchteam do it", channel=channel).json()
    assert reply["response_type"] == "ephemeral" and "Unknown team" in reply["text"]
    assert "say what you need" in bot.command("", channel=channel).json()["text"]
    bot.fake.not_member.add(channel)
    assert bot.command("hello there", channel=channel).json()["text"] == NOT_IN_CHANNEL
    assert "Teams:" in bot.command("teams", channel=channel).json()["text"]
    assert runs_in(bot.store, channel) == []


def test_queue_down_is_reported_not_hung(bot: Bot) -> None:
    class DownQueue:
        def start_run(self, **kwargs: Any) -> None:
            raise ConnectionError("broker down")

        advance = notify = start_run

    core = Core(bot.store, load_teams(DEFAULT_TEAMS), DownQueue())
    listeners = Listeners(core, AsyncWebClient(token=TOKEN, base_url=bot.fake.url))
    reply = asyncio.run(
        listeners.execute("hello there", user="U1", channel=new_channel(), thread=None, origin="x")
    )
    assert reply.text == QUEUE_DOWN


def test_health_and_metrics(bot: Bot) -> None:
    import httpx

    assert httpx.get(bot.url + "/healthz").json() == {"ok": True}
    metrics = httpx.get(bot.url + "/metrics")
    assert metrics.status_code == 200 and "switchboard_" in metrics.text


def test_agent_ack_returns_while_the_model_is_slow(bot: Bot, model_server: OpenAIServer) -> None:
    channel = new_channel()
    seen = len(model_server.completions)
    model_server.delay_s = 10
    try:
        started = time.monotonic()
        response = bot.command("--team research a slow question", channel=channel)
        elapsed = time.monotonic() - started
        assert response.status_code == 200 and "Queued" in response.json()["text"]
        assert elapsed < 1.5
        # The run really went to the (slow) model after the ack.
        bot.fake.wait_for(lambda: len(model_server.completions) > seen, 20, "a model call")
    finally:
        model_server.delay_s = 0


def test_status_and_abort_commands(bot: Bot) -> None:
    channel, fake = new_channel(), bot.fake
    run, _post, escalation_id = _escalation(bot, channel)
    status = bot.command(f"status {run.id}", channel=channel).json()["text"]
    assert f"Run #{run.id} [awaiting_approval]" in status and "pending escalation" in status
    assert "<@UREQUEST1>" in status and "```" not in status  # people, not raw ids
    refused = bot.command(f"abort {run.id}", channel=channel, user="USTRANGER1").json()["text"]
    assert refused.startswith("Only the requester or an approver")
    reply = bot.command(f"abort {run.id}", channel=channel, user=APPROVER).json()["text"]
    assert reply == f"Run {run.id} aborted."
    ref = bot.store.escalation(escalation_id).message_ref
    wait_post(fake, channel, "Aborted", timeout=20)
    fake.wait_for(
        lambda: [u for u in fake.calls_to("chat.update", channel) if u.params["ts"] == ref],
        20,
        "the escalation message update",
    )
