"""Alert rules are valid, unit-tested, and only name series the code exposes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from orchestrator.telemetry.metrics import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Series names in PromQL: switchboard_* not preceded by ':' (recording rule names such as
# team:switchboard_model_cost_dollars:rate1h are ours, not the code's).
SERIES = re.compile(r"(?<![\w:])switchboard_[a-z0-9_]+\b")


def _rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=DEPLOY)


def test_promtool_check_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    result = _run(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_every_alert_has_a_runbook() -> None:
    for rule in _rules():
        if "alert" not in rule:
            continue
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{rule['alert']} lacks {key}"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}


def test_rules_only_name_catalogue_series() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        names = set(SERIES.findall(rule["expr"]))
        uses_recorded = any(name in rule["expr"] for name in recorded)
        assert names or uses_recorded or "up{" in rule["expr"], (
            f"{rule.get('alert') or rule.get('record')} names no switchboard series"
        )
        assert names <= CATALOGUE, sorted(names - CATALOGUE)
