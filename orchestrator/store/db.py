"""Engines, sessions and migrations: one place that knows how to reach the database."""

from __future__ import annotations

import asyncio
import threading
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# Async engines per event loop: an asyncio connection belongs to the loop that opened it.
_async_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)


def make_engine(url: str) -> Engine:
    """An engine tuned per backend; SQLite gets WAL and a busy timeout for worker threads."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def get_engine(url: str) -> Engine:
    """One engine (and pool) per URL per process."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def get_hot_engine(url: str) -> Engine:
    """The engine of the step hot path: on Postgres an AUTOCOMMIT pool without pre-ping.

    Every statement sent through it is one round trip that commits by itself (no BEGIN and
    COMMIT round trips), so the hot path only sends single statements (CTEs where several
    rows must change atomically). No pre-ping either: the callers retry once on a dropped
    connection instead of paying a ping per checkout. Elsewhere it is the ordinary engine.
    """
    if not url.startswith("postgresql"):
        return get_engine(url)
    key = f"hot:{url}"
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_engine(
                url, isolation_level="AUTOCOMMIT", pool_size=20, max_overflow=40
            )
        return engine


def get_hot_async_engine(url: str) -> AsyncEngine:
    """The step hot path's engine on the running loop: psycopg's async driver, AUTOCOMMIT,
    no pre-ping (as `get_hot_engine`). Postgres only.

    A step awaits its statements on the loop that runs it instead of hopping to a thread
    for each one: no thread handoff, no GIL ping-pong with the loop between statements.
    """
    loop = asyncio.get_running_loop()
    with _lock:
        engines = _async_engines.setdefault(loop, {})
        engine = engines.get(url)
        if engine is None:
            async_url = make_url(url).set(drivername="postgresql+psycopg")
            engine = engines[url] = create_async_engine(
                async_url, isolation_level="AUTOCOMMIT", pool_size=20, max_overflow=40
            )
        return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations; safe to call at every start (a no-op when already at head)."""
    engine = get_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
