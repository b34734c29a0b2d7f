"""The alert intake: a notification becomes one thread and one investigation run, once.

A firing group that no open incident knows is admitted (or held, past its channel's rate)
in one locked transaction; then its run is created, idempotently on the origin key
`alert:<group id>`, and its first step and opening message are queued. Only after that is
the group marked enqueued, so a crash or a broker outage in between makes the caller answer
503, Alertmanager retries, and the retry finishes the start instead of making a twin.
Copies of a notification (retries, repeat_interval, several Alertmanager replicas) start
nothing; new alerts joining an open group and the group's resolution are told in its
thread and to its run, which is never aborted by them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from bot.alerts.payload import Notification
from orchestrator import service
from orchestrator.alerts import AlertRoute, AlertView
from orchestrator.notices import Kind, Notice
from orchestrator.store.alerts import AlertStore, Decision, Firing, ThreadNote
from orchestrator.store.models import RunStatus
from orchestrator.store.repository import Store
from orchestrator.teams import TeamsConfig
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)

REQUESTER = "alertmanager"  # the requester of alert runs, as shown in their opening message
_LISTED = 10


class Queue(Protocol):
    def advance(self, run_id: int, version: int, traceparent: str | None = None) -> None: ...
    def notify(self, platform: str, run_ids: list[int]) -> None: ...


class CeleryQueue:
    """Step and delivery tasks sent by name (no task code here), failing fast when down."""

    def __init__(self, app: Any = None) -> None:
        if app is None:
            from tasks.app import app as default_app

            app = default_app
        self.app = app

    def _send(self, name: str, **options: Any) -> None:
        self.app.send_task(name, retry=False, queue=self.app.conf.task_default_queue, **options)

    def advance(self, run_id: int, version: int, traceparent: str | None = None) -> None:
        headers = {"traceparent": traceparent} if traceparent else None
        self._send("switchboard.advance", args=[run_id, version], headers=headers)

    def notify(self, platform: str, run_ids: list[int]) -> None:
        self._send("switchboard.notify", args=[platform, run_ids])


@dataclass(frozen=True)
class Receipt:
    """What one delivery did; the endpoint answers it to Alertmanager as JSON."""

    outcome: str
    group_id: int | None = None
    run_id: int | None = None
    platform: str | None = None
    channel: str | None = None

    @property
    def held(self) -> bool:
        return self.outcome == Decision.HELD

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Intake:
    """Routes a notification through the teams file's `alerts` section and acts on it."""

    def __init__(self, store: Store, config: TeamsConfig, queue: Queue) -> None:
        self.store = store
        self.config = config
        self.queue = queue
        self.alerts = AlertStore(store)

    def receive(self, notification: Notification) -> Receipt:
        """Apply one delivery; raises when the run could not be queued (the caller says 503)."""
        receipt = self._receive(notification)
        metrics.ALERT_NOTIFICATIONS.labels(outcome=receipt.outcome[:32]).inc()
        return receipt

    def _receive(self, notification: Notification) -> Receipt:
        group = notification.group
        found = self._route(notification)
        if found is None:
            log.info("alert group %s matches no alert route; ignored", group.name)
            return Receipt("ignored")
        index, route = found
        platform, channel = route.channel.platform, route.channel.id
        if notification.firing:
            firing = Firing(
                key_hash=notification.key_hash,
                group_key=notification.group_key,
                receiver=group.receiver,
                name=group.name,
                route=route.name or f"routes.{index}",
                team=route.team,
                platform=platform,
                channel=channel,
                alerts=notification.instances(firing_only=True),
            )
            rate = self.config.alerts.per_channel
            admission = self.alerts.admit(
                firing,
                runs=rate.runs,
                per_seconds=rate.per_seconds,
                note_for=lambda new: joined_note(notification, new),
            )
            run_id = admission.run_id
            if admission.decision in (Decision.START, Decision.RESUME):
                try:
                    run_id = self._start(admission.group_id, admission.run_id, route, notification)
                except Exception:
                    self.alerts.start_failed(admission.group_id)
                    raise
            elif admission.decision == Decision.JOINED and run_id is not None:
                self._deliver(platform, run_id)
            log.info(
                "alert group %s: %s (incident %s, run %s)",
                group.name,
                admission.decision,
                admission.group_id,
                run_id,
            )
            return Receipt(str(admission.decision), admission.group_id, run_id, platform, channel)
        resolution = self.alerts.resolve(
            notification.key_hash,
            notification.instances(firing_only=False),
            resolved_note(notification),
            platform=platform,
            channel=channel,
        )
        if resolution.outcome == "resolved" and resolution.run_id is not None:
            self._deliver(resolution.platform or platform, resolution.run_id)
        log.info(
            "alert group %s resolved: %s (incident %s, run %s)",
            group.name,
            resolution.outcome,
            resolution.group_id,
            resolution.run_id,
        )
        return Receipt(
            resolution.outcome, resolution.group_id, resolution.run_id, platform, channel
        )

    def _route(self, notification: Notification) -> tuple[int, AlertRoute] | None:
        labels = notification.group.common_labels
        for index, route in enumerate(self.config.alerts.routes):
            if route.matches(labels):
                return index, route
        return None

    def _start(
        self, group_id: int, run_id: int | None, route: AlertRoute, notification: Notification
    ) -> int:
        run, _created = service.start_run(
            self.store,
            self.config,
            request=route.render_request(notification.group),
            team=route.team,
            platform=route.channel.platform,
            channel=route.channel.id,
            thread=None,
            requester=REQUESTER,
            origin_key=f"alert:{group_id}",
        )
        if run_id != run.id:
            self.alerts.attach_run(group_id, run.id)
        if run.version == 0 and run.status == RunStatus.QUEUED:
            self.queue.advance(run.id, 0, run.trace_parent)
        self.queue.notify(run.platform, [run.id])
        self.alerts.mark_enqueued(group_id)
        return run.id

    def _deliver(self, platform: str, run_id: int) -> None:
        """Ask a worker to post the thread's news now; beat's outbox sweep does it otherwise."""
        try:
            self.queue.notify(platform, [run_id])
        except Exception as exc:
            log.warning(
                "could not queue delivery for run %s: %s: %s", run_id, type(exc).__name__, exc
            )


def _describe(alert: AlertView, common: dict[str, str]) -> str:
    own = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if common.get(k) != v)
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    text = f"{{{own}}}" + (f": {summary}" if summary else "")
    return " ".join(text.split())[:300]


def joined_note(notification: Notification, new: tuple[str, ...]) -> ThreadNote:
    """More alerts joined an open group: one post per set of newcomers, and run input."""
    group = notification.group
    chosen = set(new)
    alerts = [a for a in group.firing if a.fingerprint in chosen]
    common = dict(group.common_labels)
    lines = [f"- {_describe(a, common)}" for a in alerts[:_LISTED]]
    if len(alerts) > _LISTED:
        lines.append(f"- … and {len(alerts) - _LISTED} more")
    count = len(new)
    title = f"{count} more alert{'s' if count != 1 else ''} firing in {group.name}"
    body = "\n".join(lines)
    tag = "joined-" + hashlib.sha256(",".join(sorted(new)).encode()).hexdigest()[:16]
    human = f"{title} (Alertmanager):\n{body}"
    return ThreadNote(tag, Notice(Kind.NOTE, 0, title, body=body), human)


def resolved_note(notification: Notification) -> ThreadNote:
    """The group resolved: said once in its thread, and given to the run without stopping it."""
    group = notification.group
    ends = max((a.ends_at for a in group.alerts if a.ends_at), default="")
    when = f" at {ends}" if ends else ""
    count = len(group.alerts)
    title = f"Resolved: {group.name}"
    body = (
        f"Alertmanager reports {'the alert' if count == 1 else f'all {count} alerts'} of this "
        f"group resolved{when}. The investigation goes on; its answer follows in this thread."
    )
    human = (
        f"The alert {group.name} resolved{when} (Alertmanager). Do not stop: finish the "
        "investigation and say whether the cause is understood and what to follow up."
    )
    return ThreadNote("resolved", Notice(Kind.NOTE, 0, title, body=body), human)
