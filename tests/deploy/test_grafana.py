"""The provisioned Grafana dashboard loads and only queries series the code exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.telemetry.metrics import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "switchboard.json"
SERIES = re.compile(r"(?<![\w:])switchboard_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _query_panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_has_the_fields_grafana_requires(dashboard: dict) -> None:
    assert dashboard["title"]
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert isinstance(panel["id"], int)
        assert panel["type"] in {"row", "stat", "timeseries", "gauge", "table", "bargauge"}
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid)
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
    for panel in _query_panels(dashboard):
        assert panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no targets"
        for target in panel["targets"]:
            assert target["refId"] and target["expr"]


def test_panels_do_not_overlap(dashboard: dict) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {panel['title']} overlaps another"
        cells |= mine


def test_dashboard_covers_runs_spend_escalations_latency_queue(dashboard: dict) -> None:
    exprs = " ".join(t["expr"] for p in _query_panels(dashboard) for t in p["targets"])
    for series in (
        "switchboard_runs_finished_total",
        "switchboard_model_cost_dollars_total",
        "switchboard_escalations_pending",
        "switchboard_model_call_duration_seconds_bucket",
        "switchboard_queue_depth",
    ):
        assert series in exprs


def test_every_expr_names_catalogue_series(dashboard: dict) -> None:
    exprs = [t["expr"] for p in _query_panels(dashboard) for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    for expr in exprs:
        names = set(SERIES.findall(expr))
        assert names, f"{expr!r} names no switchboard series"
        assert names <= CATALOGUE, sorted(names - CATALOGUE)


def test_every_expr_is_valid_promql(dashboard: dict, promtool: str, tmp_path: Path) -> None:
    # promtool parses PromQL when checking rules, so each query becomes a recording rule.
    rules = []
    for panel in _query_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$team", ".*")
            rules.append(
                {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr}
            )
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboard_and_datasource(dashboard: dict) -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    uids = {t["datasource"]["uid"] for p in _query_panels(dashboard) for t in p["targets"]} | {
        p["datasource"]["uid"] for p in _query_panels(dashboard)
    }
    assert uids == {prometheus["uid"]}
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "switchboard.yml").read_text()
    )
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
