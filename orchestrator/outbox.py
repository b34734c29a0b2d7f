"""Drains the outbox through a platform's ChatPort.

Chat metrics (deliveries, 429s, API errors) are counted by each port, which alone sees the
platform's own error codes and the rate limits its SDK retries by itself.

Rows go out per run in commit order; the opening message must be out before anything can
go into its thread. Progress rows coalesce: only the newest pending one is rendered, into
one message updated in place, at most once per `progress_interval_s`. A 429 leaves the row
pending with `not_before` set from Retry-After. A row is marked `sending` before the call
and `sent` after, so a crash in between is visible; such rows are retried after
`stuck_after_s` (the one window in which a post can repeat).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from orchestrator.notices import Kind, Notice
from orchestrator.ports import ChatPort, DeliveryError, RateLimited, Target
from orchestrator.store.models import Escalation, OutboxItem, OutboxStatus, Run
from orchestrator.store.repository import Store
from orchestrator.telemetry.tracing import chat_delivery_span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainResult:
    delivered: int
    retry_in: float | None  # seconds until something pending becomes due, if anything


def _now() -> datetime:
    return datetime.now(UTC)


class OutboxSender:
    def __init__(
        self,
        store: Store,
        port: ChatPort,
        platform: str,
        *,
        progress_interval_s: float = 1.0,
        lease_s: float = 60.0,
        stuck_after_s: float = 120.0,
        coalesce_progress: bool = True,
    ) -> None:
        self.store = store
        self.port = port
        self.platform = platform
        self.progress_interval_s = progress_interval_s
        self.lease_s = lease_s
        self.stuck_after_s = stuck_after_s
        self.coalesce_progress = coalesce_progress

    def drain(self, *, channel: str | None = None, run_ids: list[int] | None = None) -> DrainResult:
        delivered = 0
        retry: list[float] = []
        for run_id in self._runs_with_work(channel, run_ids):
            if not self._lease(run_id):
                retry.append(1.0)
                continue
            try:
                count, wait = self._drain_run(run_id)
            finally:
                self._release(run_id)
            delivered += count
            if wait is not None:
                retry.append(wait)
        return DrainResult(delivered, min(retry) if retry else None)

    # --- selection and leases ---------------------------------------------------------------

    def _runs_with_work(self, channel: str | None, run_ids: list[int] | None) -> list[int]:
        stuck = _now() - timedelta(seconds=self.stuck_after_s)
        with self.store.sessions() as session:
            query = select(OutboxItem.run_id).where(
                OutboxItem.platform == self.platform,
                or_(
                    OutboxItem.status == OutboxStatus.PENDING,
                    (OutboxItem.status == OutboxStatus.SENDING) & (OutboxItem.created_at < stuck),
                ),
            )
            if channel is not None:
                query = query.where(OutboxItem.channel == channel)
            if run_ids is not None:
                query = query.where(OutboxItem.run_id.in_(run_ids))
            return sorted(set(session.scalars(query.distinct())))

    def _lease(self, run_id: int) -> bool:
        moment = _now()
        with self.store.session() as session:
            return (
                session.execute(
                    update(Run)
                    .where(
                        Run.id == run_id,
                        or_(Run.delivery_lease_until.is_(None), Run.delivery_lease_until < moment),
                    )
                    .values(delivery_lease_until=moment + timedelta(seconds=self.lease_s))
                ).rowcount
                == 1
            )

    def _release(self, run_id: int) -> None:
        with self.store.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(delivery_lease_until=None))

    # --- one run --------------------------------------------------------------------------

    def _drain_run(self, run_id: int) -> tuple[int, float | None]:
        moment = _now()
        stuck = moment - timedelta(seconds=self.stuck_after_s)
        with self.store.sessions() as session:
            rows = list(
                session.scalars(
                    select(OutboxItem)
                    .where(
                        OutboxItem.run_id == run_id,
                        or_(
                            OutboxItem.status == OutboxStatus.PENDING,
                            (OutboxItem.status == OutboxStatus.SENDING)
                            & (OutboxItem.created_at < stuck),
                        ),
                    )
                    .order_by(OutboxItem.id)
                )
            )
            last_progress = session.scalar(
                select(OutboxItem.sent_at)
                .where(
                    OutboxItem.run_id == run_id,
                    OutboxItem.kind == Kind.PROGRESS,
                    OutboxItem.status == OutboxStatus.SENT,
                )
                .order_by(OutboxItem.sent_at.desc())
                .limit(1)
            )
        progress = [r for r in rows if r.kind == Kind.PROGRESS]
        stale = [r.id for r in progress[:-1]] if self.coalesce_progress else []
        if stale:
            self._mark(stale, OutboxStatus.COALESCED)
        delivered = 0
        throttled: float | None = None
        for row in rows:
            if row.id in stale:
                continue
            if row.not_before is not None and row.not_before > moment:
                return delivered, (row.not_before - moment).total_seconds()
            if (
                row.kind == Kind.PROGRESS
                and last_progress is not None
                and self.progress_interval_s > 0
            ):
                wait = self.progress_interval_s - (moment - last_progress).total_seconds()
                if wait > 0:
                    # Later rows of other kinds overtake a throttled progress update; the
                    # caller comes back for it when the interval has passed.
                    throttled = wait
                    continue
            run = self.store.get_run(run_id)
            assert run is not None
            if row.kind != Kind.OPENED and run.thread is None and run.opened_ref is None:
                return delivered, 1.0  # the opening message is not out yet
            try:
                self._mark([row.id], OutboxStatus.SENDING)
                with chat_delivery_span(self.platform, row.kind, run_id=str(run_id)):
                    ref = self._deliver(run, row)
            except RateLimited as exc:
                self._defer(row.id, exc.retry_after, f"rate limited ({exc.retry_after:.1f}s)")
                return delivered, exc.retry_after
            except DeliveryError as exc:
                log.warning("outbox %s: delivery refused: %s", row.key, exc)
                self._fail(row.id, str(exc))
                continue
            except Exception as exc:  # transient: back off and try again later
                backoff = min(300.0, 2.0 ** min(row.attempts + 1, 8))
                log.warning(
                    "outbox %s: delivery failed (%s); retry in %.0fs",
                    row.key,
                    type(exc).__name__,
                    backoff,
                )
                self._defer(row.id, backoff, f"{type(exc).__name__}: {exc}"[:500])
                return delivered, backoff
            self._sent(row.id, ref)
            if row.kind == Kind.PROGRESS:
                last_progress = _now()
            delivered += 1
        return delivered, throttled

    def _deliver(self, run: Run, row: OutboxItem) -> str | None:
        notice = Notice.from_json(row.payload)
        thread_target = Target(run.platform, run.channel, run.thread or run.opened_ref)
        if row.kind == Kind.OPENED:
            ref = self.port.post(Target(run.platform, run.channel, run.thread), notice)
            self._set_run(run.id, opened_ref=ref, thread=run.thread or ref)
            return ref
        if row.kind == Kind.PROGRESS:
            if run.progress_ref:
                self.port.update(thread_target, run.progress_ref, notice)
                return run.progress_ref
            ref = self.port.post(thread_target, notice)
            self._set_run(run.id, progress_ref=ref)
            return ref
        if row.kind == Kind.DECISION and notice.escalation_id is not None:
            escalation = self.store.escalation(notice.escalation_id)
            if escalation is not None and escalation.message_ref:
                self.port.update(thread_target, escalation.message_ref, notice)
                return escalation.message_ref
        ref = self.port.post(thread_target, notice)
        if row.kind == Kind.ESCALATION and notice.escalation_id is not None:
            self._set_escalation_ref(notice.escalation_id, ref)
        if row.kind in (Kind.RESULT, Kind.ERROR) and run.opened_ref:
            self.port.update(
                Target(run.platform, run.channel, run.thread),
                run.opened_ref,
                Notice(
                    Kind.OPENED,
                    run.id,
                    f"Run {run.id} for {run.requester}: {run.request}",
                    figures={"team": run.team or "?"},
                    outcome=notice.outcome or "failed",
                    requester=run.requester,
                ),
            )
        return ref

    # --- row bookkeeping ----------------------------------------------------------------------

    def _mark(self, ids: list[int], status: str) -> None:
        with self.store.session() as session:
            session.execute(update(OutboxItem).where(OutboxItem.id.in_(ids)).values(status=status))

    def _sent(self, row_id: int, ref: str | None) -> None:
        with self.store.session() as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == row_id)
                .values(status=OutboxStatus.SENT, sent_at=_now(), message_ref=ref)
            )

    def _defer(self, row_id: int, seconds: float, error: str) -> None:
        with self.store.session() as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == row_id)
                .values(
                    status=OutboxStatus.PENDING,
                    not_before=_now() + timedelta(seconds=seconds),
                    attempts=OutboxItem.attempts + 1,
                    last_error=error,
                )
            )

    def _fail(self, row_id: int, error: str) -> None:
        with self.store.session() as session:
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == row_id)
                .values(status=OutboxStatus.FAILED, last_error=error[:500])
            )

    def _set_run(self, run_id: int, **values: str | None) -> None:
        with self.store.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(**values))

    def _set_escalation_ref(self, escalation_id: int, ref: str | None) -> None:
        with self.store.session() as session:
            session.execute(
                update(Escalation).where(Escalation.id == escalation_id).values(message_ref=ref)
            )
