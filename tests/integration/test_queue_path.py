"""A whole request through a real Celery worker process on Redis, state in Postgres."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator import service
from orchestrator.outbox import OutboxSender
from orchestrator.store.models import RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import load_teams
from tests.support.recording_port import RecordingPort
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


@pytest.fixture
def celery_app(redis_url: str, pg_url: str, make_teams, monkeypatch):  # type: ignore[no-untyped-def]
    """Point this process's Celery app at the test broker (producer side only)."""
    from tasks.app import app, use_broker

    teams = make_teams()
    use_broker(redis_url)
    yield app, teams
    use_broker("memory://localhost/")


def test_request_through_worker_process(
    celery_app, redis_url: str, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tasks.steps import advance

    _, teams = celery_app
    env = {"BROKER_URL": redis_url, "DATABASE_URL": pg_url, "SWITCHBOARD_TEAMS_FILE": str(teams)}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        store = Store(pg_url)
        config = load_teams(teams)
        run, created = service.start_run(
            store,
            config,
            request="summarise the design",
            team=None,
            platform="test",
            channel="C1",
            thread=None,
            requester="U1",
            origin_key="test:1",
        )
        assert created
        advance.delay(run.id, 0)
        done = wait_for(
            lambda: (r := store.get_run(run.id)) and r.status in RunStatus.TERMINAL and r
        )
        assert done.status == RunStatus.FINISHED, (done.error, worker.log()[-2000:])
        assert done.answer.startswith("Answer to: summarise the design")
        assert done.team == "research"

        steps = store.steps(run.id)
        assert [s.version for s in steps] == list(range(1, done.version + 1))
        assert [s.node for s in steps][:3] == ["router", "supervisor", "worker"]
        assert steps[-1].node == "supervisor"
        calls = store.llm_calls(run.id)
        assert len(calls) == len(steps)  # one model call per step with the scripted team
        assert all(c.tokens_in > 0 and c.cost_usd > 0 for c in calls)
        assert {c.purpose for c in calls} == {
            "route",
            "supervisor",
            "worker:researcher",
            "worker:writer",
        }
        for version in range(done.version + 1):
            assert store.load_checkpoint(run.id, version) is not None
        assert sum(s.tokens_in + s.tokens_out for s in steps) == store.spend(run_id=run.id).tokens

        port = RecordingPort()
        OutboxSender(store, port, "test", progress_interval_s=0).drain()
        kinds = port.kinds()
        assert kinds[0] == "post:opened"
        assert "post:result" in kinds
        result = next(c for c in port.calls if c.notice.kind == "result")
        assert result.notice.body == done.answer
        assert result.target.thread == port.calls[0].ref  # the answer goes into the run's thread
        # Draining again posts nothing twice.
        before = len(port.calls)
        OutboxSender(store, port, "test").drain()
        assert len(port.calls) == before
    finally:
        worker.stop()


def test_processes_runs_several_workers_under_one_command(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`switchboard worker --processes 2`: two Celery nodes with their own hostnames take
    runs from one queue; SIGTERM stops both and the command exits 0."""
    import signal

    from tests.support.workers import WorkerProcess

    s = stack()
    log = tmp_path / "pool.log"
    pool = WorkerProcess(
        s.env,
        log,
        command=[
            "worker",
            "--processes=2",
            "--concurrency=8",
            "--loglevel=INFO",
            "--hostname=pool@%h",
        ],
    )
    s.processes.append(pool.start())
    wait_for(lambda: "pool-1@" in log.read_text() and "pool-2@" in log.read_text(), 60)
    wait_for(lambda: log.read_text().count(" ready.") >= 2, 60)
    runs = [s.start(f"summarise the design, part {i}") for i in range(6)]
    for run in runs:
        assert s.wait(run.id, statuses=RunStatus.TERMINAL).status == RunStatus.FINISHED
    assert pool.proc is not None
    pool.proc.send_signal(signal.SIGTERM)
    assert pool.proc.wait(timeout=60) == 0
