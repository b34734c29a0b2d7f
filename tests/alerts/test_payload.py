"""Alertmanager's v4 webhook body is parsed faithfully; anything else is refused in one line."""

from __future__ import annotations

import json

import pytest

from bot.alerts.payload import PayloadError, parse
from tests.alerts.notifications import RUNBOOK, alert, body, notification


def test_parses_a_notification() -> None:
    parsed = parse(body(notification(alert("aa"), alert("bb", status="resolved", instance="x"))))
    group = parsed.group
    assert parsed.group_key.endswith(
        '{alertname="SwitchboardTargetDown", job="switchboard-worker"}'
    )
    assert parsed.firing and group.status == "firing"
    assert group.receiver == "switchboard-oncall"
    assert group.common_labels["stack"] == "switchboard"
    assert group.runbook_url == RUNBOOK
    assert group.generator_url.startswith("http://prometheus:9090/graph")
    assert [a.fingerprint for a in group.firing] == ["aa"]
    assert parsed.instances(firing_only=True) == {"aa": "2026-11-28T05:00:00.000Z"}
    assert set(parsed.instances(firing_only=False)) == {"aa", "bb"}
    assert len(parsed.key_hash) == 64


def test_resolved_notification() -> None:
    parsed = parse(body(notification(alert("aa", status="resolved"))))
    assert not parsed.firing and parsed.group.status == "resolved"


def test_missing_fingerprint_gets_a_stable_one_from_labels() -> None:
    first, second = (alert("", instance="a"), alert("", instance="a"))
    del first["fingerprint"]
    a = parse(body(notification(first))).group.alerts[0].fingerprint
    b = parse(body(notification(second))).group.alerts[0].fingerprint
    assert a and a == b


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(version="3"), "version: expected '4'"),
        (lambda p: p.pop("groupKey"), "groupKey: missing"),
        (lambda p: p.update(status="pending"), "status: expected 'firing' or 'resolved'"),
        (lambda p: p.update(alerts=[]), "alerts: empty"),
        (lambda p: p.update(alerts="x"), "alerts: expected a list"),
        (lambda p: p["alerts"][0].update(labels={"a": 1}), "alerts.0.labels.a: expected a string"),
        (lambda p: p["alerts"][0].update(status="x"), "alerts.0.status: expected"),
        (lambda p: p.update(commonLabels=[]), "commonLabels: expected an object"),
        (lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts: expected a non-negative"),
    ],
)
def test_malformed_notifications_are_refused_in_one_line(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    payload = notification()
    mutate(payload)
    with pytest.raises(PayloadError) as info:
        parse(body(payload))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", json.dumps("x").encode()])
def test_non_objects_are_refused(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        parse(raw)
