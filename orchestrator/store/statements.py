"""Prebuilt SQL for the step hot path: leases, replays, the one-statement step start and commit.

Built once at import, so a step pays for executing statements, not for compiling them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, text, update

from orchestrator.notices import Notice
from orchestrator.store.models import (
    AuditEntry,
    Checkpoint,
    LLMCall,
    OutboxItem,
    Run,
    RunStatus,
    Step,
)


def _outbox_rows(
    run_id: int, platform: str, channel: str, version: int, notices: Iterable[Notice]
) -> list[dict[str, Any]]:
    """Outbox rows keyed (run, version, kind, index): a step's notices are posted once."""
    counts: dict[str, int] = {}
    rows = []
    for notice in notices:
        index = counts.get(notice.kind, 0)
        counts[notice.kind] = index + 1
        rows.append(
            {
                "key": f"{run_id}:{version}:{notice.kind}:{index}",
                "run_id": run_id,
                "platform": platform,
                "channel": channel,
                "kind": str(notice.kind),
                "payload": notice.to_json(),
            }
        )
    return rows


# --- statements of the step hot path, built once -------------------------------------------

_ACTIVE = [RunStatus.QUEUED, RunStatus.RUNNING]
# Serialises run starts per channel (scope 1) and per person (scope 2) until the creating
# transaction ends; keys hash to int4 (a collision only serialises a little more).
_START_LOCK = text("SELECT pg_advisory_xact_lock(:scope, hashtext(CAST(:key AS TEXT)))")
_LEASE_FREE = or_(
    Run.lease_until.is_(None),
    Run.lease_until < bindparam("moment"),
    Run.lease_owner == bindparam("owner"),
)
_TAKE_LEASE = (
    update(Run)
    .where(
        Run.id == bindparam("run_id"),
        _LEASE_FREE,
        Run.version == bindparam("at_version"),
        Run.status.in_(_ACTIVE),
    )
    .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
)
# The checkpoints that make up a version: the last snapshot at or before it, then deltas.
_LOAD_CHECKPOINTS = (
    select(Checkpoint.kind, Checkpoint.state)
    .where(
        Checkpoint.run_id == bindparam("run_id"),
        Checkpoint.version <= bindparam("version"),
        Checkpoint.version
        >= select(func.max(Checkpoint.version))
        .where(
            Checkpoint.run_id == bindparam("run_id"),
            Checkpoint.version <= bindparam("version"),
            Checkpoint.kind == "snapshot",
        )
        .scalar_subquery(),
    )
    .order_by(Checkpoint.version)
)
_RECORDED = select(
    LLMCall.response,
    LLMCall.model,
    LLMCall.tokens_in,
    LLMCall.tokens_out,
    LLMCall.cost_usd,
    LLMCall.latency_ms,
).where(
    LLMCall.run_id == bindparam("run_id"),
    LLMCall.step == bindparam("step"),
    LLMCall.call_index == bindparam("call_index"),
)
_RECORDED_STEP = select(
    LLMCall.call_index,
    LLMCall.response,
    LLMCall.model,
    LLMCall.tokens_in,
    LLMCall.tokens_out,
    LLMCall.cost_usd,
    LLMCall.latency_ms,
).where(LLMCall.run_id == bindparam("run_id"), LLMCall.step == bindparam("step"))
_INSERT_CALL = insert(LLMCall)
_INSERT_CHECKPOINT = insert(Checkpoint)
_INSERT_OUTBOX = insert(OutboxItem)
_ADVANCE_RUN = (
    update(Run)
    .where(
        Run.id == bindparam("run_id"),
        Run.version == bindparam("from_version"),
        Run.status.in_(_ACTIVE),
    )
    .returning(Run.platform, Run.channel)
)
_RUN_SPEND = select(
    func.coalesce(func.sum(LLMCall.tokens_in + LLMCall.tokens_out), 0),
    func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
).where(LLMCall.run_id == bindparam("run_id"))


_COMMIT_STEP_PG = text(
    """
WITH adv AS (
    UPDATE runs SET version = :version, status = :status, updated_at = :moment,
        lease_owner = CAST(:next_owner AS VARCHAR),
        lease_until = CAST(:next_until AS TIMESTAMP WITH TIME ZONE),
        answer = COALESCE(CAST(:answer AS TEXT), answer),
        error = COALESCE(CAST(:error AS TEXT), error),
        team = COALESCE(CAST(:team AS VARCHAR), team)
    WHERE id = :run_id AND version = :from_version AND status IN ('queued', 'running')
    RETURNING *
), cp AS (
    INSERT INTO checkpoints (run_id, version, kind, state, created_at)
    SELECT adv.id, :version, :kind, :state, :moment FROM adv
    RETURNING 1
), stp AS (
    INSERT INTO steps (run_id, version, node, summary, detail, tokens_in, tokens_out,
        cost_usd, latency_ms, started_at, finished_at)
    SELECT adv.id, :version, :node, :summary, CAST(:detail AS JSON), l.tokens_in,
        l.tokens_out, l.cost_usd, :latency_ms, :started_at, :moment
    FROM adv, (
        SELECT COALESCE(SUM(tokens_in), 0) AS tokens_in,
            COALESCE(SUM(tokens_out), 0) AS tokens_out,
            COALESCE(SUM(cost_usd), 0.0) AS cost_usd
        FROM llm_calls WHERE run_id = :run_id AND step = :version
    ) AS l
    RETURNING 1
), ob AS (
    INSERT INTO outbox (key, run_id, platform, channel, kind, payload, status, attempts,
        created_at)
    SELECT r.key, adv.id, adv.platform, adv.channel, r.kind, r.payload, 'pending', 0,
        :moment
    FROM adv, json_to_recordset(CAST(:outbox AS JSON)) AS r(key TEXT, kind TEXT, payload JSON)
    RETURNING 1
)
SELECT adv.*,
    (SELECT COALESCE(SUM(tokens_in + tokens_out), 0) FROM llm_calls
        WHERE run_id = :run_id) AS spent_tokens,
    (SELECT COALESCE(SUM(cost_usd), 0.0) FROM llm_calls WHERE run_id = :run_id)
        AS spent_dollars,
    (SELECT MAX(id) FROM audit WHERE run_id = :run_id AND action = 'human_input')
        AS last_input
FROM adv
"""
)
# The paid call, one statement; the request and response arrive as JSON text.
_INSERT_CALL_PG = text(
    """
INSERT INTO llm_calls (run_id, step, call_index, team, channel, purpose, tier, model,
    request, response, tokens_in, tokens_out, cost_usd, latency_ms, created_at)
VALUES (:run_id, :step, :call_index, :team, :channel, :purpose, :tier, :model,
    CAST(:request AS JSON), CAST(:response AS JSON), :tokens_in, :tokens_out, :cost_usd,
    :latency_ms, :moment)
"""
)
_RUN_KEYS = tuple(column.key for column in Run.__table__.c)


def _step_reads(source: Any) -> Any:
    """The run row from `source` plus what a step reads, as scalar subqueries."""
    run_id = bindparam("run_id")
    return select(
        *(source.c[key] for key in _RUN_KEYS),
        # The state when the version is a snapshot and the caller has none cached; a
        # delta version is folded from its snapshot by a second read (a cache miss only).
        select(Checkpoint.state)
        .where(
            Checkpoint.run_id == run_id,
            Checkpoint.version == bindparam("at_version"),
            Checkpoint.kind == "snapshot",
            bindparam("want_state"),
        )
        .scalar_subquery()
        .label("cp_state"),
        select(func.coalesce(func.sum(LLMCall.tokens_in + LLMCall.tokens_out), 0))
        .where(LLMCall.run_id == run_id)
        .scalar_subquery()
        .label("spent_tokens"),
        select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0))
        .where(LLMCall.run_id == run_id)
        .scalar_subquery()
        .label("spent_dollars"),
        select(func.count())
        .select_from(LLMCall)
        .where(LLMCall.run_id == run_id, LLMCall.step == bindparam("step"))
        .scalar_subquery()
        .label("recorded_calls"),
        select(func.max(AuditEntry.id))
        .where(AuditEntry.run_id == run_id, AuditEntry.action == "human_input")
        .scalar_subquery()
        .label("last_input"),
    )


# Take the lease at `version` and read all a step needs, in one statement. Lease rows need
# no WAL flush wait (see Store._begin); set_config(..., true) is local to the statement's
# own transaction.
_BEGIN_STEP_PG = text(
    """
WITH leased AS (
    UPDATE runs SET lease_owner = :owner, lease_until = :until
    WHERE id = :run_id AND version = :at_version AND status IN ('queued', 'running')
        AND (lease_until IS NULL OR lease_until < :moment OR lease_owner = :owner)
    RETURNING *
)
SELECT leased.*,
    (SELECT state FROM checkpoints WHERE run_id = :run_id AND version = :at_version
        AND kind = 'snapshot' AND CAST(:want_state AS BOOLEAN)) AS cp_state,
    (SELECT COALESCE(SUM(tokens_in + tokens_out), 0) FROM llm_calls
        WHERE run_id = :run_id) AS spent_tokens,
    (SELECT COALESCE(SUM(cost_usd), 0.0) FROM llm_calls WHERE run_id = :run_id)
        AS spent_dollars,
    (SELECT count(*) FROM llm_calls WHERE run_id = :run_id AND step = :step)
        AS recorded_calls,
    (SELECT MAX(id) FROM audit WHERE run_id = :run_id AND action = 'human_input')
        AS last_input,
    set_config('synchronous_commit', 'off', true) AS sync
FROM leased
"""
)
_READ_STEP = _step_reads(Run.__table__).where(Run.id == bindparam("run_id"))


def _step_total(column: Any, empty: Any) -> Any:
    return (
        select(func.coalesce(func.sum(column), empty))
        .where(LLMCall.run_id == bindparam("ledger_run"), LLMCall.step == bindparam("ledger_step"))
        .scalar_subquery()
    )


_INSERT_STEP = insert(Step).values(
    tokens_in=_step_total(LLMCall.tokens_in, 0),
    tokens_out=_step_total(LLMCall.tokens_out, 0),
    cost_usd=_step_total(LLMCall.cost_usd, 0.0),
)


def pg_format(statement: Any) -> str:
    """A `text()` statement's SQL in psycopg's parameter style (`:name` -> `%(name)s`), for
    the hot path that sends it with psycopg directly."""
    sql = str(statement.text)
    assert "%" not in sql and "::" not in sql, "hot-path SQL uses CAST and no % literals"
    return re.sub(r":(\w+)", r"%(\1)s", sql)


# Lease upkeep, one statement each on every backend.
_EXTEND_LEASE = text(
    "UPDATE runs SET lease_until = :until WHERE id = :run_id AND lease_owner = :owner"
)
_RELEASE_LEASE = text(
    "UPDATE runs SET lease_owner = NULL, lease_until = NULL "
    "WHERE id = :run_id AND lease_owner = :owner"
)
# The same statements in psycopg's style, for the async hot path.
BEGIN_STEP = pg_format(_BEGIN_STEP_PG)
COMMIT_STEP = pg_format(_COMMIT_STEP_PG)
INSERT_CALL = pg_format(_INSERT_CALL_PG)
EXTEND_LEASE = pg_format(_EXTEND_LEASE)
RELEASE_LEASE = pg_format(_RELEASE_LEASE)
