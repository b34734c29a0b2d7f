"""Drains the outbox through a platform's ChatPort.

Chat metrics (deliveries, 429s, API errors) are counted by each port, which alone sees the
platform's own error codes and the rate limits its SDK retries by itself.

Rows go out per run in commit order; the opening message must be out before anything can
go into its thread. Progress and highlight rows are folded into the run's living progress
view (orchestrator/progress.py), rebuilt from the database and shown in one message edited
in place at most once per `progress_interval_s`. Before an escalation the view is brought
up to date (it says what the run waits for); before the answer (or abort, or failure) it
is finalised and the opening message shows the outcome, and once the answer is out the
view is never edited again, so a throttled update can never land after the final message.
A request longer than the opening message shows goes into the thread in full, once.
A 429 leaves the row pending with `not_before` set from Retry-After. A row is marked
`sending` before the call and `sent` after, so a crash in between is visible; such rows are
retried after `stuck_after_s` (the one window in which a post can repeat).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from orchestrator import progress, wording
from orchestrator.notices import Kind, Notice
from orchestrator.ports import ChatPort, DeliveryError, RateLimited, Target
from orchestrator.store import progress as store_progress
from orchestrator.store.models import Escalation, OutboxItem, OutboxStatus, Run, RunStatus
from orchestrator.store.repository import Store
from orchestrator.telemetry.tracing import chat_delivery_span

log = logging.getLogger(__name__)

_VIEW_KINDS = (Kind.PROGRESS, Kind.HIGHLIGHT)  # folded into the run's living progress view


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
        view_items: int = 20,
    ) -> None:
        self.store = store
        self.port = port
        self.platform = platform
        self.progress_interval_s = progress_interval_s
        self.lease_s = lease_s
        self.stuck_after_s = stuck_after_s
        self.view_items = view_items

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
        rows = deque(self._pending_rows(run_id, moment))
        if not rows:
            return 0, None
        last_view = self._last_view_at(run_id)
        finished = store_progress.final_delivered(self.store, run_id)
        delivered = 0
        folded: list[int] = []  # progress and highlight rows waiting for the next view
        refresh = False
        while rows:
            row = rows.popleft()
            if row.kind in _VIEW_KINDS:
                if finished:  # the view was finalised with the answer: never touch it again
                    self._mark([row.id], OutboxStatus.COALESCED)
                else:
                    folded.append(row.id)
                continue
            if row.not_before is not None and row.not_before > moment:
                return delivered, (row.not_before - moment).total_seconds()
            run = self.store.get_run(run_id)
            assert run is not None
            if row.kind != Kind.OPENED and run.thread is None and run.opened_ref is None:
                return delivered, 1.0  # the opening message is not out yet
            try:
                self._mark([row.id], OutboxStatus.SENDING)
                with chat_delivery_span(self.platform, row.kind, run_id=str(run_id)):
                    ref = self._deliver(run, row, folded, finished)
            except RateLimited as exc:
                self._defer(row.id, exc.retry_after, f"rate limited ({exc.retry_after:.1f}s)")
                return delivered, exc.retry_after
            except DeliveryError as exc:
                log.warning("outbox %s: delivery refused: %s", row.key, exc)
                self._fail(row.id, str(exc))
                continue
            except Exception as exc:  # transient: back off and try again later
                return delivered, self._transient(row, exc)
            self._sent(row.id, ref)
            delivered += 1
            if row.kind in (Kind.RESULT, Kind.ERROR):
                finished = True
            if row.kind == Kind.OPENED:
                request = self._request_row(run)
                if request is not None:
                    rows.appendleft(request)
            if row.kind == Kind.DECISION and run.status not in RunStatus.TERMINAL:
                refresh = True  # paused → working again: refresh the view
        if not (folded or refresh) or finished:
            return delivered, None
        if self.progress_interval_s > 0 and last_view is not None:
            wait = self.progress_interval_s - (moment - last_view).total_seconds()
            if wait > 0:
                return delivered, wait  # throttled: the caller comes back for the newest view
        run = self.store.get_run(run_id)
        assert run is not None
        if run.thread is None and run.opened_ref is None:
            return delivered, 1.0
        try:
            with chat_delivery_span(self.platform, Kind.PROGRESS, run_id=str(run_id)):
                ref = self._show_view(run)
        except RateLimited as exc:
            return delivered, exc.retry_after
        except DeliveryError as exc:
            log.warning("outbox run %s: progress view refused: %s", run_id, exc)
            self._settle_view_rows(folded, None, OutboxStatus.FAILED)
            return delivered, None
        except Exception as exc:
            log.warning("outbox run %s: progress view failed (%s)", run_id, type(exc).__name__)
            return delivered, min(300.0, self.progress_interval_s * 5 or 5.0)
        self._settle_view_rows(folded, ref, OutboxStatus.SENT)
        return delivered + 1, None

    def _pending_rows(self, run_id: int, moment: datetime) -> list[OutboxItem]:
        stuck = moment - timedelta(seconds=self.stuck_after_s)
        with self.store.sessions() as session:
            return list(
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

    def _last_view_at(self, run_id: int) -> datetime | None:
        with self.store.sessions() as session:
            return session.scalar(
                select(OutboxItem.sent_at)
                .where(
                    OutboxItem.run_id == run_id,
                    OutboxItem.kind.in_([str(k) for k in _VIEW_KINDS]),
                    OutboxItem.status == OutboxStatus.SENT,
                )
                .order_by(OutboxItem.sent_at.desc())
                .limit(1)
            )

    def _settle_view_rows(self, ids: list[int], ref: str | None, status: str) -> None:
        """The newest folded row carries the delivery; the others were folded into it."""
        if not ids:
            return
        if status == OutboxStatus.COALESCED:
            self._mark(ids, OutboxStatus.COALESCED)
            return
        if len(ids) > 1:
            self._mark(ids[:-1], OutboxStatus.COALESCED)
        if status == OutboxStatus.SENT:
            self._sent(ids[-1], ref)
        else:
            self._fail(ids[-1], "progress view refused")

    def _transient(self, row: OutboxItem, exc: Exception) -> float:
        backoff = min(300.0, 2.0 ** min(row.attempts + 1, 8))
        log.warning(
            "outbox %s: delivery failed (%s); retry in %.0fs", row.key, type(exc).__name__, backoff
        )
        self._defer(row.id, backoff, f"{type(exc).__name__}: {exc}"[:500])
        return backoff

    def _request_row(self, run: Run) -> OutboxItem | None:
        """A request too long for the opening message goes into the thread in full, once."""
        if not wording.excerpt(run.request, wording.OPENING_CHARS)[1]:
            return None
        notice = Notice(
            Kind.REQUEST, run.id, "Full request", body=run.request, requester=run.requester
        )
        self.store.add_notices(run.id, "request", [notice])
        with self.store.sessions() as session:
            return session.scalar(
                select(OutboxItem).where(
                    OutboxItem.key == f"{run.id}:request:{Kind.REQUEST}:0",
                    OutboxItem.status == OutboxStatus.PENDING,
                )
            )

    # --- what goes out --------------------------------------------------------------------

    def _view(self, run_id: int) -> tuple[progress.View, store_progress.RunFacts] | None:
        facts = store_progress.run_facts(self.store, run_id)
        if facts is None:
            return None
        return progress.build(facts, max_items=self.view_items), facts

    def _show_view(self, run: Run) -> str | None:
        """Post the run's progress view, or edit it in place; returns its ref."""
        built = self._view(run.id)
        if built is None:
            return None
        view, _facts = built
        notice = Notice(
            Kind.PROGRESS,
            run.id,
            progress.headline(view),
            figures={"team": run.team or "?"},
            requester=run.requester,
            view=view.to_json(),
        )
        thread_target = Target(run.platform, run.channel, run.thread or run.opened_ref)
        fresh = self.store.get_run(run.id)
        progress_ref = fresh.progress_ref if fresh is not None else run.progress_ref
        if progress_ref:
            try:
                self.port.update(thread_target, progress_ref, notice)
                return progress_ref
            except DeliveryError as exc:  # the message is gone (deleted, too old to edit)
                log.warning("run %s: cannot edit the progress view (%s); posting anew", run.id, exc)
        ref = self.port.post(thread_target, notice)
        self._set_run(run.id, progress_ref=ref)
        return ref

    def _deliver(self, run: Run, row: OutboxItem, folded: list[int], finished: bool) -> str | None:
        notice = self._enrich(run, Notice.from_json(row.payload))
        thread_target = Target(run.platform, run.channel, run.thread or run.opened_ref)
        if row.kind == Kind.OPENED:
            ref = self.port.post(Target(run.platform, run.channel, run.thread), notice)
            self._set_run(run.id, opened_ref=ref, thread=run.thread or ref)
            return ref
        if row.kind == Kind.DECISION and notice.escalation_id is not None:
            escalation = self.store.escalation(notice.escalation_id)
            if escalation is not None and escalation.message_ref:
                self.port.update(thread_target, escalation.message_ref, notice)
                return escalation.message_ref
        if row.kind == Kind.ESCALATION:
            # The view says what the run waits for before the question is asked.
            self._show_view(run)
            self._settle_view_rows(folded, None, OutboxStatus.COALESCED)
            folded.clear()
        final = row.kind in (Kind.RESULT, Kind.ERROR)
        if final and not finished:
            # The view is finished first, and the opening message shows the outcome, so that
            # nothing in the thread changes after the answer appears.
            self._show_view(run)
            self._settle_view_rows(folded, None, OutboxStatus.COALESCED)
            folded.clear()
            if run.opened_ref:
                self.port.update(
                    Target(run.platform, run.channel, run.thread),
                    run.opened_ref,
                    self._opened(run, notice.outcome or "failed"),
                )
        ref = self.port.post(thread_target, notice)
        if row.kind == Kind.ESCALATION and notice.escalation_id is not None:
            self._set_escalation_ref(notice.escalation_id, ref)
        return ref

    def _opened(self, run: Run, outcome: str) -> Notice:
        return Notice(
            Kind.OPENED,
            run.id,
            f"Run {run.id} for {run.requester}",
            figures={"team": run.team or "?"},
            outcome=outcome,
            requester=run.requester,
            request=run.request,
        )

    def _enrich(self, run: Run, notice: Notice) -> Notice:
        """Fill the structured facts renderers prefer, when the notice came without them."""
        changes: dict[str, object] = {}
        if notice.kind == Kind.OPENED:
            changes["run_id"] = run.id
            if notice.request is None:
                changes["request"] = run.request
            if notice.requester is None:
                changes["requester"] = run.requester
        if notice.kind in (Kind.DECISION, Kind.ESCALATION) and notice.escalation_id is not None:
            who, when, guard = store_progress.escalation_decision(self.store, notice.escalation_id)
            if notice.guard is None:
                changes["guard"] = guard
            if notice.kind == Kind.DECISION:
                if notice.actor is None and who is not None:
                    changes["actor"] = who
                if notice.at is None and when is not None:
                    changes["at"] = when.timestamp()
        if notice.kind == Kind.RESULT and notice.outcome == "aborted" and notice.actor is None:
            facts = store_progress.run_facts(self.store, run.id)
            if facts is not None and facts.ended_by:
                changes["actor"] = facts.ended_by
        return replace(notice, **changes) if changes else notice  # type: ignore[arg-type]

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
