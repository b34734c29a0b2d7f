"""A worker going on with a run: the commit keeps the lease for the next step, which then
starts without reading; nobody else can step the run meanwhile, and a slice handed back
frees it at once. On Postgres (the async hot path) and SQLite (the synchronous one)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from orchestrator.engine import Outcome
from orchestrator.store.models import Run, RunStatus, Step
from tasks import bridge, runtime
from tasks.steps import run_slice
from tests.support.drive import build, start

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "sqlite"])
def rt(request: pytest.FixtureRequest, make_teams) -> runtime.Runtime:  # type: ignore[no-untyped-def]
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    return build(url, make_teams())


def lease(rt: runtime.Runtime, run_id: int) -> str | None:
    with rt.store.sessions() as session:
        return session.scalar(select(Run.lease_owner).where(Run.id == run_id))


def test_a_held_lease_keeps_other_workers_out_until_released(rt, make_teams) -> None:  # type: ignore[no-untyped-def]
    run = start(rt, "Research the history of the transistor")
    first = bridge.run(rt.engine.step(run.id, 0, hold_next=True))
    assert first.outcome is Outcome.ADVANCED
    assert lease(rt, run.id) is not None  # committed v1 and leased it, in one statement

    # Another worker (its own engine) is refused while the lease is held.
    other = build(rt.store.url, make_teams(name="other.yaml"))
    refused = bridge.run(other.engine.step(run.id, first.version))
    assert refused.outcome is Outcome.BUSY and refused.retry_in >= 1.0

    # The holder goes on without a begin_step: its lease, then its commit.
    calls: list[str] = []
    begin = rt.store.abegin_step

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append("begin")
        return await begin(*args, **kwargs)

    rt.store.abegin_step = counting  # type: ignore[method-assign]
    second = bridge.run(rt.engine.step(run.id, first.version, hold_next=True))
    assert second.outcome is Outcome.ADVANCED and second.version == first.version + 1
    assert calls == []

    # Handing the run back frees it for anyone at once.
    bridge.run(rt.engine.release(run.id, second.version))
    assert lease(rt, run.id) is None
    third = bridge.run(other.engine.step(run.id, second.version))
    assert third.outcome is Outcome.ADVANCED


def test_a_slice_runs_a_run_to_its_end_one_commit_per_step(rt) -> None:  # type: ignore[no-untyped-def]
    run = start(rt, "Research the history of the transistor")
    handback = bridge.run(run_slice(rt, run.id, 0))
    assert handback.outcome.outcome is Outcome.DONE and handback.countdown is None
    finished = rt.store.get_run(run.id)
    assert finished is not None and finished.status == RunStatus.FINISHED
    assert finished.lease_owner is None
    with rt.store.sessions() as session:
        versions = list(session.scalars(select(Step.version).where(Step.run_id == run.id)))
    assert sorted(versions) == list(range(1, finished.version + 1))


def test_a_used_up_slice_hands_the_run_back_unleased(rt, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rt.settings, "slice_steps", 2)
    run = start(rt, "Research the history of the transistor")
    handback = bridge.run(run_slice(rt, run.id, 0))
    assert handback.outcome.outcome is Outcome.ADVANCED
    assert handback.outcome.version == 2 and handback.countdown == 0.0
    assert lease(rt, run.id) is None  # the queue's next delivery may start it anywhere
    again = bridge.run(run_slice(rt, run.id, 2))
    assert again.outcome.version == 4


def test_a_stale_task_for_a_held_run_changes_nothing(rt, make_teams) -> None:  # type: ignore[no-untyped-def]
    """A redelivered step of a version the holder already committed is a duplicate."""
    run = start(rt, "Research the history of the transistor")
    first = bridge.run(rt.engine.step(run.id, 0, hold_next=True))
    other = build(rt.store.url, make_teams(name="other.yaml"))
    stale = bridge.run(other.engine.step(run.id, 0))
    assert stale.outcome is Outcome.DUPLICATE
    assert bridge.run(rt.engine.step(run.id, first.version)).outcome is Outcome.ADVANCED


def test_steps_survive_the_database_dropping_every_connection(pg_url, make_teams) -> None:  # type: ignore[no-untyped-def]
    """A database restart kills every pooled connection: the next statement finds its
    connection dead, the pool drops the stale ones and the statement is sent once more."""
    import psycopg

    from tests.conftest import ADMIN_DSN

    rt = build(pg_url, make_teams())
    run = start(rt, "Research the history of the transistor")
    first = bridge.run(rt.engine.step(run.id, 0, hold_next=True))
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    following = bridge.run(rt.engine.step(run.id, first.version, hold_next=True))
    assert following.outcome is Outcome.ADVANCED
