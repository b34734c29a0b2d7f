"""Alertmanager's webhook payload (version 4) parsed into the core's neutral GroupView.

The shape is Alertmanager's documented webhook_config body: version, groupKey,
truncatedAlerts, status, receiver, groupLabels, commonLabels, commonAnnotations,
externalURL and alerts (status, labels, annotations, startsAt, endsAt, generatorURL,
fingerprint). Anything else is refused with one line that says which field is wrong, so
an operator reading Alertmanager's log sees why its notification was rejected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.alerts import AlertView, GroupView

VERSION = "4"
MAX_ALERTS = 5000
MAX_LABEL_CHARS = 16_384


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 notification; the message names the field."""


@dataclass(frozen=True)
class Notification:
    """One webhook delivery: the alert group and the key Alertmanager groups it by."""

    group_key: str
    truncated_alerts: int
    group: GroupView

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.group_key.encode()).hexdigest()

    @property
    def firing(self) -> bool:
        return self.group.status == "firing" and bool(self.group.firing)

    def instances(self, *, firing_only: bool) -> dict[str, str]:
        """Alert instances as fingerprint -> startsAt (firing ones, or all of them)."""
        alerts = self.group.firing if firing_only else self.group.alerts
        return {a.fingerprint: a.starts_at for a in alerts}


def parse(body: bytes) -> Notification:
    """Parse and validate one webhook body."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError("the body is not a JSON object")
    version = data.get("version")
    if version != VERSION:
        raise PayloadError(f"version: expected {VERSION!r} (Alertmanager webhook), got {version!r}")
    group_key = _text(data, "groupKey", required=True)
    if not group_key:
        raise PayloadError("groupKey: empty")
    status = _status(data.get("status"), "status")
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("alerts: expected a list")
    if not raw_alerts:
        raise PayloadError("alerts: empty")
    if len(raw_alerts) > MAX_ALERTS:
        raise PayloadError(f"alerts: more than {MAX_ALERTS}; set max_alerts in webhook_configs")
    alerts = tuple(_alert(item, index) for index, item in enumerate(raw_alerts))
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError("truncatedAlerts: expected a non-negative integer")
    group = GroupView(
        status=status,
        receiver=_text(data, "receiver"),
        group_labels=_labels(data.get("groupLabels"), "groupLabels"),
        common_labels=_labels(data.get("commonLabels"), "commonLabels"),
        common_annotations=_labels(data.get("commonAnnotations"), "commonAnnotations"),
        external_url=_text(data, "externalURL"),
        alerts=alerts,
    )
    return Notification(group_key, truncated, group)


def _alert(item: Any, index: int) -> AlertView:
    where = f"alerts.{index}"
    if not isinstance(item, dict):
        raise PayloadError(f"{where}: expected an object")
    labels = _labels(item.get("labels"), f"{where}.labels")
    fingerprint = _text(item, "fingerprint", where=where)
    if not fingerprint:
        # Alertmanager sends it since 0.19; older ones get the same stable identity from labels.
        fingerprint = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
    return AlertView(
        status=_status(item.get("status"), f"{where}.status"),
        labels=labels,
        annotations=_labels(item.get("annotations"), f"{where}.annotations"),
        starts_at=_text(item, "startsAt", where=where),
        ends_at=_text(item, "endsAt", where=where),
        generator_url=_text(item, "generatorURL", where=where),
        fingerprint=fingerprint[:128],
    )


def _status(value: Any, where: str) -> str:
    if value not in ("firing", "resolved"):
        raise PayloadError(f"{where}: expected 'firing' or 'resolved', got {value!r}")
    return str(value)


def _text(data: Mapping[str, Any], key: str, *, where: str = "", required: bool = False) -> str:
    value = data.get(key)
    name = f"{where}.{key}" if where else key
    if value is None:
        if required:
            raise PayloadError(f"{name}: missing")
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{name}: expected a string")
    if len(value) > MAX_LABEL_CHARS:
        raise PayloadError(f"{name}: longer than {MAX_LABEL_CHARS} characters")
    return value


def _labels(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{key}: expected a string")
        if len(key) + len(item) > MAX_LABEL_CHARS:
            raise PayloadError(f"{where}.{key}: longer than {MAX_LABEL_CHARS} characters")
    return dict(value)
