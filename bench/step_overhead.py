"""Orchestration overhead per step, with a zero-latency model and state in Postgres.

Modes (one JSON line each, then a table):

- in_process: `Engine.step` called directly (through tasks.bridge, as a worker does), one
  run at a time; the time of each call is one step's overhead.
- in_process_50_runs: 50 runs in flight in one process (50 coroutines on the bridge loop,
  each stepping its own runs); steps per second.
- celery: a real `switchboard worker` process (threads pool) on Redis; one run at a time,
  each step enqueues the next (`advance.delay`). A step's time is the gap between the
  commits of consecutive steps of a run (broker hop + step). Broker traffic is counted
  with Redis MONITOR on the benchmark's Redis database: publishes (LPUSH) per step and
  Redis commands per step.

The model is the offline scripted provider (`scripted/*` tiers, through litellm), so the
figures are the orchestrator's own cost: database round trips, serialisation, guards,
litellm's call path and the queue.

    .venv/bin/python bench/step_overhead.py [--runs 200] [--celery-runs 40]
        [--database-url URL] [--broker-url URL] [--modes in_process,in_process_50_runs,celery]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

import _common as c

DEFAULT_DB = f"sb_bench_steps_{os.getpid()}"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"


def build_runtime(url: str, teams: Path) -> Any:
    from orchestrator.settings import Settings
    from tasks import runtime

    return runtime.build(
        Settings(DATABASE_URL=url, SWITCHBOARD_TEAMS_FILE=str(teams))  # type: ignore[call-arg]
    )


def in_process(rt: Any, runs: int, url: str) -> dict[str, Any]:
    """Sequential runs; time every engine.step call."""
    from orchestrator.engine import Outcome
    from tasks import bridge

    warm = c.start_runs(rt, 3, "Warm up")
    for run_id in warm:
        _drive(rt, run_id)
    ids = c.start_runs(rt, runs)
    times: list[float] = []
    outcomes: dict[str, int] = {}
    for run_id in ids:
        version = 0
        while True:
            started = time.perf_counter()
            outcome = bridge.run(rt.engine.step(run_id, version))
            times.append((time.perf_counter() - started) * 1000)
            outcomes[outcome.outcome] = outcomes.get(outcome.outcome, 0) + 1
            if outcome.outcome is not Outcome.ADVANCED:
                break
            version = outcome.version
    return {
        "mode": "in_process",
        "runs": runs,
        "steps": len(times),
        "median_ms": round(c.median(times), 3),
        "p99_ms": round(c.percentile(times, 99), 3),
        "mean_ms": round(sum(times) / len(times), 3),
        "checkpoint_bytes": round(c.checkpoint_bytes(url, ids)),
        "outcomes": outcomes,
    }


def _drive(rt: Any, run_id: int) -> int:
    from orchestrator.engine import Outcome
    from tasks import bridge

    version, steps = 0, 0
    while True:
        outcome = bridge.run(rt.engine.step(run_id, version))
        steps += 1
        if outcome.outcome is not Outcome.ADVANCED:
            return steps
        version = outcome.version


def in_process_concurrent(rt: Any, lanes: int, runs_per_lane: int, url: str) -> dict[str, Any]:
    """`lanes` runs in flight at once on the bridge loop; steps per second."""
    from orchestrator.engine import Outcome
    from tasks import bridge

    ids = c.start_runs(rt, lanes * runs_per_lane, "Concurrent")
    queues = [ids[i::lanes] for i in range(lanes)]
    times: list[float] = []

    async def lane(run_ids: list[int]) -> int:
        steps = 0
        for run_id in run_ids:
            version = 0
            while True:
                started = time.perf_counter()
                outcome = await rt.engine.step(run_id, version)
                times.append((time.perf_counter() - started) * 1000)
                steps += 1
                if outcome.outcome is not Outcome.ADVANCED:
                    break
                version = outcome.version
        return steps

    async def main() -> int:
        return sum(await asyncio.gather(*(lane(q) for q in queues)))

    started = time.perf_counter()
    steps = bridge.run(main())
    wall = time.perf_counter() - started
    return {
        "mode": f"in_process_{lanes}_runs",
        "runs": len(ids),
        "steps": steps,
        "wall_s": round(wall, 3),
        "steps_per_s": round(steps / wall, 1),
        "median_ms": round(c.median(times), 3),
        "p99_ms": round(c.percentile(times, 99), 3),
        "checkpoint_bytes": round(c.checkpoint_bytes(url, ids)),
    }


class Monitor:
    """Redis MONITOR, counting the commands sent to one database index."""

    LINE = re.compile(r'^\d+\.\d+ \[(\d+) [^\]]*\] "([A-Za-z]+)"')

    def __init__(self, broker_url: str) -> None:
        import redis

        self.db = str(redis.Redis.from_url(broker_url).connection_pool.connection_kwargs["db"])
        self.client = redis.Redis.from_url(broker_url)
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            conn = monitor.connection
            while not self._stop.is_set():
                if not conn.can_read(timeout=0.2):
                    continue
                response = conn.read_response()
                text = response.decode() if isinstance(response, bytes) else str(response)
                match = self.LINE.match(text)
                if match and match.group(1) == self.db:
                    command = match.group(2).lower()
                    self.counts[command] = self.counts.get(command, 0) + 1

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(5)


def celery(rt: Any, runs: int, url: str, broker: str, teams: Path, tmp: Path) -> dict[str, Any]:
    """One run at a time through a real worker; per-step gaps from the step commit times."""
    from orchestrator.store.repository import Store
    from tasks.app import use_broker
    from tasks.steps import advance

    c.flush_redis(broker)
    use_broker(broker)
    worker = c.Worker(
        {
            "DATABASE_URL": url,
            "BROKER_URL": broker,
            "SWITCHBOARD_TEAMS_FILE": str(teams),
            "LOG_LEVEL": "WARNING",
        },
        tmp / "worker-steps.log",
        concurrency=8,
    ).start()
    try:
        for run_id in c.start_runs(rt, 3, "Warm up"):  # imports, connections, litellm
            advance.delay(run_id, 0)
            c.wait_for_runs(url, [run_id], timeout=60)
        ids = c.start_runs(rt, runs)
        with Monitor(broker) as monitor:
            for run_id in ids:
                advance.delay(run_id, 0)
                c.wait_for_runs(url, [run_id], timeout=60, poll_s=0.005)
        store: Store = rt.store
        gaps: list[float] = []
        steps = 0
        for run_id in ids:
            finished = [s.finished_at for s in store.steps(run_id)]
            steps += len(finished)
            gaps += [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(finished)]
    finally:
        worker.stop()
    counts = monitor.counts
    return {
        "mode": "celery",
        "runs": runs,
        "steps": steps,
        "median_ms": round(c.median(gaps), 3),
        "p99_ms": round(c.percentile(gaps, 99), 3),
        "checkpoint_bytes": round(c.checkpoint_bytes(url, ids)),
        # Each run's first task is published by this script; every other one by the worker.
        "publishes_per_step": round(counts.get("lpush", 0) / steps, 3),
        "redis_cmds_per_step": round(sum(counts.values()) / steps, 2),
        "redis_cmds": dict(sorted(counts.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    parser.add_argument("--runs", type=int, default=200, help="runs for in_process")
    parser.add_argument("--lanes", type=int, default=50, help="runs in flight, concurrent mode")
    parser.add_argument("--runs-per-lane", type=int, default=6)
    parser.add_argument("--celery-runs", type=int, default=40)
    parser.add_argument("--modes", default="in_process,in_process_50_runs,celery")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    modes = set(args.modes.split(","))

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    url, created = c.prepare_database(args.database_url, DEFAULT_DB)
    tmp = c.tempdir("sb-bench-steps-")
    teams = c.teams_file(tmp)
    import logging

    logging.basicConfig(level=logging.WARNING)
    rt = build_runtime(url, teams)
    rows = []
    try:
        if "in_process" in modes:
            rows.append(in_process(rt, args.runs, url))
            c.emit(rows[-1])
        if "in_process_50_runs" in modes:
            rows.append(in_process_concurrent(rt, args.lanes, args.runs_per_lane, url))
            c.emit(rows[-1])
        if "celery" in modes:
            rows.append(celery(rt, args.celery_runs, url, args.broker_url, teams, tmp))
            c.emit(rows[-1])
    finally:
        if created and not args.keep:
            c.drop_database(url)
    print()
    print(
        c.table(
            rows,
            [
                "mode",
                "steps",
                "median_ms",
                "p99_ms",
                "checkpoint_bytes",
                "steps_per_s",
                "publishes_per_step",
                "redis_cmds_per_step",
            ],
        )
    )


if __name__ == "__main__":
    main()
