"""Acceptance for issue 16, end to end with nothing faked but Slack's Web API.

Real Prometheus evaluates a rule on a test target's metric and sends the alert to three
real Alertmanager replicas (the shipped config, unclustered, so each delivers the same
notification); they post to the Slack stand-in through their own Slack receiver and to
`switchboard alerts` (a subprocess), which opens the thread and starts the run that a
`switchboard worker` (another subprocess, on Redis and Postgres) executes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from orchestrator import service
from orchestrator.store.models import AlertGroup, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.alerts.conftest import teams_with_alerts
from tests.alerts.servers import (
    Alertmanager,
    Gauge,
    Prometheus,
    alertmanager_config,
    free_port,
    prometheus_config,
    wait_until,
)
from tests.conftest import DEFAULT_TEAMS, cloned_database
from tests.slack.fake_slack import FakeSlack
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

TOKEN = "live-test-intake-token-0123456789"
SLACK_TOKEN = "xoxb-live-test"
CHANNEL = "C0ALERTSLIVE"
RUNBOOK = "https://runbooks.example.com/switchboard/live-test"
ALERT = "SwitchboardLiveTestTrigger"
REPLICAS = 3


@dataclass
class Live:
    store: Store
    fake: FakeSlack
    trigger: Gauge
    prometheus: Prometheus
    managers: list[Alertmanager]
    intake_url: str
    processes: list[WorkerProcess]

    def logs(self) -> str:
        parts = [p.log()[-4000:] for p in self.processes]
        parts += [m.log()[-2000:] for m in self.managers] + [self.prometheus.log()[-2000:]]
        return "\n----\n".join(parts)

    def runs(self) -> list[Run]:
        with self.store.sessions() as session:
            return list(session.scalars(select(Run).where(Run.channel == CHANNEL).order_by(Run.id)))

    def groups(self) -> list[AlertGroup]:
        with self.store.sessions() as session:
            return list(session.scalars(select(AlertGroup).order_by(AlertGroup.id)))

    def webhook_sent(self, manager: Alertmanager) -> float:
        return manager.metric("alertmanager_notifications_total", integration="webhook")

    def webhook_failed(self) -> float:
        return sum(
            m.metric("alertmanager_notifications_failed_total", integration="webhook")
            for m in self.managers
        )

    def wait(self, predicate, what: str, timeout: float = 45.0):  # type: ignore[no-untyped-def]
        try:
            return wait_until(predicate, what, timeout)
        except AssertionError:
            raise AssertionError(f"{what}: not within {timeout}s\n{self.logs()}") from None


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, pg_template: str, redis_port: int
) -> Iterator[Live]:
    import redis

    tmp = tmp_path_factory.mktemp("alerts-live")
    redis.Redis(host="127.0.0.1", port=redis_port, db=2).flushdb()
    broker = f"redis://127.0.0.1:{redis_port}/2"
    # The research team pauses for a human after one step, so the run is still going when
    # the alert resolves: the resolution must reach it without ending it.
    base = yaml.safe_load(DEFAULT_TEAMS.read_text())
    base["teams"]["research"]["limits"] = {"max_steps": 1, "grant_steps": 10}
    teams = teams_with_alerts(tmp / "teams.yaml", channel=CHANNEL, base=base)
    load_teams(teams)
    (tmp / "intake-token").write_text(TOKEN)
    (tmp / "slack-token").write_text(SLACK_TOKEN)
    rules = tmp / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "switchboard-live-test",
                        "rules": [
                            {
                                "alert": ALERT,
                                "expr": "switchboard_live_test_trigger > 0",
                                "for": "1s",
                                "labels": {"severity": "critical"},
                                "annotations": {
                                    "summary": "The live test set its trigger",
                                    "runbook_url": RUNBOOK,
                                },
                            }
                        ],
                    }
                ]
            }
        )
    )
    processes: list[WorkerProcess] = []
    managers: list[Alertmanager] = []
    trigger = Gauge("switchboard_live_test_trigger", 0.0)
    prometheus = None
    with cloned_database(pg_template, "sb_alerts") as database, FakeSlack() as fake:
        env = {
            "DATABASE_URL": database,
            "BROKER_URL": broker,
            "SWITCHBOARD_TEAMS_FILE": str(teams),
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_API_URL": fake.url,
            "SWITCHBOARD_ALERTS_TOKEN": TOKEN,
            "LOG_JSON": "false",
        }
        try:
            processes.append(WorkerProcess(env, tmp / "worker.log").start())
            port = free_port()
            intake = WorkerProcess(
                env,
                tmp / "intake.log",
                command=["alerts", "--port", str(port), "--host", "127.0.0.1"],
                ready="Application startup complete",
            )
            processes.append(intake.start())
            intake_url = f"http://127.0.0.1:{port}/alerts"
            config = alertmanager_config(
                intake_url=intake_url,
                slack_api_url=fake.url + "chat.postMessage",
                intake_token_file=tmp / "intake-token",
                slack_token_file=tmp / "slack-token",
            )
            for index in range(REPLICAS):
                managers.append(Alertmanager(config, tmp / f"am{index}").start())
            prometheus = Prometheus(
                prometheus_config(
                    rule_file=rules,
                    target=trigger.address,
                    alertmanagers=[f"127.0.0.1:{m.port}" for m in managers],
                ),
                tmp / "prometheus",
            ).start()
            yield Live(Store(database), fake, trigger, prometheus, managers, intake_url, processes)
        finally:
            if prometheus is not None:
                prometheus.stop()
            for manager in managers:
                manager.stop()
            for process in processes:
                process.kill()
            trigger.close()


def test_an_unauthenticated_post_gets_401_and_starts_nothing(live: Live) -> None:
    before = (len(live.groups()), len(live.runs()))
    payload = {"version": "4", "groupKey": "{}:{}", "status": "firing", "alerts": []}
    for headers in ({}, {"authorization": "Bearer not-the-token-0123456789"}):
        response = httpx.post(live.intake_url, json=payload, headers=headers, timeout=10)
        assert response.status_code == 401
    assert (len(live.groups()), len(live.runs())) == before


def test_a_firing_rule_opens_one_thread_with_one_run_and_resolving_posts_once(
    live: Live,
) -> None:
    started = time.monotonic()
    live.trigger.value = 1.0

    # Every replica delivers the notification; one incident, one run, one thread.
    live.wait(
        lambda: (
            all(live.webhook_sent(m) >= 1 for m in live.managers)
            and sum(g.deliveries for g in live.groups()) >= REPLICAS
        ),
        "three deliveries of the firing notification",
    )
    (group,) = live.groups()
    assert group.deliveries >= REPLICAS and group.status == "firing"
    # The first delivery creates the run after admitting the group (its own transaction),
    # then links the group to it (another): the copies' admissions can be counted, and the
    # run seen, before the link lands.
    live.wait(
        lambda: live.runs() and all(g.run_id is not None for g in live.groups()),
        "the incident's run",
    )
    (run,) = live.runs()
    (group,) = live.groups()
    assert group.run_id == run.id and run.team == "research"
    run = live.wait(
        lambda: (r := live.store.get_run(run.id)) and r.status == RunStatus.AWAITING_APPROVAL and r,
        "the run to work and pause for a human",
    )
    thread = run.opened_ref
    assert thread is not None
    openings = [
        c for c in live.fake.calls_to("chat.postMessage", CHANNEL) if not c.params.get("thread_ts")
    ]
    assert len(openings) == 1 and f"Run {run.id} for alertmanager" in openings[0].params["text"]
    # Alertmanager's own Slack receiver told people as well.
    assert any(
        ALERT in str(c.params)
        for c in live.fake.calls_to("chat.postMessage", "#switchboard-oncall")
    )

    # The supervisor's first request carried the runbook and the alert's labels.
    first = next(call for call in live.store.llm_calls(run.id) if call.purpose == "supervisor")
    prompt = str(first.request)
    assert f"Runbook: {RUNBOOK}" in prompt
    assert f'alertname=\\"{ALERT}\\"' in prompt or f'alertname="{ALERT}"' in prompt
    assert "stack=" in prompt and "severity=" in prompt

    # Resolve: every replica sends "resolved"; the thread hears it once and the run is told.
    live.trigger.value = 0.0
    live.wait(
        lambda: all(live.webhook_sent(m) >= 2 for m in live.managers),
        "every replica to send the resolved notification",
    )

    def resolved_posts() -> list:  # type: ignore[type-arg]
        return [
            c
            for c in live.fake.calls_to("chat.postMessage", CHANNEL)
            if c.params.get("thread_ts") == thread and "Resolved" in " ".join(c.texts())
        ]

    live.wait(resolved_posts, "the resolved notice in the alert's thread")
    assert live.webhook_failed() == 0
    (group,) = live.groups()
    assert group.status == "resolved"
    run = live.store.get_run(run.id)
    assert run is not None and run.status == RunStatus.AWAITING_APPROVAL  # not aborted
    (note,) = live.store.human_inputs(run.id, 0)
    assert note.actor == "alertmanager" and ALERT in note.detail

    # A human approves; the investigation reads the resolution and answers in the thread.
    (escalation,) = live.store.pending_escalations(run.id)
    config = load_teams(Path(live.processes[0].env["SWITCHBOARD_TEAMS_FILE"]))
    decision = service.decide(
        live.store, config, escalation.id, True, service.Actor("operator", "console")
    )
    assert decision.resume_version is not None
    from tasks.app import use_broker
    from tasks.steps import enqueue

    use_broker(live.processes[0].env["BROKER_URL"])
    try:
        enqueue(run.id, decision.resume_version)
    finally:
        use_broker("memory://localhost/")
    live.wait(
        lambda: (r := live.store.get_run(run.id)) and r.status == RunStatus.FINISHED,
        "the investigation to finish",
    )
    calls = [c for c in live.store.llm_calls(run.id) if c.purpose == "supervisor"]
    assert any("resolved" in str(c.request) and "Human input" in str(c.request) for c in calls)
    live.wait(
        lambda: any(
            c.params.get("thread_ts") == thread and "Answer to:" in " ".join(c.texts())
            for c in live.fake.calls_to("chat.postMessage", CHANNEL)
        ),
        "the answer in the alert's thread",
    )
    assert len(resolved_posts()) == 1
    assert len(live.runs()) == 1
    with live.store.sessions() as session:
        assert session.scalar(select(func.count(AlertGroup.id))) == 1
    print(f"alert to answer, end to end: {time.monotonic() - started:.1f}s")
