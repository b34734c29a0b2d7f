"""alert groups: the durable dedup record of Alertmanager notifications, and channel storms

Revision ID: 0002_alert_groups
Revises: 0001
Create Date: 2026-11-28 05:13:36.374759
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import orchestrator.store.models

revision = "0002_alert_groups"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_channels",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("storm", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("held_names", sa.JSON(), nullable=False),
        sa.Column(
            "last_held_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("notice_ref", sa.String(length=128), nullable=True),
        sa.Column("notice_count", sa.Integer(), nullable=False),
        sa.Column(
            "notice_lease_until",
            orchestrator.store.models.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("notice_error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("platform", "channel"),
    )
    op.create_table(
        "alert_groups",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("open_key", sa.String(length=64), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("receiver", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "enqueued_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "starting_until", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "started_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "resolved_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "created_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", orchestrator.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index(
        "ix_alert_groups_channel_started",
        "alert_groups",
        ["platform", "channel", "started_at"],
        unique=False,
    )
    op.create_index(op.f("ix_alert_groups_key_hash"), "alert_groups", ["key_hash"], unique=False)
    op.create_index(op.f("ix_alert_groups_run_id"), "alert_groups", ["run_id"], unique=False)
    op.create_index(op.f("ix_alert_groups_status"), "alert_groups", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alert_groups_status"), table_name="alert_groups")
    op.drop_index(op.f("ix_alert_groups_run_id"), table_name="alert_groups")
    op.drop_index(op.f("ix_alert_groups_key_hash"), table_name="alert_groups")
    op.drop_index("ix_alert_groups_channel_started", table_name="alert_groups")
    op.drop_table("alert_groups")
    op.drop_table("alert_channels")
