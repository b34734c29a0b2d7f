"""The Store: the one place that reads and writes run state in the database.

A step commits its checkpoint, step record, run row, escalation and outbox rows in one
transaction; the unique (run, version) makes a duplicated commit fail and roll back whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import state as st
from orchestrator.llm.gateway import CallSpec, Reply, ToolCall
from orchestrator.notices import Notice
from orchestrator.store.db import get_hot_pool, session_factory
from orchestrator.store.models import (
    AuditEntry,
    Checkpoint,
    Escalation,
    EscalationStatus,
    InboundEvent,
    LLMCall,
    OutboxItem,
    Run,
    RunStatus,
    Step,
)
from orchestrator.store.statements import (
    _ACTIVE,
    _ADVANCE_RUN,
    _EXTEND_LEASE,
    _INSERT_CALL,
    _INSERT_CHECKPOINT,
    _INSERT_OUTBOX,
    _INSERT_STEP,
    _LOAD_CHECKPOINTS,
    _READ_STEP,
    _RECORDED,
    _RECORDED_STEP,
    _RELEASE_LEASE,
    _RUN_KEYS,
    _RUN_SPEND,
    _START_LOCK,
    _TAKE_LEASE,
    BEGIN_STEP,
    COMMIT_STEP,
    EXTEND_LEASE,
    INSERT_CALL,
    RELEASE_LEASE,
    _outbox_rows,
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewStep:
    """Everything one step wants committed atomically."""

    node: str
    summary: str
    state: st.State
    run_status: str
    detail: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    error: str | None = None
    notices: tuple[Notice, ...] = ()
    escalation: dict[str, Any] | None = None
    # The reducer updates from the previous version to `state`: stored instead of the whole
    # state between snapshots, so checkpoint bytes grow with the run's length, not its square.
    delta: list[dict[str, Any]] | None = None
    started_at: datetime | None = None
    team: str | None = None


@dataclass(frozen=True)
class Spend:
    tokens: int = 0
    dollars: float = 0.0


@dataclass(frozen=True)
class StepStart:
    """What `begin_step` found: the leased run with everything the step reads, or why not.

    `replays` holds every ledger row already recorded for the step about to run (empty
    unless this is a re-execution); `last_input_id` is the newest human-input audit id.
    """

    taken: bool
    run: Run | None = None
    state: st.State | None = None
    spend: Spend = Spend()
    replays: dict[int, Reply] = field(default_factory=dict)
    last_input_id: int = 0
    duplicate: bool = False  # not taken: the run moved on (or ended)
    busy_for: float = 0.0  # not taken: seconds left on another execution's lease


@dataclass(frozen=True)
class Hold:
    """Keep the run's lease past the commit, for the worker going on with the run."""

    owner: str
    ttl_s: float


@dataclass(frozen=True)
class Commit:
    """A commit's outcome; `next` is the next step's start when the lease was held."""

    committed: bool
    next: StepStart | None = None


class Store:
    def __init__(
        self,
        url: str,
        sessions: sessionmaker[Session] | None = None,
        *,
        snapshot_every: int = 100,
    ) -> None:
        self.url = url
        self.snapshot_every = snapshot_every
        self.sessions = sessions or session_factory(url)
        self.engine = self.sessions.kw["bind"]
        self.postgres = self.engine.dialect.name == "postgresql"

    # A step's statements (lease, checkpoint, ledger, commit) are built once, in
    # statements.py. On Postgres the engine awaits them on psycopg's async driver (the
    # `a...` methods, one statement each); the synchronous methods are the portable path,
    # on a plain connection in one transaction: SQLite, and those methods on any backend.

    @contextmanager
    def _begin(self, *, durable: bool = True) -> Iterator[Connection]:
        """A transaction; `durable=False` skips waiting for the WAL flush at commit.

        Only for lease rows: a lease lost to a database crash is harmless (the version
        guard still admits one commit per step), while every step would otherwise wait
        for one more disk flush.
        """
        with self.engine.begin() as connection:
            if not durable and self.engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield connection

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    # --- runs -------------------------------------------------------------------------

    def create_run(
        self,
        *,
        origin_key: str | None,
        request: str,
        team: str | None,
        platform: str,
        channel: str,
        thread: str | None,
        requester: str,
        opened: Notice | None = None,
        seed: dict[str, Any] | None = None,
        admit: Callable[[Session], None] | None = None,
    ) -> tuple[Run, bool]:
        """Create a run with checkpoint 0, or return the one made for the same origin key.
        `seed`: more initial state (a follow-up's previous run). `admit(session)` may refuse
        the run by raising; it runs in the creating transaction, after this channel's and
        this person's starts are serialised (Postgres advisory locks, always channel first),
        so a count it makes cannot be passed by a simultaneous start."""
        if origin_key is not None:
            existing = self.run_by_origin(origin_key)
            if existing is not None:
                return existing, False
        try:
            with self.session() as session:
                if admit is not None:
                    if self.postgres:
                        for scope, name in ((1, f"{platform}:{channel}"), (2, requester)):
                            session.execute(_START_LOCK, {"scope": scope, "key": name})
                    admit(session)
                run = Run(
                    origin_key=origin_key,
                    request=request,
                    team=team,
                    platform=platform,
                    channel=channel,
                    thread=thread,
                    requester=requester,
                    status=RunStatus.QUEUED,
                    version=0,
                )
                session.add(run)
                session.flush()
                initial = st.initial_state(
                    request=request,
                    team=team,
                    next="supervisor" if team else "route",
                    **(seed or {}),
                )
                session.add(Checkpoint(run_id=run.id, version=0, state=st.dumps(initial)))
                if opened is not None:
                    notice = Notice(**{**opened.__dict__, "run_id": run.id})
                    self._add_outbox(session, run, 0, [notice])
                session.flush()
                session.refresh(run)
                return run, True
        except IntegrityError:
            if origin_key is None:
                raise
            existing = self.run_by_origin(origin_key)
            assert existing is not None
            return existing, False

    def run_in_thread(self, platform: str, channel: str, thread: str) -> Run | None:
        """The newest run posting into this thread (a follow-up shares its thread)."""
        with self.sessions() as session:
            return session.scalar(
                select(Run)
                .where(
                    Run.platform == platform,
                    Run.channel == channel,
                    or_(Run.thread == thread, Run.opened_ref == thread),
                )
                .order_by(Run.id.desc())
                .limit(1)
            )

    def run_by_origin(self, origin_key: str) -> Run | None:
        with self.sessions() as session:
            return session.scalar(select(Run).where(Run.origin_key == origin_key))

    def get_run(self, run_id: int) -> Run | None:
        with self.sessions() as session:
            return session.get(Run, run_id)

    def runs(self, ids: Iterable[int]) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.id.in_(list(ids)))))

    def recent_runs(self, *, channel: str | None = None, limit: int = 10) -> list[Run]:
        with self.sessions() as session:
            query = select(Run).order_by(Run.id.desc()).limit(limit)
            if channel is not None:
                query = query.where(Run.channel == channel)
            return list(session.scalars(query))

    def begin_step(
        self, run_id: int, version: int, owner: str, ttl_s: float, *, want_state: bool = True
    ) -> StepStart:
        """Take the run's step lease at `version` and read all a step needs, at once: the
        lease update and the reads in one transaction (lease rows skip the WAL flush wait,
        see `_begin`). `abegin_step` does it in one statement on Postgres."""
        params = _begin_params(run_id, version, owner, ttl_s, want_state)
        with self._begin(durable=False) as connection:
            taken = connection.execute(_TAKE_LEASE, params).rowcount == 1
            row = connection.execute(_READ_STEP, params).one() if taken else None
        if row is None:
            return self._refusal(run_id, version)
        return self._start(row._mapping, run_id, version, want_state)

    def _start(self, values: Any, run_id: int, version: int, want_state: bool) -> StepStart:
        """A taken step's start from its lease row; reads the ledger only for a re-executed
        step, and the checkpoints only for a delta version wanted and not in the row."""
        replays: dict[int, Reply] = {}
        if values["recorded_calls"]:
            replays = self.recorded_step(run_id, version + 1)
        state = None
        if values["cp_state"] is not None:
            state = st.loads(values["cp_state"])
        elif want_state:  # a delta version: fold it from its snapshot
            state = self.load_checkpoint(run_id, version)
        return _started(values, state, replays)

    async def abegin_step(
        self, run_id: int, version: int, owner: str, ttl_s: float, *, want_state: bool = True
    ) -> StepStart:
        """`begin_step` for a coroutine: awaited on psycopg's async driver on Postgres (one
        round trip, no thread hop); elsewhere the synchronous one in a thread."""
        if not self.postgres:
            return await asyncio.to_thread(
                self.begin_step, run_id, version, owner, ttl_s, want_state=want_state
            )
        params = _begin_params(run_id, version, owner, ttl_s, want_state)
        values, _ = await self._ahot(BEGIN_STEP, params)
        if values is None:
            return await asyncio.to_thread(self._refusal, run_id, version)
        if values["recorded_calls"] or (values["cp_state"] is None and want_state):
            # A re-execution or a delta version not in memory: rare, read in a thread.
            return await asyncio.to_thread(self._start, values, run_id, version, want_state)
        return self._start(values, run_id, version, want_state)  # reads nothing more

    async def _ahot(self, sql: str, params: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
        """One hot-path statement on the async pool: (first row, rows affected). Once more if
        the connection had died: every statement sent here is safe to repeat (a repeated
        insert or commit meets its unique key and reports what happened)."""
        pool = await get_hot_pool(self.url)
        for attempt in (0, 1):
            try:
                async with pool.connection() as connection:
                    cursor = await connection.execute(sql, params)
                    row = await cursor.fetchone() if cursor.description else None
                    return row, cursor.rowcount
            except psycopg_pool.PoolTimeout:
                raise  # no connection to be had: the step fails and is retried later
            except psycopg.OperationalError:
                if attempt:
                    raise
                # After a database restart every idle connection is dead: drop them all
                # before the one retry, rather than failing on the next stale one.
                await pool.check()
        raise AssertionError("unreachable")

    def _refusal(self, run_id: int, version: int) -> StepStart:
        with self._connect() as connection:
            row = connection.execute(
                select(Run.version, Run.status, Run.lease_until).where(Run.id == run_id)
            ).one_or_none()
        if row is None or row.version != version or row.status not in _ACTIVE:
            return StepStart(taken=False, duplicate=True)
        left = 0.0
        if row.lease_until is not None:
            left = max(0.0, (row.lease_until - now()).total_seconds())
        return StepStart(taken=False, busy_for=left)

    def renew_lease(self, run_id: int, owner: str, ttl_s: float) -> bool:
        """Extend a lease this execution still holds; never re-takes a freed one (a commit
        clears the lease, so a late renewal cannot block the next step)."""
        moment = now()
        params = {"run_id": run_id, "owner": owner, "until": moment + timedelta(seconds=ttl_s)}
        with self._begin(durable=False) as connection:
            return connection.execute(_EXTEND_LEASE, params).rowcount == 1

    def release_lease(self, run_id: int, owner: str) -> None:
        with self._begin(durable=False) as connection:
            connection.execute(_RELEASE_LEASE, {"run_id": run_id, "owner": owner})

    async def arenew_lease(self, run_id: int, owner: str, ttl_s: float) -> bool:
        if not self.postgres:
            return await asyncio.to_thread(self.renew_lease, run_id, owner, ttl_s)
        params = {"run_id": run_id, "owner": owner, "until": now() + timedelta(seconds=ttl_s)}
        _, changed = await self._ahot(EXTEND_LEASE, params)
        return changed == 1

    async def arelease_lease(self, run_id: int, owner: str) -> None:
        if not self.postgres:
            return await asyncio.to_thread(self.release_lease, run_id, owner)
        await self._ahot(RELEASE_LEASE, {"run_id": run_id, "owner": owner})

    def stalled_runs(self, older_than_s: float) -> list[tuple[int, int]]:
        """Runs that should be moving but have not for a while: their step task was lost."""
        cutoff = now() - timedelta(seconds=older_than_s)
        with self.sessions() as session:
            rows = session.execute(
                select(Run.id, Run.version).where(
                    Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                    Run.updated_at < cutoff,
                    or_(Run.lease_until.is_(None), Run.lease_until < now()),
                )
            )
            return [(r.id, r.version) for r in rows]

    def set_trace_parent(self, run_id: int, traceparent: str) -> None:
        with self.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(trace_parent=traceparent))

    def touch(self, run_id: int) -> None:
        with self.session() as session:
            session.execute(update(Run).where(Run.id == run_id).values(updated_at=now()))

    # --- checkpoints and steps -------------------------------------------------------

    def load_checkpoint(
        self, run_id: int, version: int, *, within: Session | None = None
    ) -> st.State | None:
        """The state at `version`: its last snapshot with the deltas since folded in."""
        params = {"run_id": run_id, "version": version}
        if within is not None:
            rows = within.execute(_LOAD_CHECKPOINTS, params).all()
        else:
            with self._connect() as connection:
                rows = connection.execute(_LOAD_CHECKPOINTS, params).all()
        if not rows:
            return None
        state = st.loads(rows[0].state)
        for row in rows[1:]:
            state = st.apply(state, json.loads(row.state))
        return state

    def _checkpoint(self, version: int, new: NewStep) -> tuple[str, str]:
        """(kind, text) to store: a snapshot every `snapshot_every` versions (and whenever
        the step gave no delta), else the step's reducer updates."""
        if new.delta is None or version % self.snapshot_every == 0:
            return "snapshot", st.dumps(new.state)
        return "delta", json.dumps(new.delta, sort_keys=True, separators=(",", ":"))

    def commit_step(self, run_id: int, from_version: int, new: NewStep) -> bool:
        """Commit checkpoint from_version+1 with its step, run update, escalation and outbox.

        Returns False (and changes nothing) when another execution already advanced the run.
        """
        return self._commit(run_id, from_version, new, None).committed

    async def acommit_step(
        self, run_id: int, from_version: int, new: NewStep, hold: Hold | None = None
    ) -> Commit:
        """`commit_step` for a coroutine, and with `hold` also the start of the next step.

        `hold` keeps the run's lease for the worker that goes straight on with the run: the
        same statement that commits v(n+1) leases v(n+1) to `hold.owner` and returns what
        the next step reads (the run row, its spend, the newest human input), so a step
        that continues a run costs no separate begin_step round trip. On Postgres the whole
        commit is one statement awaited on the async driver.
        """
        if not self.postgres or new.escalation is not None:
            return await asyncio.to_thread(self._commit, run_id, from_version, new, hold)
        params = self._commit_params_pg(run_id, from_version, new, hold)
        try:
            row, _ = await self._ahot(COMMIT_STEP, params)
        except psycopg.IntegrityError:
            return Commit(False)
        return _commit_from(row, hold)

    def _commit(self, run_id: int, from_version: int, new: NewStep, hold: Hold | None) -> Commit:
        version = from_version + 1
        moment = now()
        # The commit also frees the step lease (or passes it on to the next step): the
        # engine's release that follows then matches no row and costs no disk flush.
        values: dict[str, Any] = {
            "version": version,
            "status": new.run_status,
            "updated_at": moment,
            "lease_owner": hold.owner if hold else None,
            "lease_until": moment + timedelta(seconds=hold.ttl_s) if hold else None,
        }
        if new.answer is not None:
            values["answer"] = new.answer
        if new.error is not None:
            values["error"] = new.error
        if new.team is not None:
            values["team"] = new.team
        try:
            with self._begin() as connection:
                # One round trip advances the run and reads what the outbox rows need.
                advanced = connection.execute(
                    _ADVANCE_RUN.values(**values),
                    {"run_id": run_id, "from_version": from_version},
                ).one_or_none()
                if advanced is None:
                    connection.rollback()
                    return Commit(False)
                kind, text = self._checkpoint(version, new)
                connection.execute(
                    _INSERT_CHECKPOINT,
                    {"run_id": run_id, "version": version, "kind": kind, "state": text},
                )
                # The step row sums this step's ledger rows in the same statement.
                connection.execute(
                    _INSERT_STEP,
                    {
                        "run_id": run_id,
                        "version": version,
                        "ledger_run": run_id,
                        "ledger_step": version,
                        "node": new.node,
                        "summary": new.summary,
                        "detail": new.detail,
                        "latency_ms": (moment - (new.started_at or moment)).total_seconds() * 1000,
                        "started_at": new.started_at or moment,
                        "finished_at": moment,
                    },
                )
                notices = list(new.notices)
                if new.escalation is not None:
                    escalation_id = connection.execute(
                        insert(Escalation).returning(Escalation.id),
                        {"run_id": run_id, "version": version, **new.escalation},
                    ).scalar_one()
                    notices = [
                        Notice(
                            **{
                                **n.__dict__,
                                "escalation_id": escalation_id,
                                "actions": _with_escalation_id(n, escalation_id),
                            }
                        )
                        if n.kind == "escalation"
                        else n
                        for n in notices
                    ]
                rows = _outbox_rows(run_id, advanced.platform, advanced.channel, version, notices)
                if rows:
                    connection.execute(_INSERT_OUTBOX, rows)
                following = None
                if hold is not None:
                    reads = {"run_id": run_id, "at_version": version, "step": version + 1}
                    following = connection.execute(_READ_STEP, {**reads, "want_state": False}).one()
            if hold is None or following is None:
                return Commit(True)
            return _commit_from(following._mapping, hold)
        except IntegrityError:
            return Commit(False)

    def _commit_params_pg(
        self, run_id: int, from_version: int, new: NewStep, hold: Hold | None
    ) -> dict[str, Any]:
        """commit_step as ONE statement on Postgres (data-modifying CTEs run whole or not
        at all, committed by themselves): the run update, checkpoint, step row and outbox
        rows in one round trip. A lost version race matches no run row and inserts
        nothing; a duplicate checkpoint fails the whole statement."""
        version = from_version + 1
        moment = now()
        rows = _outbox_rows(run_id, "", "", version, new.notices)
        kind, text = self._checkpoint(version, new)
        return {
            "next_owner": hold.owner if hold else None,
            "next_until": moment + timedelta(seconds=hold.ttl_s) if hold else None,
            "kind": kind,
            "state": text,
            "run_id": run_id,
            "from_version": from_version,
            "version": version,
            "status": new.run_status,
            "moment": moment,
            "answer": new.answer,
            "error": new.error,
            "team": new.team,
            "node": new.node,
            "summary": new.summary,
            "detail": json.dumps(new.detail),
            "latency_ms": (moment - (new.started_at or moment)).total_seconds() * 1000,
            "started_at": new.started_at or moment,
            "outbox": json.dumps(
                [{"key": r["key"], "kind": r["kind"], "payload": r["payload"]} for r in rows]
            ),
        }

    def steps(self, run_id: int) -> list[Step]:
        with self.sessions() as session:
            return list(
                session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.version))
            )

    # --- ledger -------------------------------------------------------------------------

    def recorded(self, run_id: int, step: int, call_index: int) -> Reply | None:
        with self._connect() as connection:
            row = connection.execute(
                _RECORDED, {"run_id": run_id, "step": step, "call_index": call_index}
            ).one_or_none()
            return None if row is None else _reply_of(row, replayed=True)

    def recorded_step(self, run_id: int, step: int) -> dict[int, Reply]:
        """Every call already recorded for one step, by call index (a re-execution)."""
        with self._connect() as connection:
            rows = connection.execute(_RECORDED_STEP, {"run_id": run_id, "step": step})
            return {row.call_index: _reply_of(row, replayed=True) for row in rows}

    def record(self, spec: CallSpec, model: str, request: dict[str, Any], reply: Reply) -> Reply:
        """Insert the paid call; if a concurrent execution recorded it first, use theirs."""
        params = _call_params(spec, model, request, reply)
        params["request"] = json.loads(params["request"])  # non-JSON values as text
        params["response"] = json.loads(params["response"])
        params["created_at"] = params.pop("moment")
        try:
            # One INSERT in its own transaction, committed durably.
            with self.engine.begin() as connection:
                connection.execute(_INSERT_CALL, params)
            return reply
        except IntegrityError:
            existing = self.recorded(spec.run_id, spec.step, spec.call_index)
            return existing or reply

    async def arecord(
        self, spec: CallSpec, model: str, request: dict[str, Any], reply: Reply
    ) -> Reply:
        """`record` for a coroutine: one INSERT awaited on the async driver (Postgres)."""
        if not self.postgres:
            return await asyncio.to_thread(self.record, spec, model, request, reply)
        params = _call_params(spec, model, request, reply)
        try:
            await self._ahot(INSERT_CALL, params)
            return reply
        except psycopg.IntegrityError:
            existing = await asyncio.to_thread(
                self.recorded, spec.run_id, spec.step, spec.call_index
            )
            return existing or reply

    def llm_calls(self, run_id: int) -> list[LLMCall]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(LLMCall)
                    .where(LLMCall.run_id == run_id)
                    .order_by(LLMCall.step, LLMCall.call_index)
                )
            )

    def spend(
        self,
        *,
        run_id: int | None = None,
        team: str | None = None,
        channel: str | None = None,
        since: datetime | None = None,
    ) -> Spend:
        conditions = []
        if run_id is not None:
            conditions.append(LLMCall.run_id == run_id)
        if team is not None:
            conditions.append(LLMCall.team == team)
        if channel is not None:
            conditions.append(LLMCall.channel == channel)
        if since is not None:
            conditions.append(LLMCall.created_at >= since)
        with self._connect() as connection:
            if run_id is not None and len(conditions) == 1:
                tokens, dollars = connection.execute(_RUN_SPEND, {"run_id": run_id}).one()
            else:
                tokens, dollars = connection.execute(
                    select(
                        func.coalesce(func.sum(LLMCall.tokens_in + LLMCall.tokens_out), 0),
                        func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
                    ).where(and_(*conditions))
                ).one()
            return Spend(int(tokens), float(dollars))

    # --- escalations --------------------------------------------------------------------

    def escalation(self, escalation_id: int) -> Escalation | None:
        with self.sessions() as session:
            return session.get(Escalation, escalation_id)

    def pending_escalations(self, run_id: int | None = None) -> list[Escalation]:
        with self.sessions() as session:
            query = select(Escalation).where(Escalation.status == EscalationStatus.PENDING)
            if run_id is not None:
                query = query.where(Escalation.run_id == run_id)
            return list(session.scalars(query.order_by(Escalation.id)))

    def due_escalations(self, at: datetime | None = None) -> list[Escalation]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Escalation).where(
                        Escalation.status == EscalationStatus.PENDING,
                        Escalation.expires_at <= (at or now()),
                    )
                )
            )

    def audit(self, *, within: Session | None = None, **values: Any) -> None:
        """Record an audit entry; `within` a caller's transaction, it commits (or not) with
        the change it records."""
        if within is not None:
            within.add(AuditEntry(**values))
            return
        with self.session() as session:
            session.add(AuditEntry(**values))

    def human_inputs(self, run_id: int, after_id: int) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry)
                    .where(
                        AuditEntry.run_id == run_id,
                        AuditEntry.action == "human_input",
                        AuditEntry.id > after_id,
                    )
                    .order_by(AuditEntry.id)
                )
            )

    def audit_entries(self, run_id: int) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(AuditEntry.run_id == run_id).order_by(AuditEntry.id)
                )
            )

    # --- inbound dedup ------------------------------------------------------------------

    def first_delivery(self, key: str, platform: str) -> bool:
        """True the first time a platform delivers this event; retries see False."""
        try:
            with self.session() as session:
                session.add(InboundEvent(key=key, platform=platform))
            return True
        except IntegrityError:
            return False

    def forget_inbound_before(self, cutoff: datetime) -> int:
        with self.session() as session:
            from sqlalchemy import delete

            return session.execute(
                delete(InboundEvent).where(InboundEvent.created_at < cutoff)
            ).rowcount

    # --- outbox -------------------------------------------------------------------------

    def _add_outbox(
        self, session: Session, run: Run, version: int, notices: Iterable[Notice]
    ) -> None:
        for row in _outbox_rows(run.id, run.platform, run.channel, version, notices):
            session.add(OutboxItem(**row))

    def add_notices(
        self,
        run_id: int,
        key_prefix: str,
        notices: Iterable[Notice],
        *,
        within: Session | None = None,
    ) -> None:
        """Outbox rows outside a step (decisions, expiry); the key prefix makes them idempotent.

        `within` the transaction that claimed the change they announce, they are written with
        it: a crash cannot leave a decided escalation or an ended run without its message.
        """
        if within is not None:
            self._add_notices(within, run_id, key_prefix, notices)
            return
        try:
            with self.session() as session:
                self._add_notices(session, run_id, key_prefix, notices)
        except IntegrityError:
            pass

    @staticmethod
    def _add_notices(
        session: Session, run_id: int, key_prefix: str, notices: Iterable[Notice]
    ) -> None:
        run = session.get(Run, run_id)
        assert run is not None
        for index, notice in enumerate(notices):
            session.add(
                OutboxItem(
                    key=f"{run_id}:{key_prefix}:{notice.kind}:{index}",
                    run_id=run_id,
                    platform=run.platform,
                    channel=run.channel,
                    kind=str(notice.kind),
                    payload=notice.to_json(),
                )
            )


def _with_escalation_id(notice: Notice, escalation_id: int) -> tuple[Any, ...]:
    from orchestrator.notices import Action

    return tuple(Action(**{**a.__dict__, "value": str(escalation_id)}) for a in notice.actions)


def _reply_of(row: LLMCall, *, replayed: bool) -> Reply:
    response = row.response or {}
    return Reply(
        content=response.get("content") or "",
        tool_calls=tuple(ToolCall(**c) for c in response.get("tool_calls") or []),
        model=row.model,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost_usd=row.cost_usd,
        latency_ms=row.latency_ms,
        replayed=replayed,
        finish_reason=response.get("finish_reason") or "stop",
        priced=response.get("priced", True),
    )


def _begin_params(
    run_id: int, version: int, owner: str, ttl_s: float, want_state: bool
) -> dict[str, Any]:
    moment = now()
    return {
        "run_id": run_id,
        "owner": owner,
        "moment": moment,
        "until": moment + timedelta(seconds=ttl_s),
        "at_version": version,
        "step": version + 1,
        "want_state": want_state,
    }


def _started(values: Any, state: st.State | None, replays: dict[int, Reply]) -> StepStart:
    """A taken step's start from a row holding the run's columns and the step reads."""
    return StepStart(
        taken=True,
        run=Run(**{key: values[key] for key in _RUN_KEYS}),
        state=state,
        spend=Spend(int(values["spent_tokens"]), float(values["spent_dollars"])),
        replays=replays,
        last_input_id=int(values["last_input"] or 0),
    )


def _commit_from(values: Any, hold: Hold | None) -> Commit:
    """The commit's outcome from the row the commit statement returned (None: lost)."""
    if values is None:
        return Commit(False)
    return Commit(True, _started(values, None, {}) if hold else None)


def _call_params(
    spec: CallSpec, model: str, request: dict[str, Any], reply: Reply
) -> dict[str, Any]:
    """A ledger row's values; request and response as JSON text, serialised once."""
    return {
        "run_id": spec.run_id,
        "step": spec.step,
        "call_index": spec.call_index,
        "team": spec.team,
        "channel": spec.channel,
        "purpose": spec.purpose,
        "tier": spec.tier,
        "model": model,
        "request": json.dumps(request, default=str),
        "response": json.dumps(reply.to_json()),
        "tokens_in": reply.tokens_in,
        "tokens_out": reply.tokens_out,
        "cost_usd": reply.cost_usd,
        "latency_ms": reply.latency_ms,
        "moment": now(),
    }
