"""Delta checkpoints: snapshots every K versions, reducer updates between, on Postgres."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from orchestrator import state as st
from orchestrator.store.db import get_engine, upgrade
from orchestrator.store.models import Checkpoint, RunStatus
from orchestrator.store.repository import Store
from tests.conftest import cloned_database
from tests.support.drive import build, drive, start

pytestmark = pytest.mark.integration


def test_diff_round_trips_every_channel() -> None:
    old = st.initial_state(request="r", team="t", next="supervisor")
    new = st.apply(
        old,
        [
            {
                "messages": [{"role": "a", "content": "x"}],
                "outputs": {"w": [{"v": 1, "text": "t"}]},
            },
            {"personas": {"w": "debugger"}, "summary": "s", "next": "workers", "turns": {"0": {}}},
        ],
    )
    delta = st.diff(old, new)
    assert delta is not None and st.apply(old, delta) == new
    assert st.diff(new, old) is None  # lists that shrank cannot be a delta


def test_a_long_run_stores_deltas_and_loads_every_version(
    pg_url: str, make_teams: Callable[..., Path]
) -> None:
    teams = make_teams(limits={"max_steps": 60, "stuck_window": 100, "max_duration_s": 3600})
    rt = build(pg_url, teams, SWITCHBOARD_SNAPSHOT_EVERY=10)
    run = start(rt, "summarise the design [loop]")
    drive(rt, run.id)
    paused = rt.store.get_run(run.id)
    assert paused.status == RunStatus.AWAITING_APPROVAL and paused.version >= 60
    with rt.store.session() as session:
        kinds = dict(
            session.execute(
                select(Checkpoint.version, Checkpoint.kind).where(Checkpoint.run_id == run.id)
            ).all()
        )
        total = session.scalar(
            select(func.sum(func.length(Checkpoint.state))).where(Checkpoint.run_id == run.id)
        )
    assert {v for v, kind in kinds.items() if kind == "snapshot"} == {
        v for v in kinds if v % 10 == 0
    }
    # Folding deltas gives the same state as a fresh engine that never cached anything.
    fresh = Store(pg_url)
    final = fresh.load_checkpoint(run.id, paused.version)
    assert final is not None and len(final["assigned"]) >= 25
    for version in (1, 9, 10, 11, 37, paused.version):
        state = fresh.load_checkpoint(run.id, version)
        assert state is not None and len(state["assigned"]) <= len(final["assigned"])
    # Bytes grow with the run's length, not its square.
    assert total < 8 * len(st.dumps(final))


def test_the_migration_turns_full_states_into_deltas(pg_template: str) -> None:
    with cloned_database(pg_template, prefix="sb_mig") as url:
        engine = get_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM alembic_version"))
            connection.execute(text("INSERT INTO alembic_version VALUES ('0003_tool_calls')"))
            connection.execute(text("ALTER TABLE checkpoints DROP COLUMN kind"))
            connection.execute(
                text(
                    "INSERT INTO runs (id, request, platform, channel, requester, status, "
                    "version, extra_steps, extra_tokens, extra_dollars, extra_seconds, "
                    "cleared_version, created_at, updated_at) VALUES (1, 'r', 'test', 'C1', "
                    "'U1', 'running', 3, 0, 0, 0, 0, 0, now(), now())"
                )
            )
            states = [st.initial_state(request="r", team="research", next="supervisor")]
            for n in range(1, 4):
                states.append(st.apply(states[-1], [{"messages": [{"role": "w", "content": n}]}]))
            for version, state in enumerate(states):
                connection.execute(
                    text(
                        "INSERT INTO checkpoints (run_id, version, state, created_at) "
                        "VALUES (1, :v, :s, now())"
                    ),
                    {"v": version, "s": st.dumps(state)},
                )
        upgrade(url)
        store = Store(url)
        for version, state in enumerate(states):
            assert store.load_checkpoint(1, version) == state
        with store.session() as session:
            kinds = (
                session.execute(
                    select(Checkpoint.kind)
                    .where(Checkpoint.run_id == 1)
                    .order_by(Checkpoint.version)
                )
                .scalars()
                .all()
            )
            stored = session.scalars(select(Checkpoint.state).where(Checkpoint.version == 1)).one()
        assert kinds == ["snapshot", "delta", "delta", "snapshot"]
        assert json.loads(stored) == [{"messages": [{"role": "w", "content": 1}]}]
