"""A storm's one message per channel: "N more alerts held", posted once and updated in place.

It belongs to no run, so it does not go through the run outbox; its state (the message ref
and the N it shows) lives on the channel's `alert_channels` row instead, and a lease on that
row keeps two intake processes from posting it twice. A failed post is retried by the next
flush (after each held notification, and every `FLUSH_EVERY_S` in `switchboard alerts`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.alerts import AlertRate
from orchestrator.notices import Kind, Notice
from orchestrator.ports import ChatPort, DeliveryError, RateLimited, Target
from orchestrator.store.alerts import AlertStore, HeldNotice

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 15.0
LEASE_S = 30.0
NO_PORT_RETRY_S = 300.0


def _window(seconds: float) -> str:
    if seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} seconds"


def held_notice(claim: HeldNotice, rate: AlertRate) -> Notice:
    """The message text: how many, which ones, and what happens to them."""
    names = ", ".join(claim.names)
    if claim.held > len(claim.names):
        names += ", …"
    title = f"{claim.held} more alert{'s' if claim.held != 1 else ''} held"
    body = (
        f"{names}\nThis channel gets at most {rate.runs} alert investigation"
        f"{'s' if rate.runs != 1 else ''} per {_window(rate.per_seconds)}. Held alerts start "
        "no thread now; Alertmanager's own notifications still reach people, and a held alert "
        "is investigated when Alertmanager sends it again under the limit."
    )
    return Notice(Kind.NOTE, 0, title, body=body)


class HeldNotices:
    """Posts or updates each channel's storm message through the platform's ChatPort."""

    def __init__(
        self,
        alerts: AlertStore,
        rate: AlertRate,
        port_for: Callable[[str], ChatPort | None],
        *,
        lease_s: float = LEASE_S,
    ) -> None:
        self.alerts = alerts
        self.rate = rate
        self.port_for = port_for
        self.lease_s = lease_s

    def flush(self, channels: list[tuple[str, str]] | None = None) -> int:
        """Bring every pending storm message (or those of `channels`) up to date."""
        done = 0
        for platform, channel in channels or self.alerts.pending_notices():
            claim = self.alerts.claim_notice(platform, channel, self.lease_s)
            if claim is not None and self._send(claim):
                done += 1
        return done

    def _send(self, claim: HeldNotice) -> bool:
        port = self.port_for(claim.platform)
        if port is None:
            log.warning(
                "no %s chat port in this process (token unset?): cannot post the held-alerts "
                "message in %s",
                claim.platform,
                claim.channel,
            )
            self.alerts.notice_failed(claim, "no chat port in this process", NO_PORT_RETRY_S)
            return False
        notice = held_notice(claim, self.rate)
        target = Target(claim.platform, claim.channel, None)
        try:
            ref = self._post_or_update(port, target, claim, notice)
        except RateLimited as exc:
            self.alerts.notice_failed(claim, str(exc), exc.retry_after)
            return False
        except Exception as exc:
            log.warning(
                "held-alerts message in %s failed: %s: %s", claim.channel, type(exc).__name__, exc
            )
            self.alerts.notice_failed(claim, f"{type(exc).__name__}: {exc}", LEASE_S)
            return False
        self.alerts.notice_sent(claim, ref)
        return True

    @staticmethod
    def _post_or_update(port: ChatPort, target: Target, claim: HeldNotice, notice: Notice) -> str:
        if claim.ref is None:
            return port.post(target, notice)
        try:
            port.update(target, claim.ref, notice)
            return claim.ref
        except DeliveryError:  # the message was deleted or is too old to edit: post anew
            return port.post(target, notice)
