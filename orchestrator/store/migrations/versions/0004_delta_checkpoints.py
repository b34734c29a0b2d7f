"""delta checkpoints: a kind per checkpoint; existing full states become deltas between
snapshots kept every SNAPSHOT_EVERY versions (and at each run's first and latest version)

Revision ID: 0004_delta_checkpoints
Revises: 0003_tool_calls
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from orchestrator import state as st

revision = "0004_delta_checkpoints"
down_revision = "0003_tool_calls"
branch_labels = None
depends_on = None

SNAPSHOT_EVERY = 100


def _checkpoints() -> sa.TableClause:
    return sa.table(
        "checkpoints",
        sa.column("id", sa.BigInteger),
        sa.column("run_id", sa.BigInteger),
        sa.column("version", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("state", sa.Text),
    )


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), nullable=False, server_default="snapshot")
        )
    connection = op.get_bind()
    table = _checkpoints()
    runs = connection.execute(sa.select(table.c.run_id).distinct()).scalars().all()
    for run_id in runs:
        rows = connection.execute(
            sa.select(table.c.id, table.c.version, table.c.state)
            .where(table.c.run_id == run_id)
            .order_by(table.c.version)
        ).all()
        previous: st.State | None = None
        for position, row in enumerate(rows):
            current = st.loads(row.state)
            keep = (
                previous is None or row.version % SNAPSHOT_EVERY == 0 or position == len(rows) - 1
            )
            delta = None if keep or previous is None else st.diff(previous, current)
            if delta is not None:
                connection.execute(
                    sa.update(table)
                    .where(table.c.id == row.id)
                    .values(kind="delta", state=json.dumps(delta, sort_keys=True))
                )
            previous = current


def downgrade() -> None:
    connection = op.get_bind()
    table = _checkpoints()
    rows = connection.execute(
        sa.select(table.c.id, table.c.run_id, table.c.kind, table.c.state).order_by(
            table.c.run_id, table.c.version
        )
    ).all()
    current: st.State = {}
    run = None
    for row in rows:
        if row.run_id != run or row.kind == "snapshot":
            run, current = row.run_id, st.loads(row.state)
            continue
        current = st.apply(current, json.loads(row.state))
        connection.execute(
            sa.update(table).where(table.c.id == row.id).values(state=st.dumps(current))
        )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("kind")
