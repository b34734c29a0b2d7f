"""Alert groups in the database: admission, dedup, storm bookkeeping and resolution.

Every decision about a notification is one transaction that first locks its channel's row
(`alert_channels`), so deliveries of one notification (Alertmanager's retries, its repeat
interval, several Alertmanager replicas) and groups racing for a channel's last slot are
decided one after the other, on Postgres and SQLite alike. The news an incident's thread
gets (more alerts joined, resolved) is written in that same transaction, as an outbox row
for the thread and an audit `human_input` row for the run (the shape the engine reads, as
`service.add_human_input` writes it), so a notification is either fully applied or not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.notices import Notice
from orchestrator.store.models import (
    AlertChannelState,
    AlertGroup,
    AlertGroupStatus,
    AuditEntry,
    OutboxItem,
    Run,
    RunStatus,
)
from orchestrator.store.repository import Store

HELD_NAMES = 20  # names listed in a storm's "N more alerts held" message
START_LEASE_S = 30.0  # how long copies of a notification leave a starting run to its starter
ALERTMANAGER = "alertmanager"  # the actor and platform of alert news in audit rows


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Firing:
    """A firing notification as the store needs it: plain values, routed already."""

    key_hash: str  # a hash of Alertmanager's groupKey
    group_key: str
    receiver: str
    name: str
    route: str
    team: str | None
    platform: str
    channel: str
    alerts: dict[str, str]  # firing alerts: fingerprint -> startsAt


@dataclass(frozen=True)
class ThreadNote:
    """News for an incident's thread, and the same news as human input for its run."""

    tag: str  # makes the outbox key: one post per incident and tag
    notice: Notice
    human_input: str


class Decision(StrEnum):
    START = "start"  # admitted now: start its investigation
    RESUME = "resume"  # admitted earlier, but its run was not started or enqueued yet
    JOINED = "joined"  # new alerts joined an open incident; its thread was told
    DUPLICATE = "duplicate"  # nothing new
    HELD = "held"  # over the channel's rate: newly held
    STILL_HELD = "still_held"


@dataclass(frozen=True)
class Admission:
    decision: Decision
    group_id: int
    run_id: int | None = None
    new_alerts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolution:
    outcome: str  # resolved | dropped (it was held, no thread) | not_open (nothing open matches)
    group_id: int | None = None
    run_id: int | None = None
    platform: str | None = None


@dataclass(frozen=True)
class HeldNotice:
    """A channel's storm message to post (ref None) or update in place."""

    platform: str
    channel: str
    storm: int
    held: int
    names: tuple[str, ...]
    ref: str | None


class AlertStore:
    """The alert intake's durable state, over the Store's sessions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- firing -------------------------------------------------------------------------------

    def admit(
        self,
        firing: Firing,
        *,
        runs: int,
        per_seconds: float,
        note_for: Callable[[tuple[str, ...]], ThreadNote],
        at: datetime | None = None,
    ) -> Admission:
        """Decide what a firing notification means; at most `runs` starts per window."""
        moment = at or _now()
        for attempt in (0, 1):
            try:
                with self.store.session() as session:
                    return self._admit(session, firing, runs, per_seconds, note_for, moment)
            except IntegrityError:
                # The open key was taken by a transaction that locked another channel (the
                # route's channel changed mid-incident): decide again, now finding its row.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _admit(
        self,
        session: Session,
        firing: Firing,
        runs: int,
        per_seconds: float,
        note_for: Callable[[tuple[str, ...]], ThreadNote],
        moment: datetime,
    ) -> Admission:
        channel = self._lock_channel(session, firing.platform, firing.channel, moment)
        group = session.scalar(
            select(AlertGroup).where(AlertGroup.open_key == firing.key_hash).with_for_update()
        )
        window_start = moment - timedelta(seconds=per_seconds)
        if group is None:
            stale = self._resolved_copy(session, firing)
            if stale is not None:
                return Admission(Decision.DUPLICATE, stale)
            admitted = self._started_since(session, firing, window_start) < runs
            group = AlertGroup(
                open_key=firing.key_hash,
                key_hash=firing.key_hash,
                group_key=firing.group_key,
                receiver=firing.receiver[:200],
                name=firing.name[:200],
                route=firing.route[:64],
                team=firing.team,
                platform=firing.platform,
                channel=firing.channel,
                status=AlertGroupStatus.FIRING if admitted else AlertGroupStatus.HELD,
                alerts=dict(firing.alerts),
                deliveries=1,
                started_at=moment if admitted else None,
                starting_until=_lease(moment) if admitted else None,
            )
            session.add(group)
            session.flush()
            if admitted:
                return Admission(Decision.START, group.id)
            self._hold(channel, firing.name, moment, per_seconds)
            return Admission(Decision.HELD, group.id)
        group.deliveries += 1
        known = dict(group.alerts or {})
        new = tuple(sorted(fp for fp in firing.alerts if fp not in known))
        group.alerts = {**known, **firing.alerts}
        if group.status == AlertGroupStatus.HELD:
            if self._started_since(session, firing, window_start) >= runs:
                return Admission(Decision.STILL_HELD, group.id)
            group.status, group.started_at = AlertGroupStatus.FIRING, moment
            group.starting_until = _lease(moment)
            return Admission(Decision.START, group.id)
        if group.enqueued_at is None:
            if group.starting_until is not None and group.starting_until > moment:
                return Admission(Decision.DUPLICATE, group.id, group.run_id)  # being started
            # Its starter failed (and got a 503) or died: this copy finishes the start.
            group.starting_until = _lease(moment)
            return Admission(Decision.RESUME, group.id, group.run_id)
        if new:
            self._note(session, group, note_for(new))
            return Admission(Decision.JOINED, group.id, group.run_id, new)
        return Admission(Decision.DUPLICATE, group.id, group.run_id)

    def attach_run(self, group_id: int, run_id: int) -> None:
        with self.store.session() as session:
            session.execute(
                update(AlertGroup).where(AlertGroup.id == group_id).values(run_id=run_id)
            )

    def mark_enqueued(self, group_id: int) -> None:
        """The run's first step and delivery are queued: later copies start nothing."""
        with self.store.session() as session:
            session.execute(
                update(AlertGroup)
                .where(AlertGroup.id == group_id)
                .values(enqueued_at=_now(), starting_until=None)
            )

    def start_failed(self, group_id: int) -> None:
        """The start did not finish: the next copy of the notification may finish it."""
        with self.store.session() as session:
            session.execute(
                update(AlertGroup).where(AlertGroup.id == group_id).values(starting_until=None)
            )

    def group(self, group_id: int) -> AlertGroup | None:
        with self.store.sessions() as session:
            return session.get(AlertGroup, group_id)

    # --- resolved -----------------------------------------------------------------------------

    def resolve(
        self,
        key_hash: str,
        alerts: dict[str, str],
        note: ThreadNote,
        *,
        platform: str,
        channel: str,
        at: datetime | None = None,
    ) -> Resolution:
        """Close the open incident these resolved alerts belong to; its thread is told once."""
        moment = at or _now()
        with self.store.session() as session:
            self._lock_channel(session, platform, channel, moment)
            group = session.scalar(
                select(AlertGroup).where(AlertGroup.open_key == key_hash).with_for_update()
            )
            if group is None or not _same_incident(group.alerts or {}, alerts):
                return Resolution("not_open")  # already closed, or a copy of an older incident
            group.deliveries += 1
            group.open_key, group.resolved_at = None, moment
            held = group.status == AlertGroupStatus.HELD
            group.status = AlertGroupStatus.RESOLVED
            if held or group.run_id is None:
                return Resolution("dropped", group.id)
            run = self._note(session, group, note)
            return Resolution(
                "resolved", group.id, group.run_id, run.platform if run else group.platform
            )

    def prune_resolved(self, before: datetime) -> int:
        """Forget incidents resolved before `before`. A resolved row only serves to recognise
        late copies of its notifications (Alertmanager retries and slow replicas, minutes
        late), so rows far older than that are dead weight; open and held ones are kept."""
        with self.store.session() as session:
            result = session.execute(
                delete(AlertGroup).where(
                    AlertGroup.status == AlertGroupStatus.RESOLVED,
                    AlertGroup.resolved_at < before,
                )
            )
            return int(result.rowcount or 0)

    # --- the storm message ------------------------------------------------------------------

    def pending_notices(self) -> list[tuple[str, str]]:
        """Channels whose "N more alerts held" message is missing or shows an old N."""
        with self.store.sessions() as session:
            rows = session.execute(
                select(AlertChannelState.platform, AlertChannelState.channel).where(
                    AlertChannelState.held != AlertChannelState.notice_count
                )
            )
            return [(r.platform, r.channel) for r in rows]

    def claim_notice(self, platform: str, channel: str, lease_s: float) -> HeldNotice | None:
        """Take the right to post or update the channel's message for `lease_s` seconds."""
        moment = _now()
        with self.store.session() as session:
            row = session.scalar(
                select(AlertChannelState)
                .where(
                    AlertChannelState.platform == platform,
                    AlertChannelState.channel == channel,
                )
                .with_for_update()
            )
            if row is None or row.held == row.notice_count:
                return None
            if row.notice_lease_until is not None and row.notice_lease_until > moment:
                return None
            row.notice_lease_until = moment + timedelta(seconds=lease_s)
            return HeldNotice(
                platform, channel, row.storm, row.held, tuple(row.held_names or ()), row.notice_ref
            )

    def notice_sent(self, claim: HeldNotice, ref: str) -> None:
        """Remember the message and the N it shows, unless a new storm began meanwhile."""
        with self.store.session() as session:
            session.execute(
                update(AlertChannelState)
                .where(
                    AlertChannelState.platform == claim.platform,
                    AlertChannelState.channel == claim.channel,
                    AlertChannelState.storm == claim.storm,
                )
                .values(
                    notice_ref=ref,
                    notice_count=claim.held,
                    notice_lease_until=None,
                    notice_error=None,
                )
            )

    def notice_failed(self, claim: HeldNotice, error: str, retry_in_s: float) -> None:
        with self.store.session() as session:
            session.execute(
                update(AlertChannelState)
                .where(
                    AlertChannelState.platform == claim.platform,
                    AlertChannelState.channel == claim.channel,
                )
                .values(
                    notice_error=error[:500],
                    notice_lease_until=_now() + timedelta(seconds=retry_in_s),
                )
            )

    def channel_state(self, platform: str, channel: str) -> AlertChannelState | None:
        with self.store.sessions() as session:
            return session.get(AlertChannelState, (platform, channel))

    # --- helpers ------------------------------------------------------------------------------

    def _lock_channel(
        self, session: Session, platform: str, channel: str, moment: datetime
    ) -> AlertChannelState:
        """Create the channel's row if needed and lock it for this transaction."""
        table = AlertChannelState.__table__
        values = {
            "platform": platform,
            "channel": channel,
            "storm": 0,
            "held": 0,
            "held_names": [],
            "notice_count": 0,
            "updated_at": moment,
        }
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(postgresql.insert(table).values(values).on_conflict_do_nothing())
        elif dialect == "sqlite":
            session.execute(sqlite.insert(table).values(values).on_conflict_do_nothing())
        elif session.get(AlertChannelState, (platform, channel)) is None:
            session.add(AlertChannelState(**values))
            session.flush()
        row = session.scalar(
            select(AlertChannelState)
            .where(AlertChannelState.platform == platform, AlertChannelState.channel == channel)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert row is not None
        return row

    def _started_since(self, session: Session, firing: Firing, since: datetime) -> int:
        return int(
            session.scalar(
                select(func.count(AlertGroup.id)).where(
                    AlertGroup.platform == firing.platform,
                    AlertGroup.channel == firing.channel,
                    AlertGroup.started_at >= since,
                )
            )
            or 0
        )

    def _resolved_copy(self, session: Session, firing: Firing) -> int | None:
        """The resolved incident this firing notification is a late copy of, if any.

        A replica that was slower than the one whose "resolved" already arrived, or a retry
        of an older notification, carries the same alert instances (fingerprint and
        startsAt) as the closed incident; an alert firing anew has a new startsAt.
        """
        last = session.scalar(
            select(AlertGroup)
            .where(AlertGroup.key_hash == firing.key_hash, AlertGroup.open_key.is_(None))
            .order_by(AlertGroup.id.desc())
            .limit(1)
        )
        if last is None or not firing.alerts:
            return None
        seen = last.alerts or {}
        if all(seen.get(fp) == starts for fp, starts in firing.alerts.items()):
            return last.id
        return None

    def _hold(
        self, channel: AlertChannelState, name: str, moment: datetime, per_seconds: float
    ) -> None:
        """Count a newly held group in the channel's storm; a quiet window starts a new one."""
        last = channel.last_held_at
        if last is None or (moment - last).total_seconds() > per_seconds:
            channel.storm += 1
            channel.held, channel.held_names = 0, []
            channel.notice_ref, channel.notice_count, channel.notice_error = None, 0, None
            channel.notice_lease_until = None
        channel.held += 1
        names = list(channel.held_names or [])
        if name not in names and len(names) < HELD_NAMES:
            names.append(name[:200])
        channel.held_names = names
        channel.last_held_at = moment

    def _note(self, session: Session, group: AlertGroup, note: ThreadNote) -> Run | None:
        """Post `note` once in the incident's thread and hand it to the run as human input."""
        run = session.get(Run, group.run_id) if group.run_id is not None else None
        if run is None:
            return None
        key = f"{run.id}:alert{group.id}:{note.tag}"[:200]
        if session.scalar(select(OutboxItem.id).where(OutboxItem.key == key)) is None:
            notice = Notice(**{**note.notice.__dict__, "run_id": run.id})
            session.add(
                OutboxItem(
                    key=key,
                    run_id=run.id,
                    platform=run.platform,
                    channel=run.channel,
                    kind=str(notice.kind),
                    payload=notice.to_json(),
                )
            )
            if run.status not in RunStatus.TERMINAL:
                session.add(
                    AuditEntry(
                        run_id=run.id,
                        actor=ALERTMANAGER,
                        platform=ALERTMANAGER,
                        channel=run.channel,
                        action="human_input",
                        outcome="received",
                        detail=note.human_input.strip()[:4000],
                    )
                )
        return run


def _lease(moment: datetime) -> datetime:
    return moment + timedelta(seconds=START_LEASE_S)


def _same_incident(known: dict[str, str], resolved: dict[str, str]) -> bool:
    """A resolved notification closes the incident that saw one of its alert instances."""
    return any(known.get(fp) == starts for fp, starts in resolved.items())
