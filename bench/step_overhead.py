"""Orchestration overhead per step and per model call, with a zero-latency model and state in
Postgres.

Modes (each prints JSON lines, one object per measurement with a `metric` name and the unit
in every key name; a table follows):

- in_process: each run stepped by the worker's own code (tasks.steps.run_slice through
  tasks.bridge: a slice of steps in process, the lease kept from one to the next), one
  run at a time. `ms_per_step_*` is the time of one step call; `ms_per_call` is the wall
  time of all the runs over their model calls (the figure set beside LangGraph's).
- in_process_50_runs: `--lanes` (50) runs in flight in one process (a coroutine per lane on
  the bridge loop, each stepping its own runs one after another); steps/s and ms per call
  (wall / calls: the inverse of the throughput).
- celery: a real `switchboard worker` process (threads pool) on Redis; one run at a time. A
  step's time is the gap between the commits of consecutive steps of a run (broker hop, if
  any, plus step). Broker traffic is counted with Redis MONITOR: publishes (LPUSH) per step
  and Redis commands per step. The worker's peak RSS is reported.
- long_run: ONE run of the `bench_long` team driven to `--long-steps` (500) steps (the
  scripted `[loop]` directive: the supervisor reassigns forever; step and stuck guards out
  of reach). Reports the checkpoint bytes the run holds at 20 / 100 / 500 steps (every
  table whose name starts with `checkpoint`) against the size of its state, and a step's
  CPU time (this process, time.process_time) and wall time over the first 20 steps (around
  step 10) against the last 20.

The model is the offline scripted provider (`scripted/*` tiers, through litellm), so the
figures are the orchestrator's own cost: database round trips, serialisation, guards,
litellm's call path and the queue. Every figure comes with this process's peak RSS.

Redis: the celery mode starts a private redis-server (free port, temp dir, no persistence)
and stops it at the end; with --broker-url it uses that broker and leaves its data alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

DEFAULT_DB = f"sb_bench_steps_{os.getpid()}"
MODES = ("in_process", "in_process_50_runs", "celery", "long_run")


def build_runtime(url: str, teams: Path) -> Any:
    from orchestrator.settings import Settings
    from tasks import runtime

    return runtime.build(
        Settings(DATABASE_URL=url, SWITCHBOARD_TEAMS_FILE=str(teams))  # type: ignore[call-arg]
    )


def _timed_steps(rt: Any, times: list[float]) -> None:
    """Time every Engine.step call the worker's code makes (bench instrumentation)."""
    step = type(rt.engine).step.__get__(rt.engine)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await step(*args, **kwargs)
        finally:
            times.append((time.perf_counter() - started) * 1000)

    rt.engine.step = timed


async def _run_to_end(rt: Any, run_id: int) -> int:
    """One run to its end exactly as a worker steps it (tasks.steps.run_slice: a slice of
    steps in process, each committed alone, the lease kept from one to the next); a slice
    that hands the run back is followed by the next, as the queue would. Returns its steps."""
    from orchestrator.engine import Outcome
    from tasks.steps import run_slice

    version, steps = 0, 0
    while True:
        handback = await run_slice(rt, run_id, version)
        outcome = handback.outcome
        steps += outcome.version - version
        if outcome.outcome is not Outcome.ADVANCED:
            if outcome.outcome is not Outcome.DONE:
                raise RuntimeError(f"run {run_id} stopped at step {steps}: {outcome.outcome}")
            return steps
        version = outcome.version


def _drive(rt: Any, run_id: int) -> int:
    from tasks import bridge

    return bridge.run(_run_to_end(rt, run_id))


def _figures(
    url: str, ids: list[int], steps: int, wall: float, cpu: float, times: list[float]
) -> dict[str, Any]:
    calls = c.llm_calls(url, ids)
    stored = c.checkpoint_tables_bytes(url, ids)
    return {
        "runs": len(ids),
        "steps": steps,
        "model_calls": calls,
        "wall_s": round(wall, 3),
        "ms_per_call": round(wall * 1000 / calls, 3) if calls else None,
        "ms_per_step_median": round(c.median(times), 3),
        "ms_per_step_p99": round(c.percentile(times, 99), 3),
        "steps_per_s": round(steps / wall, 1),
        "cpu_ms_per_step": round(cpu * 1000 / steps, 3),
        "cpu_ms_per_call": round(cpu * 1000 / calls, 3) if calls else None,
        "checkpoint_bytes_per_step": round(stored["bytes"] / steps),
        "peak_rss_mb": round(c.own_peak_rss_mb(), 1),
    }


def in_process(rt: Any, runs: int, url: str, team: str) -> dict[str, Any]:
    """Sequential runs; time every engine.step call."""
    for run_id in c.start_runs(rt, 3, "Warm up", team=team):
        _drive(rt, run_id)
    ids = c.start_runs(rt, runs, team=team)
    times: list[float] = []
    _timed_steps(rt, times)
    started, cpu = time.perf_counter(), time.process_time()
    steps = sum(_drive(rt, run_id) for run_id in ids)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    del rt.engine.step
    return {
        "metric": "step_overhead",
        "mode": "in_process",
        "team": team,
        "runs_in_flight": 1,
        **_figures(url, ids, steps, wall, cpu, times),
    }


def in_process_concurrent(
    rt: Any, lanes: int, runs_per_lane: int, url: str, team: str
) -> dict[str, Any]:
    """`lanes` runs in flight at once on the bridge loop; steps per second."""
    from tasks import bridge

    ids = c.start_runs(rt, lanes * runs_per_lane, "Concurrent", team=team)
    queues = [ids[i::lanes] for i in range(lanes)]
    times: list[float] = []

    async def lane(run_ids: list[int]) -> int:
        return sum([await _run_to_end(rt, run_id) for run_id in run_ids])

    async def main() -> int:
        return sum(await asyncio.gather(*(lane(q) for q in queues)))

    _timed_steps(rt, times)
    started, cpu = time.perf_counter(), time.process_time()
    steps = bridge.run(main())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    del rt.engine.step
    return {
        "metric": "step_overhead",
        "mode": f"in_process_{lanes}_runs",
        "team": team,
        "runs_in_flight": lanes,
        **_figures(url, ids, steps, wall, cpu, times),
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


def celery(
    rt: Any, runs: int, url: str, broker: str, teams: Path, tmp: Path, team: str
) -> dict[str, Any]:
    """One run at a time through a real worker; per-step gaps from the step commit times."""
    from orchestrator.store.repository import Store
    from tasks.app import use_broker
    from tasks.steps import advance

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
        hostname=f"bench-steps-{os.getpid()}@%h",
    ).start()
    try:
        for run_id in c.start_runs(rt, 3, "Warm up", team=team):  # imports, pools, litellm
            advance.delay(run_id, 0)
            c.wait_for_runs(url, [run_id], timeout=60)
        ids = c.start_runs(rt, runs, team=team)
        started = time.perf_counter()
        with Monitor(broker) as monitor:
            for run_id in ids:
                advance.delay(run_id, 0)
                c.wait_for_runs(url, [run_id], timeout=60, poll_s=0.005)
        wall = time.perf_counter() - started
        rss = worker.peak_rss_mb()
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
    calls = c.llm_calls(url, ids)
    stored = c.checkpoint_tables_bytes(url, ids)
    return {
        "metric": "step_overhead",
        "mode": "celery",
        "team": team,
        "runs_in_flight": 1,
        "runs": runs,
        "steps": steps,
        "model_calls": calls,
        # Include this script's polling for the end of each run (every 5 ms).
        "wall_s": round(wall, 3),
        "ms_per_call": round(wall * 1000 / calls, 3) if calls else None,
        "ms_per_step_median": round(c.median(gaps), 3),
        "ms_per_step_p99": round(c.percentile(gaps, 99), 3),
        "checkpoint_bytes_per_step": round(stored["bytes"] / steps),
        # Each run's first task is published by this script; every other one by the worker.
        "publishes_per_step": round(counts.get("lpush", 0) / steps, 3),
        "redis_cmds_per_step": round(sum(counts.values()) / steps, 2),
        "redis_cmds": dict(sorted(counts.items())),
        "peak_rss_mb": round(rss, 1),
        "peak_rss_of": "worker",
    }


def long_run(rt: Any, url: str, steps: int, marks: list[int], window: int) -> list[dict[str, Any]]:
    """One run driven to `steps` steps: checkpoint bytes at the marks, CPU early vs late."""
    from orchestrator import state as st
    from orchestrator.engine import Outcome
    from tasks import bridge

    for warm in c.start_runs(rt, 2, "Warm up"):  # imports, pools, litellm: not step 1's cost
        _drive(rt, warm)
    (run_id,) = c.start_runs(rt, 1, c.LONG_REQUEST, team="bench_long")
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    records: list[dict[str, Any]] = []
    version = 0
    while version < steps:
        wall, cpu = time.perf_counter(), time.process_time()
        # hold_next, as a worker going on with the run steps it.
        outcome = bridge.run(rt.engine.step(run_id, version, hold_next=True))
        cpu_ms.append((time.process_time() - cpu) * 1000)
        wall_ms.append((time.perf_counter() - wall) * 1000)
        if outcome.outcome is not Outcome.ADVANCED:
            raise RuntimeError(
                f"the long run stopped at step {version + 1}: {outcome.outcome} "
                "(see its escalation or error in the database; --keep keeps it)"
            )
        version = outcome.version
        if version in marks:
            records.append(_checkpoint_record(rt, url, run_id, version, st))
    window = max(1, min(window, steps // 2))
    early = {"cpu": c.median(cpu_ms[:window]), "wall": c.median(wall_ms[:window])}
    late = {"cpu": c.median(cpu_ms[-window:]), "wall": c.median(wall_ms[-window:])}
    records.append(
        {
            "metric": "step_cost_growth",
            "run_steps": steps,
            # Medians over the first and the last `window` steps (default 20: steps 1-20,
            # around step 10, and 481-500): a supervisor and a worker step alternate, and
            # a summary call comes now and then, so single steps are noisy.
            "early_steps": f"1-{window}",
            "late_steps": f"{steps - window + 1}-{steps}",
            "cpu_ms_early": round(early["cpu"], 3),
            "cpu_ms_late": round(late["cpu"], 3),
            "cpu_ratio_late_to_early": round(late["cpu"] / early["cpu"], 3),
            "wall_ms_early": round(early["wall"], 3),
            "wall_ms_late": round(late["wall"], 3),
            "wall_ratio_late_to_early": round(late["wall"] / early["wall"], 3),
            "model_calls": c.llm_calls(url, [run_id]),
            "peak_rss_mb": round(c.own_peak_rss_mb(), 1),
        }
    )
    return records


def _checkpoint_record(rt: Any, url: str, run_id: int, version: int, st: Any) -> dict[str, Any]:
    stored = c.checkpoint_tables_bytes(url, [run_id])
    state = rt.store.load_checkpoint(run_id, version)
    final = len(st.dumps(state).encode()) if state is not None else None
    return {
        "metric": "checkpoint_bytes",
        "run_steps": version,
        "bytes": stored["bytes"],
        "stored_bytes": stored["stored_bytes"],
        # The run's state at this step, serialised as the store serialises it.
        "state_bytes": final,
        "bytes_to_state_ratio": round(stored["bytes"] / final, 2) if final else None,
        "tables": stored["tables"],
        **({"skipped_tables": stored["skipped"]} if stored["skipped"] else {}),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints JSON lines (one object per measurement) and then tables. Modes: "
        + ", ".join(MODES)
        + ". Example: step_overhead.py --modes in_process --runs 100 --team bench_pair",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated modes to run (default: all: %(default)s)",
    )
    parser.add_argument(
        "--team",
        choices=("bench", "bench_pair"),
        default="bench",
        help="bench: supervisor + 1 worker, 5 calls a run; bench_pair: supervisor + 2 "
        "workers, 7 calls a run (the LangGraph comparison's shape). Default %(default)s",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="use (and migrate) this database instead of creating sb_bench_steps_<pid>",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help="celery mode: use this Redis as it is (never flushed; pick a database index "
        "no other worker consumes). Default: a private redis-server started for the run",
    )
    parser.add_argument("--runs", type=int, default=200, help="in_process: runs (default 200)")
    parser.add_argument(
        "--lanes", type=int, default=50, help="concurrent mode: runs in flight (default 50)"
    )
    parser.add_argument(
        "--runs-per-lane", type=int, default=6, help="concurrent mode: runs per lane (6)"
    )
    parser.add_argument(
        "--celery-runs", type=int, default=40, help="celery mode: runs (default 40)"
    )
    parser.add_argument(
        "--long-steps", type=int, default=500, help="long_run: steps of the run (default 500)"
    )
    parser.add_argument(
        "--long-window",
        type=int,
        default=20,
        help="long_run: the first and the last N steps give the early and late medians "
        "(default 20)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    return parser


def main() -> None:
    args = _parser().parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES and not re.fullmatch(r"in_process_\d+_runs", m)]
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING)
    url, created = c.prepare_database(args.database_url, DEFAULT_DB)
    tmp = c.tempdir("sb-bench-steps-")
    teams = c.teams_file(tmp)
    rt = build_runtime(url, teams)
    rows: list[dict[str, Any]] = []

    def record(*items: dict[str, Any]) -> None:
        for item in items:
            rows.append(item)
            c.emit(item)

    try:
        if "in_process" in modes:
            record(in_process(rt, args.runs, url, args.team))
        if any(m.startswith("in_process_") for m in modes):
            record(in_process_concurrent(rt, args.lanes, args.runs_per_lane, url, args.team))
        if "celery" in modes:
            with c.broker(args.broker_url) as broker:
                record(celery(rt, args.celery_runs, url, broker, teams, tmp, args.team))
        if "long_run" in modes:
            marks = sorted({m for m in (20, 100, args.long_steps) if m <= args.long_steps})
            record(*long_run(rt, url, args.long_steps, marks, args.long_window))
    finally:
        if created and not args.keep:
            c.drop_database(url)
    print_tables(rows)


def print_tables(rows: list[dict[str, Any]]) -> None:
    columns = {
        "step_overhead": [
            "mode",
            "runs_in_flight",
            "steps",
            "ms_per_call",
            "ms_per_step_median",
            "ms_per_step_p99",
            "steps_per_s",
            "cpu_ms_per_step",
            "checkpoint_bytes_per_step",
            "publishes_per_step",
            "redis_cmds_per_step",
            "peak_rss_mb",
        ],
        "checkpoint_bytes": [
            "run_steps",
            "bytes",
            "stored_bytes",
            "state_bytes",
            "bytes_to_state_ratio",
        ],
        "step_cost_growth": [
            "early_steps",
            "late_steps",
            "cpu_ms_early",
            "cpu_ms_late",
            "cpu_ratio_late_to_early",
            "wall_ms_early",
            "wall_ms_late",
            "wall_ratio_late_to_early",
        ],
    }
    for metric, cols in columns.items():
        group = [r for r in rows if r.get("metric") == metric]
        if group:
            print(f"\n{metric}")
            print(c.table(group, cols))


if __name__ == "__main__":
    main()
