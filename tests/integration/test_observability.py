"""Metrics, traces and logs of full runs through real worker processes (issue 8 acceptance)."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.store.models import RunStatus
from tests.support.otlp import OTLPReceiver
from tests.support.stack import wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def total(samples, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == w for k, w in labels.items())
    )


def promtool_accepts(text: str) -> None:
    from shutil import which

    tool = which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (tests/deploy/setup_tools.sh installs it)")
    result = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_after_a_full_run(stack) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    s = stack(METRICS_PORT=str(port))
    s.worker()
    run = s.start("summarise the design")
    assert s.wait(run.id).status == RunStatus.FINISHED
    steps = s.store.steps(run.id)
    calls = s.store.llm_calls(run.id)
    text, samples = scrape(port)
    promtool_accepts(text)
    assert total(samples, "switchboard_steps_total", team="research") == len(steps)
    assert total(samples, "switchboard_steps_total", node="supervisor") == sum(
        1 for x in steps if x.node == "supervisor"
    )
    assert total(samples, "switchboard_step_duration_seconds_count") == len(steps)
    assert (
        total(samples, "switchboard_runs_finished_total", team="research", outcome="finished") == 1
    )
    assert total(samples, "switchboard_model_tokens_total", direction="input") == sum(
        c.tokens_in for c in calls
    )
    assert total(samples, "switchboard_model_tokens_total", direction="output") == sum(
        c.tokens_out for c in calls
    )
    assert total(samples, "switchboard_model_cost_dollars_total", team="research") == pytest.approx(
        sum(c.cost_usd for c in calls)
    )
    assert total(samples, "switchboard_model_call_duration_seconds_count") == len(calls)
    assert total(samples, "switchboard_steps_in_flight") == 0
    assert not any("run_id" in dict(labels) for _, labels in samples)  # bounded labels only


def test_counters_add_up_across_two_worker_processes(stack, tmp_path: Path, make_teams) -> None:  # type: ignore[no-untyped-def]
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    port = free_port()
    s = stack(
        make_teams(limits={"max_steps": 3, "stuck_window": 50}),
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    s.worker("w1", METRICS_PORT=str(port))
    s.worker("w2")
    beat_port = free_port()
    s.beat(METRICS_PORT=str(beat_port))
    runs = [s.start(f"summarise part {i}").id for i in range(6)]
    for run_id in runs:
        assert s.wait(run_id).status == RunStatus.AWAITING_APPROVAL
    logs = s.processes[0].log() + s.processes[1].log()
    assert "w1@" in logs and "w2@" in logs
    db_steps = sum(len(s.store.steps(r)) for r in runs)
    worked = {p.name: p.log().count("step ") for p in s.processes[:2]}
    assert all(n > 0 for n in worked.values()), worked  # both processes executed steps
    _, samples = scrape(port)
    assert total(samples, "switchboard_steps_total") == db_steps
    assert total(samples, "switchboard_escalations_opened_total", reason="max_steps") == len(runs)
    assert total(samples, "switchboard_guard_trips_total", guard="max_steps") == len(runs)
    _, beat_samples = wait_for(
        lambda: (
            (r := scrape(beat_port))
            and total(r[1], "switchboard_escalations_pending") == len(runs)
            and r
        ),
        20,
    )
    assert total(beat_samples, "switchboard_runs_active", status="awaiting_approval") == len(runs)
    assert total(beat_samples, "switchboard_state_snapshot_ok") == 1


def test_one_trace_per_run_across_the_celery_hop(stack) -> None:  # type: ignore[no-untyped-def]
    receiver = OTLPReceiver()
    try:
        s = stack(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100")
        s.worker()
        runs = [s.start("summarise the design"), s.start("summarise the other design")]
        for run in runs:
            assert s.wait(run.id).status == RunStatus.FINISHED
        s.stop()  # flushes the worker's span processor
        traces = set()
        for run in runs:
            row = s.store.get_run(run.id)
            _, trace_id, root_span, _ = row.trace_parent.split("-")
            traces.add(trace_id)
            spans = [x for x in receiver.spans if x.trace_id == trace_id]
            steps = [x for x in spans if x.name.startswith("step ")]
            models = [x for x in spans if x.name.startswith("chat ")]
            assert len(steps) == len(s.store.steps(run.id))
            assert all(x.parent_id == root_span for x in steps)  # every hop joins the run's trace
            assert all(x.service == "switchboard-worker" for x in steps)
            step_ids = {x.span_id for x in steps}
            assert len(models) == len(s.store.llm_calls(run.id))
            assert all(m.parent_id in step_ids for m in models)
            model = models[0].attributes
            assert model["gen_ai.request.model"] == "scripted/premium"
            assert model["gen_ai.usage.input_tokens"] > 0 and "switchboard.cost_usd" in model
        assert len(traces) == 2
    finally:
        receiver.close()


def test_logs_are_json_lines_with_run_context_and_no_secrets(stack) -> None:  # type: ignore[no-untyped-def]
    secrets = {
        "SLACK_BOT_TOKEN": "xoxb-1234-5678-supersecretvalue",
        "OPENAI_API_KEY": "sk-test-verysecretkey0001",
        "DISCORD_TOKEN": "MTEx.discordsecret.tokenvalue00",
    }
    s = stack(LOG_LEVEL="DEBUG", **secrets)
    worker = s.worker()
    run = s.start("summarise the design")
    assert s.wait(run.id).status == RunStatus.FINISHED
    s.stop()
    log = worker.log()
    for value in secrets.values():
        assert value not in log
    import json

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    steps = [x for x in lines if x.get("run_id") == str(run.id) and x.get("step")]
    assert len({x["step"] for x in steps}) == len(s.store.steps(run.id))
    assert all(x.get("team") == "research" for x in steps)
