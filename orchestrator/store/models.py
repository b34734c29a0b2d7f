"""SQLAlchemy models: the durable record of every run.

The unique constraints carry the correctness argument: (run, version) on checkpoints and
steps makes a duplicated step commit fail instead of double-applying; (run, step, call
index) on llm_calls makes a re-executed step replay a paid call instead of paying again;
the outbox key makes every chat post idempotent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware on every backend: SQLite hands back naive values otherwise."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class RunStatus:
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed"

    TERMINAL = frozenset({FINISHED, ABORTED, FAILED})


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    origin_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    team: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED, index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(128))
    thread: Mapped[str | None] = mapped_column(String(128))
    requester: Mapped[str] = mapped_column(String(128))
    answer: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    extra_steps: Mapped[int] = mapped_column(Integer, default=0)
    extra_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    extra_dollars: Mapped[float] = mapped_column(Float, default=0.0)
    extra_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cleared_version: Mapped[int] = mapped_column(Integer, default=0)
    trace_parent: Mapped[str | None] = mapped_column(String(128))  # W3C traceparent of the run
    opened_ref: Mapped[str | None] = mapped_column(String(128))
    progress_ref: Mapped[str | None] = mapped_column(String(128))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "version", name="uq_checkpoint_run_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # "snapshot": the whole state; "delta": the reducer updates since the previous version.
    # Loading a version folds the deltas since the last snapshot at or before it.
    kind: Mapped[str] = mapped_column(String(8), default="snapshot")
    state: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "version", name="uq_step_run_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # the checkpoint version this step produced
    node: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


class LLMCall(Base):
    """The ledger of paid model calls, and the replay log for re-executed steps."""

    __tablename__ = "llm_calls"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "call_index", name="uq_llm_call"),
        Index("ix_llm_calls_team_created", "team", "created_at"),
        Index("ix_llm_calls_channel_created", "channel", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    call_index: Mapped[int] = mapped_column(Integer)
    team: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EscalationStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"  # a tool call refused; the run goes on without it
    ABORTED = "aborted"
    EXPIRED = "expired"


class Escalation(Base):
    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    guard: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    grant: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=EscalationStatus.PENDING, index=True)
    message_ref: Mapped[str | None] = mapped_column(String(128))
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_platform: Mapped[str | None] = mapped_column(String(32))
    decided_channel: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Tool approvals: the calls waiting ({"calls": [...]}); the approver's reason or guidance.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(Text)


class ToolCallStatus:
    STARTED = "started"  # recorded before the call; without a result after a crash: in doubt
    DONE = "done"


class ToolCallRecord(Base):
    """The tool ledger: each call recorded before it runs and its result when it returns.

    A call's identity is where the model asked for it: the model reply's (step, call index)
    and the call's position in that reply. Replies are replayed from llm_calls, so a step
    re-executed after a crash finds the same identity and replays the recorded result.
    """

    __tablename__ = "tool_calls"
    __table_args__ = (
        UniqueConstraint("run_id", "origin_step", "origin_index", "position", name="uq_tool_call"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    origin_step: Mapped[int] = mapped_column(Integer)
    origin_index: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)  # the step that ran it
    worker: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(200))  # as people read it: server.tool
    server: Mapped[str | None] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ToolCallStatus.STARTED)
    decision: Mapped[str] = mapped_column(String(32), default="allowed")
    decided_by: Mapped[str | None] = mapped_column(String(128))
    result: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Every decision and every refused attempt: who, when, where, what."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    escalation_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxStatus:
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    COALESCED = "coalesced"
    FAILED = "failed"


class OutboxItem(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "status", "platform", "run_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_ref: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class InboundEvent(Base):
    """Durable dedup keys for platform retries (Slack retries for about five minutes)."""

    __tablename__ = "inbound_events"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AlertGroupStatus:
    FIRING = "firing"  # admitted: its investigation run was (or is being) started
    HELD = "held"  # over its channel's rate: waits for Alertmanager to send it again
    RESOLVED = "resolved"


class AlertGroup(Base):
    """One incident of an Alertmanager alert group: the durable dedup record of its notifications.

    `open_key` (a hash of Alertmanager's group key) is unique while the incident is open and
    cleared when it resolves, so repeats, retries and replicas of one notification find the
    open row, and the group firing again after it resolved opens a new incident. `alerts`
    maps each alert's fingerprint to its startsAt: an alert instance is both.
    """

    __tablename__ = "alert_groups"
    __table_args__ = (
        Index("ix_alert_groups_channel_started", "platform", "channel", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), index=True)
    group_key: Mapped[str] = mapped_column(Text)
    receiver: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    alerts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # While one delivery starts the run, copies arriving meanwhile leave it alone.
    starting_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertChannelState(Base):
    """Per chat channel: the storm of held alert groups and its one "N more alerts held" message.

    Its row is also the lock that serialises admission decisions for the channel.
    """

    __tablename__ = "alert_channels"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(128), primary_key=True)
    storm: Mapped[int] = mapped_column(Integer, default=0)  # numbers the storms, one message each
    held: Mapped[int] = mapped_column(Integer, default=0)
    held_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_held_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notice_ref: Mapped[str | None] = mapped_column(String(128))
    notice_count: Mapped[int] = mapped_column(Integer, default=0)
    notice_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notice_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
