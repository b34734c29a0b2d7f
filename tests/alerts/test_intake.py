"""The intake's decisions on a real database: one run per alert group however often it is
delivered, news in the thread, resolution once, storms bounded with one held message.

The queue here records what would be sent to Celery (the live test runs real workers);
chat goes through the real Slack port and outbox sender to the Slack stand-in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select, update

from bot.alerts.held import HeldNotices
from bot.alerts.intake import REQUESTER, Intake, Receipt
from bot.alerts.payload import parse
from bot.slack.port import SlackChatPort
from orchestrator.outbox import OutboxSender
from orchestrator.store.alerts import Decision, Firing, ThreadNote
from orchestrator.store.models import AlertGroup, OutboxItem, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.alerts.conftest import ONCALL
from tests.alerts.notifications import RUNBOOK, alert, body, notification
from tests.slack.fake_slack import FakeSlack


@dataclass
class RecordingQueue:
    """Stands in for Celery's send_task: records the sends, or fails like a broker that is down."""

    down: bool = False
    advanced: list[tuple[int, int]] = field(default_factory=list)
    notified: list[tuple[str, list[int]]] = field(default_factory=list)

    def advance(self, run_id: int, version: int, traceparent: str | None = None) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.advanced.append((run_id, version))

    def notify(self, platform: str, run_ids: list[int]) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.notified.append((platform, run_ids))


@dataclass
class Env:
    store: Store
    intake: Intake
    queue: RecordingQueue
    fake: FakeSlack

    def deliver(self, payload: dict[str, Any]) -> Receipt:
        return self.intake.receive(parse(body(payload)))

    def runs(self) -> list[Run]:
        with self.store.sessions() as session:
            return list(session.scalars(select(Run).where(Run.channel == ONCALL).order_by(Run.id)))

    def outbox(self, run_id: int, kind: str = "note") -> list[OutboxItem]:
        with self.store.sessions() as session:
            return list(
                session.scalars(
                    select(OutboxItem)
                    .where(OutboxItem.run_id == run_id, OutboxItem.kind == kind)
                    .order_by(OutboxItem.id)
                )
            )

    def port(self) -> SlackChatPort:
        return SlackChatPort(WebClient(token="xoxb-test", base_url=self.fake.url))


@pytest.fixture(params=["postgres", "sqlite"])
def make_env(
    request: pytest.FixtureRequest, alert_teams: Callable[..., Path]
) -> Iterator[Callable[..., Env]]:
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    with FakeSlack() as fake:

        def make(**kwargs: Any) -> Env:
            config = load_teams(alert_teams(**kwargs))
            queue = RecordingQueue()
            store = Store(url)
            return Env(store, Intake(store, config, queue), queue, fake)

        yield make


def test_a_group_starts_one_run_however_often_it_is_delivered(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    outcomes = [env.deliver(notification()).outcome for _ in range(3)]
    assert outcomes == ["start", "duplicate", "duplicate"]
    (run,) = env.runs()
    assert run.team == "research" and run.requester == REQUESTER and run.thread is None
    assert run.origin_key is not None and run.origin_key.startswith("alert:")
    # The supervisor's first request carries the runbook, the labels and the source link.
    assert f"Runbook: {RUNBOOK}" in run.request
    assert 'alertname="SwitchboardTargetDown"' in run.request
    assert "Source: http://prometheus:9090/graph" in run.request
    assert env.queue.advanced == [(run.id, 0)]
    assert env.queue.notified == [("slack", [run.id])]
    assert len(env.outbox(run.id, "opened")) == 1
    with env.store.sessions() as session:
        (group,) = session.scalars(select(AlertGroup))
    assert group.deliveries == 3 and group.run_id == run.id and group.enqueued_at is not None


def test_new_alerts_join_the_open_thread_and_reach_the_run(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    env.deliver(notification(alert("aa")))
    both = notification(alert("aa"), alert("bb", instance="10.0.0.8:9100"))
    assert [env.deliver(both).outcome for _ in range(2)] == ["joined", "duplicate"]
    (run,) = env.runs()
    (news,) = env.outbox(run.id)
    assert news.payload["title"] == "1 more alert firing in SwitchboardTargetDown"
    assert "10.0.0.8:9100" in news.payload["body"]
    (note,) = env.store.human_inputs(run.id, 0)
    assert note.actor == "alertmanager" and "10.0.0.8:9100" in note.detail


def test_resolution_is_posted_once_in_the_thread_and_does_not_stop_the_run(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    env.deliver(notification(alert("aa")))
    resolved = notification(alert("aa", status="resolved", ends_at="2026-11-28T05:09:00Z"))
    assert [env.deliver(resolved).outcome for _ in range(3)] == ["resolved", "not_open", "not_open"]
    (run,) = env.runs()
    assert run.status == RunStatus.QUEUED  # told, not aborted
    (news,) = env.outbox(run.id)
    assert news.payload["title"] == "Resolved: SwitchboardTargetDown"
    (note,) = env.store.human_inputs(run.id, 0)
    assert "resolved at 2026-11-28T05:09:00Z" in note.detail and "Do not stop" in note.detail
    # Through the real outbox and Slack port: the opening message, then "resolved" in its thread.
    OutboxSender(env.store, env.port(), "slack").drain(run_ids=[run.id])
    posts = env.fake.calls_to("chat.postMessage", ONCALL)
    assert [p for p in posts if p.params.get("thread_ts") is None]  # one opening
    # (a request longer than the opening's excerpt is also posted in full in the thread)
    [news_post] = [p for p in posts if "Resolved" in p.texts()[0]]
    assert news_post.params["thread_ts"] == opening_ts(env, run.id)


def opening_ts(env: Env, run_id: int) -> str:
    run = env.store.get_run(run_id)
    assert run is not None and run.opened_ref is not None
    return run.opened_ref


def test_a_late_copy_after_resolution_starts_nothing_but_firing_anew_does(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    env.deliver(notification(alert("aa")))
    env.deliver(notification(alert("aa", status="resolved")))
    # A slower Alertmanager replica still sends the old firing notification.
    assert env.deliver(notification(alert("aa"))).outcome == "duplicate"
    assert len(env.runs()) == 1
    # The same alert firing again later is a new incident with its own thread.
    again = notification(alert("aa", starts_at="2026-11-28T07:00:00.000Z"))
    assert env.deliver(again).outcome == "start"
    first, second = env.runs()
    assert first.origin_key != second.origin_key


def test_a_storm_is_bounded_with_one_held_message(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(runs=2, per_seconds=600)
    names = [f"SwitchboardStorm{i}" for i in range(5)]
    outcomes = [env.deliver(notification(alertname=name)).outcome for name in names]
    assert outcomes == ["start", "start", "held", "held", "held"]
    assert len(env.runs()) == 2
    port = env.port()
    held = HeldNotices(env.intake.alerts, env.intake.config.alerts.per_channel, lambda _: port)
    assert held.flush() == 1
    (post,) = env.fake.calls_to("chat.postMessage", ONCALL)
    assert post.params.get("thread_ts") is None
    text = " ".join(post.texts())
    assert "3 more alerts held" in text and "SwitchboardStorm4" in text
    assert "2 alert investigations per 10 minutes" in text
    # Another group joins the storm: the same message is updated, not a second one posted.
    assert env.deliver(notification(alertname="SwitchboardStorm5")).outcome == "held"
    assert held.flush() == 1 and held.flush() == 0
    (edit,) = env.fake.calls_to("chat.update", ONCALL)
    assert edit.params["ts"] == notice_ref(env)
    assert "4 more alerts held" in " ".join(edit.texts())
    assert len(env.fake.calls_to("chat.postMessage", ONCALL)) == 1
    # A held group sent again while the channel is still over its rate stays held, once.
    assert env.deliver(notification(alertname="SwitchboardStorm2")).outcome == "still_held"
    assert env.intake.alerts.channel_state("slack", ONCALL).held == 4
    # A held group that resolves needs no thread.
    resolved = notification(
        alert("f0a1b2c3d4e5f607", status="resolved", alertname="SwitchboardStorm3"),
        alertname="SwitchboardStorm3",
    )
    assert env.deliver(resolved).outcome == "dropped"
    # Once the window has passed, a held group sent again is investigated.
    with env.store.session() as session:
        session.execute(
            update(AlertGroup).values(started_at=datetime.now(UTC) - timedelta(seconds=700))
        )
    assert env.deliver(notification(alertname="SwitchboardStorm2")).outcome == "start"
    assert len(env.runs()) == 3


def notice_ref(env: Env) -> str:
    state = env.intake.alerts.channel_state("slack", ONCALL)
    assert state is not None and state.notice_ref is not None
    return state.notice_ref


def test_a_queue_outage_is_retried_into_the_same_run(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    env.queue.down = True
    with pytest.raises(ConnectionError):
        env.deliver(notification())
    env.queue.down = False
    assert env.deliver(notification()).outcome == "resume"
    assert env.deliver(notification()).outcome == "duplicate"
    (run,) = env.runs()
    assert env.queue.advanced == [(run.id, 0)]


def test_a_group_no_route_matches_is_ignored(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    assert env.deliver(notification(severity="warning")).outcome == "ignored"
    assert env.runs() == []
    with env.store.sessions() as session:
        assert list(session.scalars(select(AlertGroup))) == []


def test_resolution_after_the_run_ended_is_posted_without_input(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    env.deliver(notification(alert("aa")))
    (run,) = env.runs()
    with env.store.session() as session:
        session.execute(update(Run).where(Run.id == run.id).values(status=RunStatus.FINISHED))
    assert env.deliver(notification(alert("aa", status="resolved"))).outcome == "resolved"
    assert len(env.outbox(run.id)) == 1
    assert env.store.human_inputs(run.id, 0) == []


def test_simultaneous_copies_start_one_run_and_queue_it_once(make_env) -> None:  # type: ignore[no-untyped-def]
    """Several Alertmanager replicas deliver at the same moment: one decides to start, the
    others see the start in progress and leave it alone."""
    env = make_env()
    barrier = threading.Barrier(4)

    def deliver() -> str:
        barrier.wait()
        return env.deliver(notification()).outcome

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(lambda _: deliver(), range(4)))
    assert outcomes == ["duplicate", "duplicate", "duplicate", "start"]
    (run,) = env.runs()
    assert env.queue.advanced == [(run.id, 0)]


def test_a_copy_arriving_while_the_start_is_in_flight_leaves_it_alone(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    parsed = parse(body(notification()))
    firing = Firing(
        key_hash=parsed.key_hash,
        group_key=parsed.group_key,
        receiver="r",
        name="SwitchboardTargetDown",
        route="switchboard-critical",
        team="research",
        platform="slack",
        channel=ONCALL,
        alerts=parsed.instances(firing_only=True),
    )
    alerts = env.intake.alerts

    def admit() -> Decision:
        return alerts.admit(firing, runs=5, per_seconds=600, note_for=_no_note).decision

    assert admit() == Decision.START
    assert admit() == Decision.DUPLICATE  # the starter is still at it
    (group,) = env_groups(env)
    alerts.start_failed(group.id)
    assert admit() == Decision.RESUME  # the starter gave up: this copy finishes the start
    alerts.mark_enqueued(group.id)
    assert admit() == Decision.DUPLICATE


def test_resolved_incidents_are_forgotten_after_the_retention_open_ones_never(make_env) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.store.alerts import AlertStore

    env = make_env()
    env.deliver(notification(alert("aa")))
    env.deliver(notification(alert("aa", status="resolved")))
    other = notification(alert("bb", alertname="DiskFull"), alertname="DiskFull")
    assert env.deliver(other).outcome == "start"  # another group, still firing
    alerts = AlertStore(env.store)
    now = datetime.now(UTC)
    assert alerts.prune_resolved(now - timedelta(days=7)) == 0  # resolved just now: kept
    assert len(env_groups(env)) == 2
    assert alerts.prune_resolved(now + timedelta(seconds=1)) == 1
    (left,) = env_groups(env)
    assert left.status == "firing" and left.resolved_at is None
    assert len(env.runs()) == 2  # runs and their threads are not touched


def _no_note(new: tuple[str, ...]) -> ThreadNote:
    raise AssertionError("no alert joined")


def env_groups(env: Env) -> list[AlertGroup]:
    with env.store.sessions() as session:
        return list(session.scalars(select(AlertGroup)))
