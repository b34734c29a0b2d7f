"""Alerts as work: the teams file's `alerts` section, which maps a firing alert group to a team,
a chat channel and the request its investigation starts with.

Routes use Alertmanager's own matcher syntax (`severity="critical"`, `alertname=~"Switch.*"`)
so an operator reads them like the routing tree they already know; the first route whose
matchers all hold for the group's common labels wins. The request is a Jinja template
rendered in a sandbox: alert labels come from monitored systems, and a template must not be
able to reach Python objects through them. Whatever the template says, the alert's labels,
annotations (the runbook among them) and source link follow it, so the supervisor's first
request always carries them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

DEFAULT_REQUEST = (
    "Investigate the {{ status }} alert {{ labels.alertname or 'alert' }}"
    "{% if labels.severity %} ({{ labels.severity }}){% endif %}"
    "{% if annotations.summary %}: {{ annotations.summary }}{% endif %}. "
    "Work out the likely cause from the labels, annotations and runbook below, and say what "
    "the on-call engineer should check or do next."
)
REQUEST_LIMIT = 8000  # characters of request a run starts with; alert lists are cut to fit
CONTEXT_LIMIT = 6000  # of which the alert's facts (labels, runbook, alerts) take at most this
ALERTS_LISTED = 10  # alerts of a group listed one per line in the request
_MORE_RESERVE = 40  # room kept for the "… and N more" line
_ALERT_LINE_LIMIT = 300

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_sandbox = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style label matcher; a missing label matches as the empty string."""

    name: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None  # anchored, as in Alertmanager
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{quoted}"'


def parse_matcher(text: str) -> Matcher:
    """`name="value"`, `name!=value`, `name=~"re"`, `name!~"re"`; ValueError says what is wrong."""
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(f'bad matcher {text!r}: expected name="value" (operators = != =~ !~)')
    name, op, raw = found.groups()
    value = _unquote(raw, text)
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad matcher {text!r}: invalid regular expression ({exc})") from None
    return Matcher(name, op, value)


def _unquote(raw: str, text: str) -> str:
    if not raw.startswith('"'):
        if '"' in raw:
            raise ValueError(f"bad matcher {text!r}: unbalanced quotes")
        return raw
    if len(raw) < 2 or not raw.endswith('"'):
        raise ValueError(f"bad matcher {text!r}: unbalanced quotes")
    body, out, index = raw[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body) or body[index + 1] not in _ESCAPES:
                raise ValueError(f"bad matcher {text!r}: bad escape in quoted value")
            out.append(_ESCAPES[body[index + 1]])
            index += 2
            continue
        if char == '"':
            raise ValueError(f"bad matcher {text!r}: unescaped quote inside the value")
        out.append(char)
        index += 1
    return "".join(out)


class AlertChannel(_Strict):
    """Where an alert's thread opens: a Slack channel id (C0123…) or a Discord channel id."""

    platform: Literal["slack", "discord"]
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class AlertView:
    """One alert of a notification, as templates and the request see it."""

    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""
    fingerprint: str = ""


@dataclass(frozen=True)
class GroupView:
    """A notification's alert group: the values a request template may use."""

    status: str
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[AlertView, ...] = field(default_factory=tuple)

    @property
    def firing(self) -> tuple[AlertView, ...]:
        return tuple(a for a in self.alerts if a.status == "firing")

    @property
    def generator_url(self) -> str:
        """The source link of the first firing alert (else of the first alert)."""
        for alert in (*self.firing, *self.alerts):
            if alert.generator_url:
                return alert.generator_url
        return ""

    @property
    def runbook_url(self) -> str:
        if self.common_annotations.get("runbook_url"):
            return self.common_annotations["runbook_url"]
        return next(
            (a.annotations["runbook_url"] for a in self.alerts if a.annotations.get("runbook_url")),
            "",
        )

    @property
    def name(self) -> str:
        """A short name for chat: the alert name, else the group labels."""
        if self.common_labels.get("alertname"):
            return self.common_labels["alertname"]
        labels = self.group_labels or self.common_labels
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "alert group"


class AlertRoute(_Strict):
    """Label matchers → team, channel and the request an investigation starts with."""

    name: str | None = Field(default=None, max_length=64)
    matchers: list[str] = Field(default_factory=list)
    team: str | None = None  # None: the router picks the team, as for `/agent <request>`
    channel: AlertChannel
    request: str = Field(default=DEFAULT_REQUEST, min_length=1, max_length=4000)

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, matchers: list[str]) -> list[str]:
        for text in matchers:
            parse_matcher(text)
        return matchers

    @field_validator("request")
    @classmethod
    def _valid_template(cls, template: str) -> str:
        try:
            _sandbox.parse(template)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template error on line {exc.lineno}: {exc.message}") from None
        return template

    def parsed_matchers(self) -> tuple[Matcher, ...]:
        return tuple(parse_matcher(text) for text in self.matchers)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.parsed_matchers())

    def render_request(self, group: GroupView) -> str:
        """The run's request: the rendered template, then the alert's own facts."""
        try:
            asked = _sandbox.from_string(self.request).render(**_template_values(group))
        except Exception as exc:  # a template that fails at run time must not lose the alert
            log.warning(
                "alert route %s: request template failed (%s: %s); using the default",
                self.name or "(unnamed)",
                type(exc).__name__,
                exc,
            )
            asked = _sandbox.from_string(DEFAULT_REQUEST).render(**_template_values(group))
        asked = asked.strip()
        context = alert_context(group)
        room = REQUEST_LIMIT - len(context) - 2
        if len(asked) > room:
            asked = asked[: max(0, room - 1)] + "…"
        return f"{asked}\n\n{context}"


class AlertRate(_Strict):
    """At most `runs` investigations per `per_seconds` in one chat channel; the rest are held."""

    runs: int = Field(default=5, ge=1, le=1000)
    per_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)


class AlertsConfig(_Strict):
    """The teams file's `alerts` section."""

    routes: list[AlertRoute] = Field(default_factory=list)
    per_channel: AlertRate = Field(default_factory=AlertRate)

    def route_for(self, labels: Mapping[str, str]) -> AlertRoute | None:
        """The first route whose matchers all hold, as Alertmanager picks without `continue`."""
        return next((route for route in self.routes if route.matches(labels)), None)


def _template_values(group: GroupView) -> dict[str, object]:
    return {
        "status": group.status,
        "receiver": group.receiver,
        "labels": dict(group.common_labels),
        "annotations": dict(group.common_annotations),
        "group_labels": dict(group.group_labels),
        "generator_url": group.generator_url,
        "runbook_url": group.runbook_url,
        "external_url": group.external_url,
        "alerts": [
            {
                "status": a.status,
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "starts_at": a.starts_at,
                "generator_url": a.generator_url,
                "fingerprint": a.fingerprint,
            }
            for a in group.alerts
        ],
    }


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def alert_context(group: GroupView, limit: int = CONTEXT_LIMIT) -> str:
    """The facts every alert request carries: labels, annotations, runbook, source links.

    The group's facts come first and are never dropped; alerts are listed one per line for
    as long as they fit in `limit`, then counted.
    """
    firing = group.firing
    lines = [
        f"Alert: {group.name} — {group.status}, {len(firing)} of {len(group.alerts)} alerts firing",
        _one_line(f"Labels: {_labels_text(group.common_labels)}", 2000),
    ]
    if group.runbook_url:
        lines.append(_one_line(f"Runbook: {group.runbook_url}", 1000))
    for key, value in sorted(group.common_annotations.items()):
        if key != "runbook_url":
            lines.append(_one_line(f"{key.capitalize()}: {value}", 1000))
    if group.generator_url:
        lines.append(_one_line(f"Source: {group.generator_url}", 1000))
    if group.external_url:
        lines.append(_one_line(f"Alertmanager: {group.external_url}", 500))
    text = "\n".join(lines)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    shown = firing or group.alerts
    common = set(group.common_labels.items())
    listed = 0
    for alert in shown[:ALERTS_LISTED]:
        own = {k: v for k, v in alert.labels.items() if (k, v) not in common}
        since = f" since {alert.starts_at}" if alert.starts_at else ""
        summary = alert.annotations.get("summary") or alert.annotations.get("description", "")
        line = f"- {alert.status}{since} {{{_labels_text(own)}}}"
        if summary:
            line += f": {summary}"
        if alert.generator_url and alert.generator_url != group.generator_url:
            line += f" ({alert.generator_url})"
        line = _one_line(line, _ALERT_LINE_LIMIT)
        header = "" if listed else "\nAlerts:"
        if len(text) + len(header) + len(line) + 1 + _MORE_RESERVE > limit:
            break
        text += f"{header}\n{line}"
        listed += 1
    hidden = len(shown) - listed
    if hidden > 0:
        text += f"{'' if listed else chr(10) + 'Alerts:'}\n- … and {hidden} more"
    return text
