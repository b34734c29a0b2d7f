"""A real Prometheus server scrapes a Switchboard exporter, loads the alert rules and
answers every dashboard query."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.telemetry import metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _query(base: str, expr: str) -> dict:
    return _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, prometheus_bin: str) -> Iterator[str]:
    binary = prometheus_bin
    workdir = tmp_path_factory.mktemp("prometheus")
    exporter, _ = metrics.serve_metrics(0, "127.0.0.1")
    snapshot = metrics.StateSnapshot(
        escalations_pending=1,
        escalation_oldest_age_seconds=120.0,
        queue_depth={"celery": 2},
        runs_active={"running": 1},
        team_daily_budget_dollars={"research": 25.0},
    )
    collector = metrics.register_state_collector(lambda: snapshot)
    metrics.RUNS_STARTED.labels(team="prometheus-live").inc()
    metrics.RUNS_FINISHED.labels(team="research", outcome="finished").inc()
    metrics.record_model_call(
        team="research",
        model="gpt-4o-mini",
        tier="cheap",
        seconds=0.4,
        input_tokens=10,
        output_tokens=5,
        cost_dollars=0.001,
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "switchboard-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter.server_port}"]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200, "ready")
        _wait(
            lambda: _query(base, 'up{job="switchboard-worker"} == 1')["data"]["result"],
            "the exporter to be scraped",
        )
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        exporter.shutdown()
        metrics.unregister_state_collector(collector)


def test_alert_rules_load_and_evaluate(prometheus: str) -> None:
    def evaluated() -> bool:
        groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules)

    _wait(evaluated, "every rule to be evaluated")
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {group["name"] for group in groups} == {"switchboard-recording", "switchboard"}
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
    ]


def test_every_dashboard_query_runs(prometheus: str) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "switchboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$team", ".*")
            answer = _query(prometheus, expr)
            assert answer["status"] == "success", (panel["title"], expr, answer)


def test_scraped_series_carry_the_catalogue_names(prometheus: str) -> None:
    for expr, value in [
        ('switchboard_runs_started_total{team="prometheus-live"}', 1.0),
        ('switchboard_queue_depth{queue="celery"}', 2.0),
        ('switchboard_team_daily_budget_dollars{team="research"}', 25.0),
        ("switchboard_state_snapshot_ok", 1.0),
    ]:
        result = _query(prometheus, expr)["data"]["result"]
        assert [float(r["value"][1]) for r in result] == [value], expr
