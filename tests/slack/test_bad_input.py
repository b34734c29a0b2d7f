"""Bad input and failures after the ack, through Slack (issue 13): signed requests through
uvicorn and Bolt, a real worker on Redis and Postgres, Slack faked at the HTTP boundary."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bot.slack.render import unescape
from orchestrator.settings import get_settings
from orchestrator.store.models import RunStatus
from tests.slack.conftest import APPROVER, GROUP_MEMBER, Bot, celery_for
from tests.slack.test_slack_adapter import new_channel, runs_in, wait_run

pytestmark = pytest.mark.integration


def event_id() -> str:
    return f"Ev{uuid.uuid4().hex[:10].upper()}"


def mention(channel: str, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
    ts = f"{int(time.time())}.{uuid.uuid4().int % 1_000_000:06d}"
    event = {
        "type": "app_mention",
        "user": "UREQUEST1",
        "text": f"<@UBOTSWITCH> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
    }
    return event | ({"thread_ts": thread_ts} if thread_ts else {})


def ephemerals(bot: Bot, channel: str, count: int = 1) -> list[str]:
    calls = bot.fake.wait_for(
        lambda: (c := bot.fake.calls_to("chat.postEphemeral", channel)) and len(c) >= count and c,
        15,
        f"{count} ephemeral message(s) in {channel}",
    )
    return [unescape(c.params["text"]) for c in calls]


def test_nul_and_oversized_requests_are_answered_and_nothing_is_queued(bot: Bot) -> None:
    channel = new_channel()
    reply = bot.command("--team research hello\x00world", channel=channel)
    assert reply.status_code == 200
    assert "contains a NUL character" in reply.json()["text"]
    reply = bot.command("summarise " + "x" * 9000, channel=channel)
    assert reply.status_code == 200
    assert "characters long; the limit is 8,000" in reply.json()["text"]
    time.sleep(1)
    assert runs_in(bot.store, channel) == []
    assert bot.fake.calls_to("chat.postMessage", channel) == []


def test_nul_in_a_mention_is_answered_never_a_500(bot: Bot) -> None:
    channel = new_channel()
    # A mention that would start a run.
    response = bot.event(mention(channel, "--team research hello\x00world"), event_id=event_id())
    assert response.status_code == 200
    assert "contains a NUL character" in ephemerals(bot, channel)[0]
    # A mention in a run's thread: before, storing it failed and Slack retried a 500 thrice.
    assert bot.command("--team research summarise", channel=channel).status_code == 200
    run = wait_run(bot.store, channel, {RunStatus.FINISHED})
    reply = mention(channel, "more\x00input", thread_ts=run.opened_ref)
    response = bot.event(reply, event_id=event_id())
    assert response.status_code == 200
    assert "The reply contains a NUL character" in ephemerals(bot, channel, 2)[1]


def test_a_start_that_fails_in_the_worker_reaches_the_user(bot: Bot, redis_broker: str) -> None:
    """The bot acked and queued; the worker then refuses (its teams file has no such team,
    say, mid-deploy). Before, the task failed and was acked, and the user heard nothing."""
    queue = celery_for(redis_broker)
    channel = new_channel()
    url = bot.fake.response_url(f"1/{uuid.uuid4().hex}")
    name = url.rsplit("/", 1)[-1]
    common = {
        "request": "summarise it",
        "team": "ghost",
        "platform": "slack",
        "channel": channel,
        "requester": "UREQUEST1",
    }
    queue.send_task(
        "switchboard.start_run",
        kwargs={
            **common,
            "thread": None,
            "origin_key": f"slack:cmd:{uuid.uuid4()}",
            "reply_to": {"user": "UREQUEST1", "channel": channel, "response_url": url},
        },
    )
    [answer] = bot.fake.wait_for(lambda: bot.fake.responses(name), 30, "the response_url")
    assert answer.params["response_type"] == "ephemeral"
    assert answer.params["text"].startswith("Unknown team 'ghost'. Teams: engineering, research")
    # A mention has no response_url: the same failure arrives as an ephemeral in its thread.
    queue.send_task(
        "switchboard.start_run",
        kwargs={
            **common,
            "thread": "1700000000.000001",
            "origin_key": f"slack:msg:{uuid.uuid4()}",
            "reply_to": {"user": "UREQUEST1", "channel": channel, "thread": "1700000000.000001"},
        },
    )
    note = bot.fake.wait_for(lambda: bot.fake.calls_to("chat.postEphemeral", channel), 30, "note")
    assert note[0].params["user"] == "UREQUEST1"
    assert note[0].params["thread_ts"] == "1700000000.000001"
    assert note[0].params["text"].startswith("Unknown team 'ghost'")
    assert runs_in(bot.store, channel) == []


def test_status_from_another_channel_reveals_nothing(bot: Bot) -> None:
    home, elsewhere = new_channel(), new_channel()
    assert bot.command("--team research the secret plan", channel=home).status_code == 200
    run = wait_run(bot.store, home, {RunStatus.FINISHED})
    seen = bot.command(f"status {run.id}", channel=home, user="USTRANGER1").json()["text"]
    assert "the secret plan" in unescape(seen)
    for user in ("USTRANGER1", "UREQUEST1"):
        text = bot.command(f"status {run.id}", channel=elsewhere, user=user).json()["text"]
        assert unescape(text) == f"There is no run {run.id} here."
    for approver in (APPROVER, GROUP_MEMBER):
        text = bot.command(f"status {run.id}", channel=elsewhere, user=approver).json()["text"]
        assert "the secret plan" in unescape(text)
    text = bot.command("abort 123456789012345678901234567890", channel=elsewhere).json()["text"]
    assert "no run id is that large" in text


@pytest.fixture
def one_run_each(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHBOARD_MAX_RUNS_PER_USER", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("SWITCHBOARD_MAX_RUNS_PER_USER")
    get_settings.cache_clear()


def test_a_second_run_over_the_cap_is_refused_with_the_count(bot: Bot, one_run_each: None) -> None:
    channel = new_channel()
    user = f"UCAP{uuid.uuid4().hex[:6].upper()}"
    # Engineering pauses for approval after 3 steps: the run stays in flight.
    assert (
        bot.command("--team engineering write a parser", channel=channel, user=user).status_code
        == 200
    )
    run = wait_run(bot.store, channel, {RunStatus.AWAITING_APPROVAL})
    reply = bot.command("--team research one more", channel=channel, user=user).json()["text"]
    assert reply == (
        f"You already have 1 run in flight (the limit is 1): #{run.id}. Wait for one to "
        "finish, or abort one with /agent abort RUN_ID."
    )
    assert len(runs_in(bot.store, channel)) == 1
