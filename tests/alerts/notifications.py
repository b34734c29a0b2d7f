"""Alertmanager webhook bodies (payload version 4) as Alertmanager documents and sends them."""

from __future__ import annotations

import json
from typing import Any

RUNBOOK = "https://runbooks.example.com/switchboard/target-down"


def alert(
    fingerprint: str,
    *,
    status: str = "firing",
    instance: str = "10.0.0.7:9100",
    starts_at: str = "2026-11-28T05:00:00.000Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    alertname: str = "SwitchboardTargetDown",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": alertname,
            "instance": instance,
            "job": "switchboard-worker",
            "severity": "critical",
            "stack": "switchboard",
        },
        "annotations": {
            "summary": f"{instance} cannot be scraped",
            "runbook_url": RUNBOOK,
        },
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up%3D%3D0&g0.tab=1",
        "fingerprint": fingerprint,
    }


def notification(
    *alerts: dict[str, Any],
    status: str | None = None,
    alertname: str = "SwitchboardTargetDown",
    severity: str = "critical",
    receiver: str = "switchboard-oncall",
) -> dict[str, Any]:
    """A notification for one group (grouped by alertname and job), as Alertmanager sends it."""
    alerts = alerts or (alert("f0a1b2c3d4e5f607", alertname=alertname),)
    if status is None:
        status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    group_labels = {"alertname": alertname, "job": "switchboard-worker"}
    common = {**group_labels, "severity": severity, "stack": "switchboard"}
    return {
        "version": "4",
        "groupKey": (
            '{}/{severity="critical",stack="switchboard"}:'
            f'{{alertname="{alertname}", job="switchboard-worker"}}'
        ),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common,
        "commonAnnotations": {"runbook_url": RUNBOOK},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
