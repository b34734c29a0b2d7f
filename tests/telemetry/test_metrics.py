"""The metric catalogue as Prometheus sees it: valid exposition, multiprocess sums."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.telemetry import metrics

REPO = Path(__file__).resolve().parents[2]


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: run tests/deploy/setup_tools.sh")
    return path


def _exercise_every_metric() -> None:
    metrics.RUNS_STARTED.labels(team="research").inc()
    metrics.RUNS_FINISHED.labels(team="research", outcome="finished").inc()
    with metrics.track_step("research", "supervisor"):
        pass
    metrics.record_model_call(
        team="research",
        model="gpt-4o-mini",
        tier="cheap",
        seconds=0.8,
        input_tokens=120,
        output_tokens=30,
        cost_dollars=0.0004,
    )
    metrics.MODEL_ERRORS.labels(model="gpt-4o", error=metrics.error_label(TimeoutError())).inc()
    metrics.GUARD_TRIPS.labels(guard="loop").inc()
    metrics.ESCALATIONS_OPENED.labels(reason="budget").inc()
    metrics.ESCALATIONS_DECIDED.labels(reason="budget", decision="approved").inc()
    metrics.SANDBOX_RUNS.labels(backend="bubblewrap", outcome="timeout").inc()
    metrics.CHAT_API_ERRORS.labels(platform="slack", error="channel_not_found").inc()
    metrics.CHAT_RATE_LIMITED.labels(platform="discord").inc()
    metrics.CHAT_DELIVERIES.labels(platform="slack", kind="progress").inc()
    metrics.TOOL_CALLS.labels(source="notes", outcome="ok").inc()
    metrics.ALERT_NOTIFICATIONS.labels(outcome="start").inc()


def test_exposition_passes_promtool_check_metrics() -> None:
    promtool = _promtool()
    _exercise_every_metric()
    collector = metrics.register_state_collector(
        lambda: metrics.StateSnapshot(
            escalations_pending=2,
            escalation_oldest_age_seconds=95.0,
            queue_depth={"celery": 4},
            runs_active={"running": 3, "awaiting_approval": 2},
            team_daily_budget_dollars={"research": 20.0},
        )
    )
    try:
        body, content_type = metrics.render_latest()
    finally:
        metrics.unregister_state_collector(collector)
    assert content_type.startswith("text/plain")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()

    exposed = {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name.startswith("switchboard_")
    }
    # Every catalogue series appears once each metric has been touched.
    assert exposed >= metrics.CATALOGUE, sorted(metrics.CATALOGUE - exposed)
    assert 'switchboard_queue_depth{queue="celery"} 4.0' in body.decode()


def test_catalogue_names_follow_conventions() -> None:
    for name in metrics.CATALOGUE:
        assert name.startswith("switchboard_")
    counters = {n for n in metrics.CATALOGUE if n.endswith("_total")}
    assert "switchboard_model_cost_dollars_total" in counters
    assert "switchboard_step_duration_seconds_bucket" in metrics.CATALOGUE
    # No run or user ids as labels: they would make a series per run.
    for instrument in metrics._INSTRUMENTS:
        for family in instrument.describe():
            assert not {"run_id", "user_id", "user"} & set(instrument._labelnames), family.name


def test_broken_snapshot_reports_not_ok_instead_of_failing_the_scrape() -> None:
    def broken() -> metrics.StateSnapshot:
        raise ConnectionError("database is down")

    registry = CollectorRegistry()
    registry.register(metrics.StateCollector(broken))
    body = generate_latest(registry).decode()
    assert "switchboard_state_snapshot_ok 0.0" in body
    assert "switchboard_escalations_pending " not in body


def test_state_collector_registration_does_not_call_the_snapshot() -> None:
    calls: list[int] = []

    def snapshot() -> metrics.StateSnapshot:
        calls.append(1)
        return metrics.StateSnapshot()

    collector = metrics.register_state_collector(snapshot)
    try:
        assert calls == []
        metrics.render_latest()
        assert calls == [1]
    finally:
        metrics.unregister_state_collector(collector)


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    import urllib.request

    from orchestrator.telemetry import metrics

    def child(n):
        metrics.RUNS_STARTED.labels(team="ops").inc(n)
        metrics.STEPS_IN_FLIGHT.inc()
        metrics.celery_process_shutdown(pid=None)

    if __name__ == "__main__":
        metrics.reset_multiprocess_dir()
        ctx = mp.get_context(sys.argv[1])
        procs = [ctx.Process(target=child, args=(n,)) for n in (3, 4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0, p.exitcode
        metrics.STEPS_IN_FLIGHT.inc()  # the parent is alive and busy
        server, _ = metrics.serve_metrics(0, "127.0.0.1")
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        print(urllib.request.urlopen(url, timeout=10).read().decode())
        server.shutdown()
    """
)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_multiprocess_children_are_summed_on_metrics(tmp_path: Path, start_method: str) -> None:
    script = tmp_path / "mp_metrics.py"
    script.write_text(MULTIPROCESS_SCRIPT)
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    (mp_dir / "counter_99999.db").write_bytes(b"stale file from an earlier run")
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, str(script), start_method],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    started = families["switchboard_runs_started"].samples
    assert [(s.labels, s.value) for s in started] == [({"team": "ops"}, 7.0)]
    # livesum: the children marked themselves dead, so only the live parent counts.
    in_flight = families["switchboard_steps_in_flight"].samples
    assert sum(s.value for s in in_flight) == 1.0
