"""alarms and logs (issue 9): alarm normalized type, severity, source, state (raised/acknowledged/cleared) with
who and when, dedup key of open alarms; log retention needs no column (categories are data, osos/headend/logs.py)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("source_type", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="raised"))
        batch.add_column(sa.Column("open_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("repeats", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("acked_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cleared_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("detail", sa.JSON(), nullable=True))
        batch.create_unique_constraint(op.f("uq_alarms_open_key"), ["open_key"])
        batch.create_index(op.f("ix_alarms_state_received"), ["state", "received_at"], unique=False)
        batch.create_index(op.f("ix_alarms_received"), ["received_at"], unique=False)
    # alarms stored before: what the device sent is all there is
    op.execute("UPDATE alarms SET source = 'device', source_type = type, severity = level")


def downgrade() -> None:
    with op.batch_alter_table("alarms") as batch:
        batch.drop_index(op.f("ix_alarms_received"))
        batch.drop_index(op.f("ix_alarms_state_received"))
        batch.drop_constraint(op.f("uq_alarms_open_key"), type_="unique")
        for column in ("detail", "cleared_by", "cleared_at", "acked_by", "acked_at", "last_seen_at", "repeats",
                       "open_key", "state", "severity", "source_type", "source"):
            batch.drop_column(column)
