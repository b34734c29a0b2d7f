"""Shared fixtures: real PostgreSQL and Redis on localhost, a fresh database per test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from orchestrator.store.db import upgrade
from tests.support.services import ensure_postgres, ensure_redis

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEAMS = ROOT / "teams" / "default.yaml"
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that each test's database is cloned from."""
    ensure_postgres()
    name = f"sb_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(PG.format(name=name))
    from orchestrator.store.db import dispose

    dispose(PG.format(name=name))
    yield name
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def cloned_database(template: str, prefix: str = "sb_test") -> Iterator[str]:
    """A migrated database cloned from the template, dropped (with its pool) afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = PG.format(name=name)
    try:
        yield url
    finally:
        from orchestrator.store.db import dispose

        dispose(url)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test, dropped afterwards."""
    with cloned_database(pg_template) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'switchboard.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server for this test session, so nothing else on the machine (another
    test run, a stray worker) can consume our queues."""
    ensure_redis()  # the machine's own Redis: proves the service is installed and up
    import redis

    from tests.support.services import free_port, start_private_redis

    port = free_port()
    start_private_redis(port, tmp_path_factory.mktemp("redis"))
    yield port
    with contextlib.suppress(Exception):
        redis.Redis(port=port).shutdown(nosave=True)


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """A flushed database of the session's private Redis."""
    import redis

    redis.Redis(host="127.0.0.1", port=redis_port, db=0).flushdb()
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture
def make_teams(tmp_path: Path) -> Callable[..., Path]:
    """Write a teams file: the default one, with tiers and per-team limits overridden."""

    def make(
        *,
        limits: dict[str, Any] | None = None,
        tiers: dict[str, Any] | None = None,
        approvers: dict[str, Any] | None = None,
        name: str = "teams.yaml",
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Path:
        data = yaml.safe_load(DEFAULT_TEAMS.read_text())
        if tiers:
            data["tiers"] = tiers
        for team in data["teams"].values():
            team["limits"] = {**team.get("limits", {}), **(limits or {})}
        if approvers is not None:
            data["approvers"] = approvers
        if edit is not None:  # anything else, e.g. MCP servers and a worker's tools
            edit(data)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return make


@pytest.fixture
def stack(pg_url: str, redis_url: str, make_teams, tmp_path: Path) -> Iterator[Callable[..., Any]]:  # type: ignore[no-untyped-def]
    """Build a Stack (worker/beat processes on Redis, Postgres); the producer here follows it."""
    from tasks.app import use_broker
    from tests.support.stack import Stack

    made: list[Stack] = []

    def make(teams: Path | None = None, broker_url: str | None = None, **env: str) -> Stack:
        url = broker_url or redis_url
        use_broker(url)
        built = Stack(pg_url, url, teams or make_teams(), tmp_path, env)
        made.append(built)
        return built

    yield make
    for built in made:
        built.stop()
    use_broker("memory://localhost/")
