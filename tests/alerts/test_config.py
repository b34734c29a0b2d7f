"""The teams file's `alerts` section: matchers, routes, request templates, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.alerts import (
    REQUEST_LIMIT,
    AlertRoute,
    AlertsConfig,
    AlertView,
    GroupView,
    parse_matcher,
)
from orchestrator.teams import TeamsFileError, load_teams
from tests.conftest import DEFAULT_TEAMS

RUNBOOK = "https://runbooks.example.com/switchboard/target-down"
SOURCE = "http://prometheus:9090/graph?g0.expr=up%3D%3D0"


def group(**overrides: Any) -> GroupView:
    labels = {"alertname": "SwitchboardTargetDown", "severity": "critical", "job": "worker"}
    values: dict[str, Any] = {
        "status": "firing",
        "receiver": "switchboard-oncall",
        "group_labels": {"alertname": "SwitchboardTargetDown", "job": "worker"},
        "common_labels": labels,
        "common_annotations": {"summary": "worker cannot be scraped", "runbook_url": RUNBOOK},
        "external_url": "http://alertmanager:9093",
        "alerts": (
            AlertView(
                "firing",
                {**labels, "instance": "10.0.0.7:9100"},
                {"summary": "worker cannot be scraped", "runbook_url": RUNBOOK},
                starts_at="2026-11-28T05:00:00Z",
                generator_url=SOURCE,
                fingerprint="a1",
            ),
        ),
    }
    values.update(overrides)
    return GroupView(**values)


def route(**overrides: Any) -> AlertRoute:
    values: dict[str, Any] = {"channel": {"platform": "slack", "id": "C0ALERTS"}}
    values.update(overrides)
    return AlertRoute.model_validate(values)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ("severity=critical", {"severity": "critical"}, True),
        ('severity!="critical"', {"severity": "warning"}, True),
        ('severity!="critical"', {}, True),  # a missing label is the empty string
        ('team=""', {}, True),
        ('alertname=~"Switchboard.*"', {"alertname": "SwitchboardTargetDown"}, True),
        ('alertname=~"Switchboard"', {"alertname": "SwitchboardTargetDown"}, False),  # anchored
        ('alertname!~"Node.*"', {"alertname": "SwitchboardTargetDown"}, True),
        ('summary="say \\"hi\\""', {"summary": 'say "hi"'}, True),
    ],
)
def test_matchers_follow_alertmanager(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("severity", "expected name="),
        ('alertname=~"(unclosed"', "invalid regular expression"),
        ('severity="critical', "unbalanced quotes"),
        ('severity="a"b"', "unescaped quote"),
        ("1abc=x", "expected name="),
    ],
)
def test_bad_matchers_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_matcher(text)


def test_first_matching_route_wins() -> None:
    config = AlertsConfig.model_validate(
        {
            "routes": [
                {
                    "name": "critical",
                    "matchers": ['severity="critical"'],
                    "team": "engineering",
                    "channel": {"platform": "slack", "id": "C0ONCALL"},
                },
                {"name": "rest", "channel": {"platform": "discord", "id": "123456789012345678"}},
            ]
        }
    )
    assert config.route_for({"severity": "critical"}).name == "critical"
    assert config.route_for({"severity": "warning"}).name == "rest"
    assert AlertsConfig().route_for({"severity": "critical"}) is None
    assert config.per_channel.runs == 5 and config.per_channel.per_seconds == 600


def test_request_carries_labels_runbook_and_source_whatever_the_template() -> None:
    request = route(request="Look at {{ labels.alertname }} on {{ labels.job }}.").render_request(
        group()
    )
    first, _, context = request.partition("\n\n")
    assert first == "Look at SwitchboardTargetDown on worker."
    assert f"Runbook: {RUNBOOK}" in context
    assert 'alertname="SwitchboardTargetDown"' in context and 'severity="critical"' in context
    assert f"Source: {SOURCE}" in context
    assert 'instance="10.0.0.7:9100"' in context  # the alert's own labels, per alert


def test_default_template_reads_like_a_request() -> None:
    request = route().render_request(group())
    assert request.startswith(
        "Investigate the firing alert SwitchboardTargetDown (critical): worker cannot be scraped."
    )


def test_template_values() -> None:
    template = (
        "{{ status }}|{{ receiver }}|{{ group_labels.job }}|{{ runbook_url }}|"
        "{{ generator_url }}|{{ external_url }}|{{ alerts | length }}|"
        "{{ alerts[0].labels.instance }}|{{ annotations.summary }}|{{ labels.missing }}"
    )
    first = route(request=template).render_request(group()).split("\n\n")[0]
    assert first.split("|") == [
        "firing",
        "switchboard-oncall",
        "worker",
        RUNBOOK,
        SOURCE,
        "http://alertmanager:9093",
        "1",
        "10.0.0.7:9100",
        "worker cannot be scraped",
        "",
    ]


def test_templates_cannot_reach_python_objects() -> None:
    """A label value or a template cannot climb to Python internals: the sandbox refuses and
    the default request is used instead, so the alert is still investigated."""
    request = route(request="{{ labels.__class__.__mro__ }}").render_request(group())
    assert "class" not in request.split("\n\n")[0]
    assert request.startswith("Investigate the firing alert SwitchboardTargetDown")


def test_huge_alerts_are_cut_to_the_request_limit() -> None:
    alerts = tuple(
        AlertView(
            "firing", {"alertname": "A", "pod": f"p{i}"}, {"summary": "x" * 500}, fingerprint=str(i)
        )
        for i in range(200)
    )
    big = group(
        common_labels={"alertname": "A"},
        common_annotations={"description": "d" * 5000},
        alerts=alerts,
    )
    request = route(request="{{ annotations.description }}" * 3).render_request(big)
    assert len(request) <= REQUEST_LIMIT
    assert "… and 190 more" in request


def _teams_with(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    data = yaml.safe_load(DEFAULT_TEAMS.read_text())
    data["alerts"] = alerts
    path = tmp_path / "teams.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_teams_file_with_alerts_loads(tmp_path: Path) -> None:
    config = load_teams(
        _teams_with(
            tmp_path,
            {
                "per_channel": {"runs": 3, "per_seconds": 300},
                "routes": [
                    {
                        "matchers": ['stack="switchboard"', 'severity="critical"'],
                        "team": "engineering",
                        "channel": {"platform": "slack", "id": "C0ONCALL"},
                        "request": "Investigate {{ labels.alertname }}; runbook {{ runbook_url }}",
                    }
                ],
            },
        )
    )
    assert config.alerts.routes[0].team == "engineering"
    assert config.alerts.per_channel.runs == 3


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        (
            {"routes": [{"team": "nope", "channel": {"platform": "slack", "id": "C1"}}]},
            "alerts.routes.0.team: unknown team 'nope'",
        ),
        (
            {"routes": [{"matchers": ["severity"], "channel": {"platform": "slack", "id": "C1"}}]},
            "alerts.routes.0.matchers: bad matcher 'severity'",
        ),
        (
            {"routes": [{"channel": {"platform": "irc", "id": "C1"}}]},
            "alerts.routes.0.channel.platform: Input should be 'slack' or 'discord'",
        ),
        (
            {"routes": [{"request": "{{ labels.x ", "channel": {"platform": "slack", "id": "C1"}}]},
            "alerts.routes.0.request: template error on line 1",
        ),
        ({"per_channel": {"runs": 0}}, "alerts.per_channel.runs: Input should be greater"),
        ({"routs": []}, "alerts.routs: Extra inputs are not permitted"),
    ],
)
def test_bad_alerts_section_is_one_line(
    tmp_path: Path, alerts: dict[str, Any], message: str
) -> None:
    path = _teams_with(tmp_path, alerts)
    with pytest.raises(TeamsFileError) as info:
        load_teams(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_validate_command_reports_alert_errors(tmp_path: Path) -> None:
    path = _teams_with(
        tmp_path, {"routes": [{"team": "nope", "channel": {"platform": "slack", "id": "C1"}}]}
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "teams", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"switchboard: {path}: alerts.routes.0.team: unknown team 'nope'"
    )
