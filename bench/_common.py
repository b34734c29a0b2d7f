"""Shared plumbing for the benchmarks: databases, Redis, teams files, a model server, workers.

Benchmarks are run by hand (`python bench/<name>.py --help`); they never import from tests/.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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

# The LangGraph comparison's shape (issue 15): a supervisor and two workers. With the scripted
# policy: supervisor -> researcher -> supervisor -> writer -> supervisor (review, reassign) ->
# researcher -> supervisor (finish): 7 steps, 7 sequential model calls.
PAIR_TEAM: dict[str, Any] = {
    "description": "Benchmark desk - a researcher and a writer, supervised.",
    "supervisor": BENCH_TEAM["supervisor"],
    "workers": [
        BENCH_TEAM["workers"][0],
        {
            "name": "writer",
            "role": "Turns the researcher's facts into a clear answer.\n",
            "tier": "cheap",
        },
    ],
    "limits": {"max_steps": 40, "max_dollars_per_run": 5.0},
}

# A run that never ends by itself: the request carries the scripted `[loop]` directive (the
# supervisor reassigns the same work forever) and the guards that would stop it are set out
# of reach, so one run can be driven to any length to see how a step's cost grows with it.
LONG_TEAM: dict[str, Any] = {
    "description": "Benchmark loop - one researcher, reassigned forever.",
    "supervisor": BENCH_TEAM["supervisor"],
    "workers": BENCH_TEAM["workers"],
    "limits": {"max_steps": 10_000, "stuck_window": 1_000, "max_duration_s": 86_400.0},
}
LONG_REQUEST = "Keep researching the benchmark results [loop]"
TEAMS = {"bench": BENCH_TEAM, "bench_pair": PAIR_TEAM, "bench_long": LONG_TEAM}


# --- services ----------------------------------------------------------------------------


def create_database(name: str) -> str:
    """(Re)create an empty Postgres database on localhost and return its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.format(name=name)


def fresh_database(name: str) -> str:
    """(Re)create a Postgres database on localhost, migrate it, and return its URL."""
    url = create_database(name)
    migrate(url)
    return url


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as a libpq connection URI."""
    return urlsplit(url)._replace(scheme="postgresql").geturl()


def migrate(url: str) -> None:
    from orchestrator.store.db import upgrade

    upgrade(url)


def drop_database(url: str) -> None:
    import psycopg

    from orchestrator.store.db import dispose

    dispose(url)
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_database(url: str | None, default_name: str) -> tuple[str, bool]:
    """The URL to use and whether this script created it (and so drops it at the end)."""
    if url:
        migrate(url)
        return url, False
    return fresh_database(default_name), True


class PrivateRedis:
    """A throwaway redis-server for one benchmark: free port, temp dir, no persistence.

    The benchmarks never flush a Redis they did not start; with `--broker-url` they use that
    broker as it is and leave its data alone.
    """

    def __init__(self, binary: str = "redis-server") -> None:
        self.binary = shutil.which(binary) or binary
        self.dir = tempdir("sb-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 5, timeout: float = 10.0) -> PrivateRedis:
        if not shutil.which(self.binary):
            raise RuntimeError(
                f"{self.binary} not found: install redis-server or pass --broker-url"
            )
        for _ in range(attempts):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--logfile",
                    str(self.dir / "redis.log"),
                    "--maxclients",
                    "4000",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
        log = self.dir / "redis.log"
        raise RuntimeError(
            "private redis-server did not start:\n"
            + (log.read_text(errors="replace")[-2000:] if log.exists() else "")
        )

    def _wait_ready(self, timeout: float) -> bool:
        import redis

        assert self.proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    """The broker to use: `url` untouched when given, else a private redis-server for the
    duration of the block."""
    if url:
        yield url
        return
    with PrivateRedis() as private:
        yield private.url


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_commandstats(url: str) -> dict[str, int]:
    """Server-wide command counts (INFO commandstats); diff two snapshots to count a phase."""
    import redis

    info = redis.Redis.from_url(url).info("commandstats")
    return {key.removeprefix("cmdstat_"): int(value["calls"]) for key, value in info.items()}


# --- teams --------------------------------------------------------------------------------


def teams_file(directory: Path, api_base: str | None = None) -> Path:
    """The default teams file plus the bench teams; tiers point at api_base when given."""
    import yaml

    data = yaml.safe_load((ROOT / "teams" / "default.yaml").read_text())
    if api_base is not None:
        # Priced like the scripted tiers, so cost accounting runs as it does for a hosted model.
        data["tiers"] = {
            "cheap": {
                "model": "openai/gpt-test",
                "api_base": api_base,
                "input_cost_per_token": 0.5e-6,
                "output_cost_per_token": 1.5e-6,
            },
            "premium": {
                "model": "openai/gpt-test-premium",
                "api_base": api_base,
                "input_cost_per_token": 3e-6,
                "output_cost_per_token": 15e-6,
            },
        }
    data["teams"].update(TEAMS)
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

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int,
        hostname: str | None = None,
        processes: int = 1,
    ) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.concurrency = concurrency
        # processes > 1: one `switchboard worker --processes N` command, N Celery processes.
        self.processes = processes
        # Celery node names must differ between workers on one broker (mailbox, revokes).
        self.hostname = hostname
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
                f"--processes={self.processes}",
                *([f"--hostname={self.hostname}"] if self.hostname else []),
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
        """Ready once a connection of this worker's process blocks on the broker (BRPOP).

        Matched by the client's local port, which belongs to this process: with several
        workers on one broker, another worker's BRPOP must not count as this one's."""
        import redis

        assert self.proc is not None
        broker = self.env["BROKER_URL"]
        try:
            clients = redis.Redis.from_url(broker).client_list()
        except Exception:
            return False
        blocked = {
            int(c.get("addr", ":0").rsplit(":", 1)[1])
            for c in clients
            if c.get("cmd") in ("brpop", "blpop", "bzpopmin")
        }
        consuming = [pid for pid in self.pids() if _local_ports(pid) & blocked]
        return len(consuming) >= self.processes

    def pids(self) -> list[int]:
        """The Celery processes: the command itself, or its children under --processes N."""
        assert self.proc is not None
        if self.processes == 1:
            return [self.proc.pid]
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def peak_rss_mb(self) -> float:
        """VmHWM: the high-water resident set of the Celery process(es), summed, in MiB."""
        total = 0.0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        return total or float("nan")

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


def _local_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` holds open (from /proc, no psutil)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def own_peak_rss_mb() -> float:
    """This process's high-water resident set (ru_maxrss is in KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- runs -----------------------------------------------------------------------------------


def start_runs(
    rt: Any, count: int, request: str = "Summarise the benchmark results", team: str = TEAM
) -> list[int]:
    from orchestrator import service

    ids = []
    for i in range(count):
        run, _ = service.start_run(
            rt.store,
            rt.config,
            request=f"{request} #{i}",
            team=team,
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


def llm_calls(url: str, ids: list[int]) -> int:
    """Paid model calls the runs made (the ledger: one row per call, replays excluded)."""
    from sqlalchemy import func, select

    from orchestrator.store.db import session_factory
    from orchestrator.store.models import LLMCall

    with session_factory(url)() as session:
        return int(session.scalar(select(func.count()).where(LLMCall.run_id.in_(ids))) or 0)


# Columns that can hold a checkpoint's payload; the rest (ids, versions, times) are overhead
# every design pays alike.
_PAYLOAD_TYPES = ("text", "json", "jsonb", "bytea")


def checkpoint_tables_bytes(url: str, run_ids: list[int]) -> dict[str, Any]:
    """Checkpoint bytes the runs have in the database, summed over EVERY table whose name
    starts with `checkpoint` (today `checkpoints`; a deltas table, once there, counts too).

    `bytes` is the payload's length as text (octet_length, json cast to text), `stored_bytes`
    what Postgres keeps for it (pg_column_size: after TOAST compression). Rows present are
    counted: a design that deletes superseded rows shows what it keeps. Tables without a
    run_id column cannot be attributed to a run and are listed in `skipped`.
    """
    import psycopg
    from psycopg import sql

    dsn = libpq_dsn(url)
    tables: dict[str, list[tuple[str, str]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND c.table_name LIKE 'checkpoint%'
            ORDER BY c.table_name, c.ordinal_position
            """
        ).fetchall()
        for table, column, data_type in rows:
            tables.setdefault(table, []).append((column, data_type))
        per_table: dict[str, dict[str, int]] = {}
        skipped = []
        for table, columns in tables.items():
            names = {name for name, _ in columns}
            payload = [(n, t) for n, t in columns if t in _PAYLOAD_TYPES]
            if "run_id" not in names or not payload:
                skipped.append(table)
                continue
            logical = sql.SQL(" + ").join(
                sql.SQL("COALESCE(octet_length({}{}), 0)").format(
                    sql.Identifier(n), sql.SQL("::text" if t in ("json", "jsonb") else "")
                )
                for n, t in payload
            )
            stored = sql.SQL(" + ").join(
                sql.SQL("COALESCE(pg_column_size({}), 0)").format(sql.Identifier(n))
                for n, _ in payload
            )
            query = sql.SQL(
                "SELECT count(*), COALESCE(SUM({}), 0), COALESCE(SUM({}), 0) FROM {} "
                "WHERE run_id = ANY(%s)"
            ).format(logical, stored, sql.Identifier(table))
            count, total, kept = conn.execute(query, (list(run_ids),)).fetchone() or (0, 0, 0)
            per_table[table] = {"rows": int(count), "bytes": int(total), "stored_bytes": int(kept)}
    return {
        "bytes": sum(t["bytes"] for t in per_table.values()),
        "stored_bytes": sum(t["stored_bytes"] for t in per_table.values()),
        "tables": per_table,
        "skipped": skipped,
    }


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
