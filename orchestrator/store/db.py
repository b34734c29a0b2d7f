"""Engines, sessions and migrations: one place that knows how to reach the database."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# Async pools per event loop: an asyncio connection belongs to the loop that opened it.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncConnectionPool]] = (
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


async def get_hot_pool(url: str) -> AsyncConnectionPool:
    """The step hot path's connections on the running loop: psycopg's async driver,
    autocommit, rows as dicts. Postgres only.

    A step awaits its few statements on the loop that runs it, with psycopg directly: no
    thread handoff per statement and no ORM or greenlet layer around a statement the store
    already wrote as SQL (a quarter of the client CPU of the same statement through
    SQLAlchemy's asyncio layer, measured).
    """
    loop = asyncio.get_running_loop()
    with _lock:
        pools = _pools.setdefault(loop, {})
        pool = pools.get(url)
        if pool is None:
            conninfo = make_url(url).set(drivername="postgresql")
            pool = pools[url] = AsyncConnectionPool(
                conninfo.render_as_string(hide_password=False),
                min_size=0,  # nothing reconnects in the background after an outage
                max_size=60,
                # A healthy pool hands out a connection in milliseconds; with the database
                # unreachable a step fails after this long and Celery retries it later,
                # instead of holding a worker thread (a refused connect is not raised at once).
                timeout=3.0,
                reconnect_timeout=60.0,
                kwargs={"autocommit": True, "row_factory": dict_row},
                open=False,
            )
            fresh = True
        else:
            fresh = False
    if fresh:
        await pool.open()
    return pool


def dispose(url: str) -> None:
    """Close every engine and async pool this process holds for `url` (before its database
    is dropped, or at a clean shutdown). Called from outside the loops that own the pools."""
    with _lock:
        engine = _engines.pop(url, None)
        owned = [(loop, pools.pop(url)) for loop, pools in _pools.items() if url in pools]
    if engine is not None:
        engine.dispose()
    for loop, pool in owned:
        # A pool that cannot close cleanly is dropped with its loop.
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(pool.close(timeout=5), loop).result(10)


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
