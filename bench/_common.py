"""Shared plumbing for the benchmarks: databases, Redis, teams files, a model server, workers.

Benchmarks are run by hand (`python bench/<name>.py --help`); they never import from tests/.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no fetch at import
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
TEAM = "bench"

# A one-worker team: with the scripted supervisor policy a run is
# supervisor -> worker -> supervisor (review, reassign) -> worker -> supervisor (finish):
# 5 steps (no route step when the team is given), 5 sequential model calls.
BENCH_TEAM: dict[str, Any] = {
    "description": "Benchmark desk - one researcher, supervised.",
    "supervisor": {
        "tier": "premium",
        "prompt": "You lead a research desk. Have the researcher gather the facts, review "
        "the report, and finish.\n",
    },
    "workers": [
        {
            "name": "researcher",
            "role": "Finds and checks the facts the request needs.\n",
            "tier": "cheap",
        }
    ],
    "limits": {"max_steps": 40, "max_dollars_per_run": 5.0},
}
STEPS_PER_RUN = 5
CALLS_PER_RUN = 5


# --- services ----------------------------------------------------------------------------


def fresh_database(name: str) -> str:
    """(Re)create a Postgres database on localhost, migrate it, and return its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.format(name=name)
    migrate(url)
    return url


def migrate(url: str) -> None:
    from orchestrator.store.db import upgrade

    upgrade(url)


def drop_database(url: str) -> None:
    import psycopg

    from orchestrator.store.db import _engines

    engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_database(url: str | None, default_name: str) -> tuple[str, bool]:
    """The URL to use and whether this script created it (and so drops it at the end)."""
    if url:
        migrate(url)
        return url, False
    return fresh_database(default_name), True


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def redis_commandstats(url: str) -> dict[str, int]:
    """Server-wide command counts (INFO commandstats); diff two snapshots to count a phase."""
    import redis

    info = redis.Redis.from_url(url).info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in info.items()}


# --- teams --------------------------------------------------------------------------------


def teams_file(directory: Path, api_base: str | None = None) -> Path:
    """The default teams file plus the bench team; tiers point at api_base when given."""
    import yaml

    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    if api_base is not None:
        data["tiers"] = {
            "cheap": {"model": "openai/gpt-test", "api_base": api_base},
            "premium": {"model": "openai/gpt-test-premium", "api_base": api_base},
        }
    data["teams"][TEAM] = BENCH_TEAM
    path = directory / "teams.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --- a local OpenAI-compatible server ------------------------------------------------------


class ModelServer:
    """Chat completions over HTTP/1.1, answered by the scripted policy after a fixed delay.

    ThreadingHTTPServer with daemon threads: every connection gets its own thread, so
    hundreds of concurrent requests wait out their delay side by side.
    """

    def __init__(self, delay_s: float = 1.0) -> None:
        from orchestrator.llm.scripted import ScriptedLLM

        self.delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        scripted = ScriptedLLM()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.calls += 1
                    outer.in_flight += 1
                    outer.peak_in_flight = max(outer.peak_in_flight, outer.in_flight)
                try:
                    if outer.delay_s:
                        time.sleep(outer.delay_s)
                    data = json.dumps(outer._answer(scripted, body)).encode()
                finally:
                    with outer._lock:
                        outer.in_flight -= 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def _answer(scripted: Any, body: dict[str, Any]) -> dict[str, Any]:
        params = {"tools": body["tools"]} if body.get("tools") else {}
        response = scripted._respond(body.get("model", "test"), body.get("messages", []), params)
        choice = response.choices[0]
        message = choice.message.model_dump()
        usage = response.usage
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [
                {
                    "index": 0,
                    "message": {k: v for k, v in message.items() if v is not None},
                    "finish_reason": choice.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- a worker process ----------------------------------------------------------------------


class Worker:
    """`switchboard worker` (Celery, threads pool) in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "worker",
                f"--concurrency={self.concurrency}",
                "--pool=threads",
                "--loglevel=WARNING",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            if self._consuming():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker did not become ready:\n{self.log()[-3000:]}")

    def _consuming(self) -> bool:
        """Ready once the worker has a BRPOP (or similar) connection open to the broker."""
        import redis

        broker = self.env["BROKER_URL"]
        try:
            clients = redis.Redis.from_url(broker).client_list()
        except Exception:
            return False
        return any(c.get("cmd") in ("brpop", "blpop", "bzpopmin") for c in clients)

    def peak_rss_mb(self) -> float:
        """VmHWM: the process's high-water resident set, in MiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- runs -----------------------------------------------------------------------------------


def start_runs(rt: Any, count: int, request: str = "Summarise the benchmark results") -> list[int]:
    from orchestrator import service

    ids = []
    for i in range(count):
        run, _ = service.start_run(
            rt.store,
            rt.config,
            request=f"{request} #{i}",
            team=TEAM,
            platform="bench",
            channel="C-bench",
            thread=None,
            requester="U-bench",
            origin_key=None,
        )
        ids.append(run.id)
    return ids


def wait_for_runs(url: str, ids: list[int], timeout: float, poll_s: float = 0.05) -> dict[str, int]:
    """Poll until every run has left queued/running; returns the count per status."""
    from sqlalchemy import func, select

    from orchestrator.store.db import session_factory
    from orchestrator.store.models import Run, RunStatus

    sessions = session_factory(url)
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            rows = session.execute(
                select(Run.status, func.count()).where(Run.id.in_(ids)).group_by(Run.status)
            ).all()
        counts = {status: n for status, n in rows}
        active = counts.get(RunStatus.QUEUED, 0) + counts.get(RunStatus.RUNNING, 0)
        if not active:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still active after {timeout}s: {counts}")
        time.sleep(poll_s)


def checkpoint_bytes(url: str, ids: list[int]) -> float:
    """Mean size of the checkpoints the steps wrote (version >= 1), in bytes."""
    from sqlalchemy import func, select

    from orchestrator.store.db import session_factory
    from orchestrator.store.models import Checkpoint

    with session_factory(url)() as session:
        value = session.scalar(
            select(func.avg(func.octet_length(Checkpoint.state))).where(
                Checkpoint.run_id.in_(ids), Checkpoint.version >= 1
            )
        )
    return float(value or 0.0)


# --- figures --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return "" if value is None else str(value)

    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=False), flush=True)
