"""Concurrency bound by the models, not by the worker.

N runs (default 200) in flight at once through ONE `switchboard worker` process (Celery,
threads pool, Redis broker, state in Postgres), every model call answered by a local
OpenAI-compatible HTTP server after a fixed delay (default 1 s). Each run of the bench team
makes 5 sequential model calls (supervisor, worker, supervisor, worker, supervisor), so the
critical path - the ideal wall time - is 5 x delay. The figure of merit is wall / ideal.

    .venv/bin/python bench/concurrency.py [--runs 200] [--latency 1.0] [--concurrency 250]
        [--database-url URL] [--broker-url URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

DEFAULT_DB = f"sb_bench_conc_{os.getpid()}"
DEFAULT_BROKER = "redis://127.0.0.1:6379/12"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=1.0, help="model delay per call, s")
    parser.add_argument(
        "--concurrency", type=int, default=0, help="worker pool threads (default runs + 50)"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    concurrency = args.concurrency or args.runs + 50

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    url, created = c.prepare_database(args.database_url, DEFAULT_DB)
    tmp = c.tempdir("sb-bench-conc-")
    c.flush_redis(args.broker_url)
    try:
        with c.ModelServer(args.latency) as server:
            teams = c.teams_file(tmp, api_base=server.url)
            env = {
                "DATABASE_URL": url,
                "BROKER_URL": args.broker_url,
                "SWITCHBOARD_TEAMS_FILE": str(teams),
                "OPENAI_API_KEY": "sk-test",
                "LOG_LEVEL": "WARNING",
            }
            os.environ.update(env)
            from orchestrator.settings import Settings
            from tasks import runtime
            from tasks.app import use_broker
            from tasks.steps import advance

            use_broker(args.broker_url)
            rt = runtime.build(Settings(**env))  # type: ignore[arg-type]
            worker = c.Worker(env, tmp / "worker.log", concurrency=concurrency).start()
            try:
                # Warm the worker (imports, pools, litellm's client) with one short run.
                server_delay, server.delay_s = server.delay_s, 0.0
                warm = c.start_runs(rt, 2, "Warm up")
                for run_id in warm:
                    advance.delay(run_id, 0)
                c.wait_for_runs(url, warm, timeout=120)
                server.delay_s = server_delay
                calls_before = server.calls

                ids = c.start_runs(rt, args.runs)
                started = time.perf_counter()
                for run_id in ids:
                    advance.delay(run_id, 0)
                statuses = c.wait_for_runs(url, ids, timeout=args.timeout, poll_s=0.02)
                wall = time.perf_counter() - started
                rss = worker.peak_rss_mb()
            finally:
                worker.stop()
            calls = server.calls - calls_before
            peak_in_flight = server.peak_in_flight
    finally:
        if created and not args.keep:
            c.drop_database(url)

    calls_per_run = calls / args.runs
    ideal = calls_per_run * args.latency
    record = {
        "runs": args.runs,
        "calls_per_run": round(calls_per_run, 2),
        "latency_s": args.latency,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 3),
        "runs_per_s": round(args.runs / wall, 2),
        "peak_rss_mb": round(rss, 1),
        "worker_concurrency": concurrency,
        "peak_calls_in_flight": peak_in_flight,
        "statuses": statuses,
    }
    c.emit(record)
    print()
    print(
        c.table(
            [record],
            [
                "runs",
                "calls_per_run",
                "latency_s",
                "wall_s",
                "ideal_s",
                "ratio",
                "runs_per_s",
                "peak_rss_mb",
                "peak_calls_in_flight",
            ],
        )
    )


if __name__ == "__main__":
    main()
