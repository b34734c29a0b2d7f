"""Workers against outages (issue 13): a database that is not up yet, a Redis restart, and
exit codes a supervisor can act on. The shared PostgreSQL is never stopped: a TCP proxy
stands in for its outage."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

from orchestrator.store.models import RunStatus
from tests.support.openai_server import OpenAIServer
from tests.support.services import free_port, port_open, start_private_redis
from tests.support.stack import wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def test_a_worker_waits_for_its_database_with_one_line_per_attempt(
    stack, pg_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    database = make_url(pg_url)
    proxy = TcpProxy(database.port or 5432).start()
    proxy.cut()  # the database is "down" when the worker starts
    through = database.set(port=proxy.port).render_as_string(hide_password=False)
    s = stack(DATABASE_URL=through)
    log = tmp_path / "w1.log"

    def restore_when_reported() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count("the database is not answering") >= 2:
                proxy.restore()
                return
            time.sleep(0.1)

    restorer = threading.Thread(target=restore_when_reported, daemon=True)
    restorer.start()
    try:
        worker = s.worker()  # returns once the worker says it is ready
        text = worker.log()
        waits = [line for line in text.splitlines() if "the database is not answering" in line]
        assert len(waits) >= 2
        assert all(
            line.startswith("switchboard: the database is not answering (") for line in waits
        )
        assert "trying again in 1s" in waits[0] and "trying again in 2s" in waits[1]
        assert "Traceback" not in text
        run = s.start("summarise the design")
        assert s.wait(run.id, timeout=60).status == RunStatus.FINISHED
    finally:
        proxy.close()


def test_a_worker_exits_zero_only_when_asked(stack) -> None:  # type: ignore[no-untyped-def]
    s = stack()
    asked = s.worker("asked")
    os.killpg(asked.proc.pid, signal.SIGTERM)  # what compose and systemd send
    assert asked.proc.wait(30) == 0

    unasked = s.worker("unasked")
    # Stopped by something other than a signal (here: a remote-control shutdown; in the
    # wild: kombu giving up on a channel after a Redis restart). Celery's own exit code was
    # thrown away before, so `switchboard worker` ended 0 and `restart: on-failure` did not
    # bring it back.
    from tasks.app import app as celery_app

    celery_app.control.shutdown(destination=[f"unasked@{os.uname().nodename}"])
    assert unasked.proc.wait(30) == 1
    assert "the worker stopped without being asked to" in unasked.log()


@pytest.fixture
def slow_model(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer(delay_s=1.0) as server:
        yield server


def test_after_a_redis_restart_a_worker_reconnects_or_exits_non_zero(
    stack, make_teams, slow_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    args = start_private_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    tier = {"model": "openai/gpt-test", "api_base": slow_model.url, "params": {}}
    teams = make_teams(tiers={"cheap": tier, "premium": tier}, limits={"stuck_window": 50})
    env = {"OPENAI_API_KEY": "sk-test", "SWITCHBOARD_STEP_LEASE": "3"}
    env["SWITCHBOARD_STALLED_AFTER"] = "3"
    try:
        s = stack(teams, broker_url=url, **env)
        s.beat()
        worker = s.worker()
        run = s.start("summarise the design")
        wait_for(lambda: s.store.get_run(run.id).version >= 1, 60)  # a model call in flight
        redis_lib.Redis(port=port).shutdown(nosave=True)
        wait_for(lambda: not port_open("127.0.0.1", port), 10)
        time.sleep(2.0)
        subprocess.run(args, check=True)
        done = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                break
            current = s.store.get_run(run.id)
            if current.status in RunStatus.TERMINAL:
                done = current
                break
            time.sleep(0.2)
        if done is None:  # the worker gave up: it must say so with its exit code
            assert worker.proc.returncode not in (None, 0), worker.log()[-3000:]
        else:
            assert done.status == RunStatus.FINISHED, done.error
            assert worker.proc.poll() is None  # it reconnected and carried on
    finally:
        with contextlib.suppress(Exception):
            redis_lib.Redis(port=port).shutdown(nosave=True)
