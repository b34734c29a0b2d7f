"""Prometheus metric catalogue for Switchboard, and how to expose it.

The catalogue is fixed: dashboards and alert rules in ``deploy/`` name these series, and
the tests check that every name they use exists here. Labels are bounded on purpose:
team, node, model, tier, outcome, platform — never a run id or a user id, because every
distinct label value is a new time series that Prometheus keeps for weeks.

Two process models are supported:

* single process (bot, beat, ``switchboard chat``): the default registry;
* Celery prefork workers: set ``PROMETHEUS_MULTIPROC_DIR`` *before* this module is
  imported; each child writes its values to mmap files in that directory and the
  exposition registry aggregates them with ``MultiProcessCollector``. Hook
  :func:`celery_process_shutdown` to ``worker_process_shutdown`` so live-gauges of a dead
  child disappear.

State that lives in the database or the broker (pending escalations, queue depth) is not
counted in-process: :func:`register_state_collector` takes a callable that reads it at
scrape time, so this module needs no database import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock, Thread
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ALERT_NOTIFICATIONS",
    "CATALOGUE",
    "CHAT_API_ERRORS",
    "CHAT_DELIVERIES",
    "CHAT_RATE_LIMITED",
    "ESCALATIONS_DECIDED",
    "ESCALATIONS_OPENED",
    "GUARD_TRIPS",
    "MODEL_CALL_SECONDS",
    "MODEL_COST",
    "MODEL_ERRORS",
    "MODEL_TOKENS",
    "RUNS_FINISHED",
    "RUNS_STARTED",
    "SANDBOX_RUNS",
    "STEPS",
    "STEPS_IN_FLIGHT",
    "STEP_SECONDS",
    "TOOL_CALLS",
    "StateCollector",
    "StateSnapshot",
    "celery_process_shutdown",
    "error_label",
    "make_asgi_app",
    "make_wsgi_app",
    "mark_process_dead",
    "metric_names",
    "metrics_registry",
    "multiprocess_enabled",
    "record_model_call",
    "register_state_collector",
    "render_latest",
    "reset_multiprocess_dir",
    "serve_metrics",
    "track_step",
    "unregister_state_collector",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# `_created` series double the series count of every counter for little use; Prometheus
# derives resets itself. (They are absent in multiprocess mode anyway.)
prometheus_client.disable_created_metrics()

# Step durations span a quick router decision to a multi-minute worker turn.
_STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Model calls: sub-second local classifiers up to slow premium reasoning calls.
_MODEL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)

# --- runs and steps ------------------------------------------------------------------------
RUNS_STARTED = Counter("switchboard_runs_started", "Runs accepted and queued.", ["team"])
RUNS_FINISHED = Counter(
    "switchboard_runs_finished",
    "Runs that reached a terminal state (outcome: finished|aborted|failed|expired).",
    ["team", "outcome"],
)
STEPS = Counter(
    "switchboard_steps",
    "Run steps executed (node: router|supervisor|worker|fanout).",
    ["team", "node"],
)
STEP_SECONDS = Histogram(
    "switchboard_step_duration_seconds",
    "Wall time of one run step, checkpoint load to commit.",
    ["team", "node"],
    buckets=_STEP_BUCKETS,
)
STEPS_IN_FLIGHT = Gauge(
    "switchboard_steps_in_flight",
    "Steps currently executing, summed over live worker processes.",
    multiprocess_mode="livesum",
)

# --- model gateway -------------------------------------------------------------------------
MODEL_CALL_SECONDS = Histogram(
    "switchboard_model_call_duration_seconds",
    "Latency of one model call through the gateway, retries included.",
    ["model", "tier"],
    buckets=_MODEL_BUCKETS,
)
MODEL_TOKENS = Counter(
    "switchboard_model_tokens",
    "Tokens billed by model providers (direction: input|output).",
    ["model", "direction"],
)
MODEL_COST = Counter(
    "switchboard_model_cost_dollars",
    "Model spend in US dollars, as computed by the gateway.",
    ["team", "model"],
)
MODEL_ERRORS = Counter(
    "switchboard_model_errors",
    "Model calls that failed after retries (error: exception class name).",
    ["model", "error"],
)

# --- guards and escalations ----------------------------------------------------------------
GUARD_TRIPS = Counter(
    "switchboard_guard_trips",
    "Guard verdicts other than continue, by guard name.",
    ["guard"],
)
ESCALATIONS_OPENED = Counter(
    "switchboard_escalations_opened",
    "Escalations posted to a human, by reason.",
    ["reason"],
)
ESCALATIONS_DECIDED = Counter(
    "switchboard_escalations_decided",
    "Escalations resolved (decision: approved|aborted|expired).",
    ["reason", "decision"],
)

# --- tools and alerts ----------------------------------------------------------------------
TOOL_CALLS = Counter(
    "switchboard_tool_calls",
    "Worker tool calls run or refused (source: builtin or the MCP server's name from the "
    "teams file; outcome: ok|error|rejected|skipped).",
    ["source", "outcome"],
)
ALERT_NOTIFICATIONS = Counter(
    "switchboard_alert_notifications",
    "Alertmanager notifications taken by the intake (outcome: start|duplicate|joined|held|"
    "resolved|ignored|...).",
    ["outcome"],
)

# --- sandbox -------------------------------------------------------------------------------
SANDBOX_RUNS = Counter(
    "switchboard_sandbox_runs",
    "Sandboxed code executions (outcome: ok|error|timeout|oom).",
    ["backend", "outcome"],
)

# --- chat platforms ------------------------------------------------------------------------
CHAT_API_ERRORS = Counter(
    "switchboard_chat_api_errors",
    "Chat platform API calls that failed (error: platform error code or class).",
    ["platform", "error"],
)
CHAT_RATE_LIMITED = Counter(
    "switchboard_chat_rate_limited",
    "HTTP 429 responses received from a chat platform.",
    ["platform"],
)
CHAT_DELIVERIES = Counter(
    "switchboard_chat_deliveries",
    "Outbox notices delivered (kind: progress|result|escalation|...).",
    ["platform", "kind"],
)


# --- state read at scrape time -------------------------------------------------------------
@dataclass(frozen=True)
class StateSnapshot:
    """Figures read from the database and broker at scrape time.

    Gauges of things that live outside the process (rows, queue lengths) must be read,
    not counted, or every process would disagree about them.
    """

    escalations_pending: int = 0
    escalation_oldest_age_seconds: float = 0.0
    queue_depth: Mapping[str, int] = field(default_factory=dict)
    runs_active: Mapping[str, int] = field(default_factory=dict)
    team_daily_budget_dollars: Mapping[str, float] = field(default_factory=dict)


_STATE_FAMILIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("switchboard_escalations_pending", "Escalations awaiting a human decision.", ()),
    (
        "switchboard_escalation_oldest_age_seconds",
        "Age of the oldest pending escalation; 0 when none is pending.",
        (),
    ),
    ("switchboard_queue_depth", "Messages waiting in a broker queue.", ("queue",)),
    ("switchboard_runs_active", "Runs not yet terminal, by status.", ("status",)),
    (
        "switchboard_team_daily_budget_dollars",
        "Configured daily dollar limit of a team (for burn-rate alerts).",
        ("team",),
    ),
    (
        "switchboard_state_snapshot_ok",
        "1 when the last state snapshot was read, 0 when reading it failed.",
        (),
    ),
)


class StateCollector(Collector):
    """Exposes a :class:`StateSnapshot` as gauges; the callable runs once per scrape."""

    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        # Describing without values keeps registration from calling the snapshot (a DB hit).
        for name, doc, labels in _STATE_FAMILIES:
            yield GaugeMetricFamily(name, doc, labels=list(labels) or None)

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=list(labels) or None)
            for name, doc, labels in _STATE_FAMILIES
        }
        try:
            snap = self._snapshot()
        except Exception:  # a broken DB must not break the whole /metrics page
            log.exception("state snapshot failed")
            families["switchboard_state_snapshot_ok"].add_metric([], 0.0)
            yield families["switchboard_state_snapshot_ok"]
            return
        families["switchboard_escalations_pending"].add_metric([], snap.escalations_pending)
        families["switchboard_escalation_oldest_age_seconds"].add_metric(
            [], snap.escalation_oldest_age_seconds
        )
        for queue, depth in sorted(snap.queue_depth.items()):
            families["switchboard_queue_depth"].add_metric([queue], depth)
        for status, count in sorted(snap.runs_active.items()):
            families["switchboard_runs_active"].add_metric([status], count)
        for team, dollars in sorted(snap.team_daily_budget_dollars.items()):
            families["switchboard_team_daily_budget_dollars"].add_metric([team], dollars)
        families["switchboard_state_snapshot_ok"].add_metric([], 1.0)
        yield from families.values()


# --- exposition ----------------------------------------------------------------------------
_lock = Lock()
_exposition: CollectorRegistry | None = None


def multiprocess_enabled() -> bool:
    """True when values are shared through PROMETHEUS_MULTIPROC_DIR (Celery prefork)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: aggregated over processes in multiprocess mode.

    In multiprocess mode the default registry only sees this process, so a fresh registry
    with a ``MultiProcessCollector`` reads every child's files instead.
    """
    global _exposition
    with _lock:
        if _exposition is None:
            if multiprocess_enabled():
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
                _exposition = registry
            else:
                _exposition = REGISTRY
        return _exposition


def register_state_collector(snapshot: Callable[[], StateSnapshot]) -> StateCollector:
    """Expose DB/broker-derived gauges from ``snapshot``, called on every scrape.

    Register it in exactly one process (the beat exporter), or the figures are scraped
    once per process and double-counted by ``sum()``.
    """
    collector = StateCollector(snapshot)
    metrics_registry().register(collector)
    return collector


def unregister_state_collector(collector: StateCollector) -> None:
    """Remove a collector added by :func:`register_state_collector` (tests, reloads)."""
    metrics_registry().unregister(collector)


def render_latest() -> tuple[bytes, str]:
    """Body and content type of a /metrics response, for frameworks without an adapter."""
    return (
        prometheus_client.generate_latest(metrics_registry()),
        prometheus_client.CONTENT_TYPE_LATEST,
    )


def make_asgi_app() -> Callable:
    """ASGI app serving /metrics (mount it in the Slack HTTP server)."""
    return prometheus_client.make_asgi_app(registry=metrics_registry())


def make_wsgi_app() -> Callable:
    """WSGI app serving /metrics, for WSGI hosts."""
    return prometheus_client.make_wsgi_app(registry=metrics_registry())


def serve_metrics(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve /metrics on a daemon thread; for processes with no HTTP server of their own.

    ``port=0`` binds a free port (read it from ``server.server_port``).
    """
    return prometheus_client.start_http_server(port, addr=addr, registry=metrics_registry())


def reset_multiprocess_dir() -> None:
    """Delete other processes' files from PROMETHEUS_MULTIPROC_DIR before forking children.

    Files left by a previous run would otherwise be added to the new totals. This
    process's own files are kept: they are already mapped (importing this module creates
    them) and deleting them would silently drop its values. A tmpfs mount (as in
    docker-compose.yml) makes this unnecessary.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    own_suffix = f"_{os.getpid()}.db"
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        elif not entry.name.endswith(own_suffix):
            entry.unlink()


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a dead child's live gauges (``livesum``) from the aggregate; no-op otherwise."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid if pid is not None else os.getpid())


def celery_process_shutdown(pid: int | None = None, **_: object) -> None:
    """Receiver for Celery's ``worker_process_shutdown`` signal (sent in the child)."""
    mark_process_dead(pid)


# --- recording helpers ---------------------------------------------------------------------
def error_label(exc: BaseException) -> str:
    """A bounded label value for an error: its class name, never its message."""
    return type(exc).__name__


@contextlib.contextmanager
def track_step(team: str, node: str) -> Iterator[None]:
    """Count a step, time it, and keep it in the in-flight gauge while it runs."""
    STEPS.labels(team=team, node=node).inc()
    STEPS_IN_FLIGHT.inc()
    start = time.perf_counter()
    try:
        yield
    finally:
        STEP_SECONDS.labels(team=team, node=node).observe(time.perf_counter() - start)
        STEPS_IN_FLIGHT.dec()


def record_model_call(
    *,
    team: str,
    model: str,
    tier: str,
    seconds: float,
    input_tokens: int,
    output_tokens: int,
    cost_dollars: float,
) -> None:
    """Record one completed model call: latency, tokens both ways and spend."""
    MODEL_CALL_SECONDS.labels(model=model, tier=tier).observe(seconds)
    if input_tokens:
        MODEL_TOKENS.labels(model=model, direction="input").inc(input_tokens)
    if output_tokens:
        MODEL_TOKENS.labels(model=model, direction="output").inc(output_tokens)
    if cost_dollars:
        MODEL_COST.labels(team=team, model=model).inc(cost_dollars)


_INSTRUMENTS: tuple[Counter | Gauge | Histogram, ...] = (
    RUNS_STARTED,
    RUNS_FINISHED,
    STEPS,
    STEP_SECONDS,
    STEPS_IN_FLIGHT,
    MODEL_CALL_SECONDS,
    MODEL_TOKENS,
    MODEL_COST,
    MODEL_ERRORS,
    GUARD_TRIPS,
    ESCALATIONS_OPENED,
    ESCALATIONS_DECIDED,
    SANDBOX_RUNS,
    CHAT_API_ERRORS,
    CHAT_RATE_LIMITED,
    CHAT_DELIVERIES,
)


# --- the catalogue, as series names --------------------------------------------------------
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def metric_names() -> frozenset[str]:
    """Every series name Switchboard exposes, suffixes included (``_total``, ``_bucket``).

    Read from the metric objects rather than typed out, so dashboards and alert rules can be
    checked against what the code really defines.
    """
    names: set[str] = set()
    for collector in _INSTRUMENTS:
        for family in collector.describe():
            names.update(family.name + s for s in _SUFFIXES[family.type])
    names.update(name for name, _, _ in _STATE_FAMILIES)
    return frozenset(names)


CATALOGUE: frozenset[str] = metric_names()
