"""scheduler and time sync: schedules, meter tags, order source, clock drift per meter and modem (issue 8)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("meters", "modems"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("clock_drift_s", sa.Integer(), nullable=True))
            batch.add_column(sa.Column("drift_measured_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=True))
    op.create_table(
        "meter_tags",
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name=op.f("fk_meter_tags_meter_id_meters"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("meter_id", "tag", name=op.f("pk_meter_tags")),
    )
    op.create_index("ix_meter_tags_tag", "meter_tags", ["tag", "meter_id"], unique=False)
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("every_minutes", sa.Integer(), nullable=True),
        sa.Column("group", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
    )
    op.create_index("ix_schedules_enabled_next", "schedules", ["enabled", "next_run_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_schedules_enabled_next", table_name="schedules")
    op.drop_table("schedules")
    op.drop_index("ix_meter_tags_tag", table_name="meter_tags")
    op.drop_table("meter_tags")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("source")
    for table in ("modems", "meters"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("drift_measured_at")
            batch.drop_column("clock_drift_s")
