"""A production-shaped stack for tests: worker and beat processes on Redis, state in Postgres."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import service
from orchestrator.store.models import Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig, load_teams
from tests.support.workers import WorkerProcess, beat_process

SETTLED = RunStatus.TERMINAL | {RunStatus.AWAITING_APPROVAL}


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


class Stack:
    def __init__(
        self, pg_url: str, redis_url: str, teams: Path, tmp: Path, env: dict[str, str]
    ) -> None:
        self.pg_url = pg_url
        self.redis_url = redis_url
        self.teams = teams
        self.tmp = tmp
        self.env = {
            "DATABASE_URL": pg_url,
            "BROKER_URL": redis_url,
            "SWITCHBOARD_TEAMS_FILE": str(teams),
            "SWITCHBOARD_BEAT_INTERVAL": "1",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.store = Store(pg_url)
        self.config: TeamsConfig = load_teams(teams)
        self.processes: list[WorkerProcess] = []

    def worker(self, name: str = "w1", concurrency: int = 16, **env: str) -> WorkerProcess:
        process = WorkerProcess(
            {**self.env, **env}, self.tmp / f"{name}.log", concurrency=concurrency, name=name
        )
        self.processes.append(process)
        return process.start()

    def beat(self, **env: str) -> WorkerProcess:
        process = beat_process({**self.env, **env}, self.tmp)
        self.processes.append(process)
        return process.start()

    def create(
        self,
        request: str,
        *,
        team: str | None = "research",
        key: str | None = None,
        platform: str = "test",
        channel: str = "C1",
        requester: str = "U1",
    ) -> Run:
        run, _ = service.start_run(
            self.store,
            self.config,
            request=request,
            team=team,
            platform=platform,
            channel=channel,
            thread=None,
            requester=requester,
            origin_key=key,
        )
        return run

    def start(self, request: str, **kwargs: Any) -> Run:
        from tasks.steps import enqueue

        run = self.create(request, **kwargs)
        enqueue(run.id, 0, run.trace_parent)
        return run

    def wait(self, run_id: int, timeout: float = 60.0, statuses: frozenset[str] = SETTLED) -> Run:
        def settled() -> Run | None:
            run = self.store.get_run(run_id)
            return run if run is not None and run.status in statuses else None

        try:
            return wait_for(settled, timeout)
        except AssertionError:
            logs = "\n".join(p.log()[-3000:] for p in self.processes)
            raise AssertionError(
                f"run {run_id} did not settle: {self.store.get_run(run_id).status}\n{logs}"
            ) from None

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
