"""deploy/alertmanager.yml is valid, routes every Switchboard alert to people and to the intake,
and its inhibition rules silence symptoms while their cause fires (checked on a real
Alertmanager)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.alerts.servers import Alertmanager, alertmanager_config, get_json, wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CONFIG = DEPLOY / "alertmanager.yml"


def _amtool(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def _route(amtool: str, labels: dict[str, str]) -> list[str]:
    pairs = [f"{k}={v}" for k, v in labels.items()]
    result = _amtool(amtool, "config", "routes", "test", f"--config.file={CONFIG}", *pairs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def test_amtool_check_config(amtool: str) -> None:
    result = _amtool(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "3 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            {
                "stack": "switchboard",
                "alertname": "SwitchboardTargetDown",
                "severity": "critical",
                "job": "switchboard-worker",
            },
            "switchboard-oncall",
        ),
        (
            {
                "stack": "switchboard",
                "alertname": "SwitchboardBudgetBurnRateHigh",
                "severity": "warning",
                "team": "research",
            },
            "switchboard-alerts",
        ),
        # Not Switchboard's own (no stack label), or a severity nobody routes: people only.
        ({"alertname": "NodeDown", "severity": "critical"}, "slack-alerts"),
        ({"stack": "switchboard", "alertname": "Info", "severity": "info"}, "slack-alerts"),
    ],
)
def test_routes(amtool: str, labels: dict[str, str], receiver: str) -> None:
    pairs = [f"{k}={v}" for k, v in labels.items()]
    result = _amtool(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *pairs,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_shipped_alert_reaches_slack_and_the_intake(amtool: str) -> None:
    """Each rule of alerts.yml, with Prometheus' external labels, lands on a receiver that
    posts to Slack and to Switchboard's intake."""
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    external = prometheus["global"]["external_labels"]
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    alerts = [rule for group in rules for rule in group["rules"] if "alert" in rule]
    assert alerts
    for rule in alerts:
        labels = {**external, "alertname": rule["alert"], **rule.get("labels", {})}
        (name,) = _route(amtool, labels)
        receiver = receivers[name]
        assert receiver.get("slack_configs"), name
        hooks = receiver.get("webhook_configs", [])
        assert [h["url"] for h in hooks] == ["http://alerts:9095/alerts"], name
        assert all(h["send_resolved"] for h in hooks + receiver["slack_configs"])
        assert all(h["http_config"]["authorization"]["credentials_file"] for h in hooks)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    """The shipped config on a real Alertmanager; its receivers point at a closed port."""
    workdir = tmp_path_factory.mktemp("alertmanager")
    for name in ("intake-token", "slack-token"):
        (workdir / name).write_text("t" * 32)
    config = alertmanager_config(
        intake_url="http://127.0.0.1:9/alerts",
        slack_api_url="http://127.0.0.1:9/api/chat.postMessage",
        intake_token_file=workdir / "intake-token",
        slack_token_file=workdir / "slack-token",
    )
    manager = Alertmanager(config, workdir).start()
    yield manager
    manager.stop()


def _post_alerts(manager: Alertmanager, alerts: list[dict[str, str]]) -> None:
    now = datetime.now(UTC)
    body = [
        {
            "labels": {"stack": "switchboard", **labels},
            "annotations": {"summary": labels["alertname"]},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat(),
        }
        for labels in alerts
    ]
    request = urllib.request.Request(
        f"{manager.url}/api/v2/alerts",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_causes_inhibit_their_symptoms(alertmanager: Alertmanager) -> None:
    _post_alerts(
        alertmanager,
        [
            {
                "alertname": "SwitchboardTargetDown",
                "severity": "critical",
                "job": "switchboard-worker",
            },
            {"alertname": "SwitchboardQueueNotConsumed", "severity": "critical"},
            {"alertname": "SwitchboardStateSnapshotFailing", "severity": "warning"},
            {"alertname": "SwitchboardEscalationWaiting", "severity": "warning"},
            {"alertname": "SwitchboardRunErrorRatioHigh", "severity": "critical", "team": "a"},
            {"alertname": "SwitchboardRunErrorRatioHigh", "severity": "warning", "team": "a"},
            {"alertname": "SwitchboardRunErrorRatioHigh", "severity": "warning", "team": "b"},
        ],
    )
    expected = {
        ("SwitchboardTargetDown", "critical", ""): False,  # the cause still pages
        ("SwitchboardQueueNotConsumed", "critical", ""): True,  # workers are down
        ("SwitchboardStateSnapshotFailing", "warning", ""): False,
        ("SwitchboardEscalationWaiting", "warning", ""): True,  # its gauge is stale
        ("SwitchboardRunErrorRatioHigh", "critical", "a"): False,
        ("SwitchboardRunErrorRatioHigh", "warning", "a"): True,  # critical for team a fires
        ("SwitchboardRunErrorRatioHigh", "warning", "b"): False,  # another team
    }
    seen: dict[tuple[str, str, str], bool] = {}

    def inhibited() -> bool:
        # Alertmanager lists an alert before its inhibitor has taken in the alerts that
        # mute it: read until the picture settles (or the wait ends and the assert says how).
        alerts = get_json(f"{alertmanager.url}/api/v2/alerts")
        seen.clear()
        seen.update(
            {
                (a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("team", "")): (
                    bool(a["status"]["inhibitedBy"])
                )
                for a in alerts
            }
        )
        return seen == expected

    with contextlib.suppress(AssertionError):
        wait_until(inhibited, "the inhibitions to settle", timeout=15)
    assert seen == expected
