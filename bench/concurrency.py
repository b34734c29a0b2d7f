"""Concurrency bound by the models, not by the workers.

N runs (default 200) in flight at once through W `switchboard worker` processes (Celery,
threads pool, Redis broker, state in Postgres; each worker with its own --hostname, all
consuming the same queue), every model call answered by a local OpenAI-compatible HTTP
server after a fixed delay (default 1 s). Each run of the bench team makes 5 sequential
model calls (supervisor, worker, supervisor, worker, supervisor), so the critical path - the
ideal wall time - is 5 x delay. The figure of merit is `ratio` = wall / ideal (1.0 is ideal).

`--workers 1,2` measures each worker count in turn (fresh workers, same database and broker)
and prints one JSON line per count, then a table. Peak RSS is each worker's VmHWM.

Redis: a private redis-server (free port, temp dir, no persistence) is started and stopped
by default; with --broker-url that broker is used as it is and its data left alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

DEFAULT_DB = f"sb_bench_conc_{os.getpid()}"


def measure(
    rt: Any,
    env: dict[str, str],
    server: c.ModelServer,
    url: str,
    tmp: Path,
    *,
    workers: int,
    processes: int,
    runs: int,
    latency: float,
    concurrency: int,
    timeout: float,
) -> dict[str, Any]:
    """One measurement with `workers` fresh worker processes sharing the load."""
    from tasks.steps import advance

    procs = []
    try:
        for index in range(workers):
            procs.append(
                c.Worker(
                    env,
                    tmp / f"worker-{workers}-{index}.log",
                    concurrency=concurrency,
                    hostname=f"bench{index}-{os.getpid()}@%h",
                    processes=processes,
                ).start()
            )
        # Warm every worker (imports, pools, litellm's client): enough short runs that each
        # worker is likely to take some.
        server.delay_s = 0.0
        warm = c.start_runs(rt, 4 * workers * processes, "Warm up")
        for run_id in warm:
            advance.delay(run_id, 0)
        c.wait_for_runs(url, warm, timeout=120)
        server.delay_s = latency
        calls_before, server.peak_in_flight = server.calls, 0

        ids = c.start_runs(rt, runs)
        started = time.perf_counter()
        for run_id in ids:
            advance.delay(run_id, 0)
        statuses = c.wait_for_runs(url, ids, timeout=timeout, poll_s=0.02)
        wall = time.perf_counter() - started
        rss = [w.peak_rss_mb() for w in procs]
    finally:
        for worker in procs:
            worker.stop()
    calls = server.calls - calls_before
    calls_per_run = calls / runs
    ideal = calls_per_run * latency
    return {
        "metric": "concurrency",
        "workers": workers,
        "processes_per_worker": processes,
        "runs": runs,
        "calls_per_run": round(calls_per_run, 2),
        "latency_s": latency,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 3),
        "runs_per_s": round(runs / wall, 2),
        "calls_per_s": round(calls / wall, 1),
        "peak_rss_mb": round(max(rss), 1),
        "peak_rss_mb_total": round(sum(rss), 1),
        "worker_concurrency": concurrency,
        "peak_calls_in_flight": server.peak_in_flight,
        "statuses": statuses,
    }


def _parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: concurrency.py --workers 2 --runs 50 --latency 0.5",
    )
    parser.add_argument(
        "--workers",
        default=",".join(str(n) for n in dict.fromkeys((1, cores))),
        help="worker process counts to measure in turn, comma-separated "
        "(default: 1 and the number of cores: %(default)s)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Celery processes per worker command (`switchboard worker --processes N`); "
        "--workers 1 --processes 2 is one command using both cores (default 1: one "
        "command per process)",
    )
    parser.add_argument("--runs", type=int, default=200, help="runs in flight (default 200)")
    parser.add_argument(
        "--latency", type=float, default=1.0, help="model delay per call, s (default 1.0)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="pool threads per worker (default runs + 50: one worker can hold every run)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many s (default 300)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="use (and migrate) this database instead of creating sb_bench_conc_<pid>",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help="use this Redis as it is (never flushed; pick a database index no other worker "
        "consumes). Default: a private redis-server started for the run",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    return parser


def main() -> None:
    args = _parser().parse_args()
    try:
        counts = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"--workers takes counts like 1,2; got {args.workers!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"--workers takes counts of at least 1; got {args.workers!r}")
    if args.processes < 1:
        raise SystemExit(f"--processes takes a count of at least 1; got {args.processes}")
    concurrency = args.concurrency or args.runs + 50

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    url, created = c.prepare_database(args.database_url, DEFAULT_DB)
    tmp = c.tempdir("sb-bench-conc-")
    records = []
    try:
        with c.broker(args.broker_url) as broker, c.ModelServer(args.latency) as server:
            teams = c.teams_file(tmp, api_base=server.url)
            env = {
                "DATABASE_URL": url,
                "BROKER_URL": broker,
                "SWITCHBOARD_TEAMS_FILE": str(teams),
                "OPENAI_API_KEY": "sk-test",
                "LOG_LEVEL": "WARNING",
            }
            os.environ.update(env)
            from orchestrator.settings import Settings
            from tasks import runtime
            from tasks.app import use_broker

            use_broker(broker)
            rt = runtime.build(Settings(**env))  # type: ignore[arg-type]
            for workers in counts:
                records.append(
                    measure(
                        rt,
                        env,
                        server,
                        url,
                        tmp,
                        workers=workers,
                        processes=args.processes,
                        runs=args.runs,
                        latency=args.latency,
                        concurrency=concurrency,
                        timeout=args.timeout,
                    )
                )
                c.emit(records[-1])
    finally:
        if created and not args.keep:
            c.drop_database(url)

    print()
    print(
        c.table(
            records,
            [
                "workers",
                "processes_per_worker",
                "runs",
                "calls_per_run",
                "latency_s",
                "wall_s",
                "ideal_s",
                "ratio",
                "runs_per_s",
                "calls_per_s",
                "peak_rss_mb",
                "peak_calls_in_flight",
            ],
        )
    )


if __name__ == "__main__":
    main()
