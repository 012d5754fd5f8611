"""order lifecycle (issue 8): attempts, retries, deadlines, sources, dedup/exclusive keys, per-modem concurrency;
priority flipped to 9 = most urgent

Priority note: before this revision 0 was the most urgent; from here 9 is. Every stored order's priority becomes
``9 - priority`` so its urgency is kept (the downgrade flips it back), and so does every schedule's. Clients
sending priorities must flip theirs. ``orders.source`` exists since 0003 (nullable): it becomes NOT NULL, default
"api".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'running')"
FILTER_INDEXES = {
    "ix_orders_modem_status": ["modem_id", "status"],
    "ix_orders_meter_id": ["meter_id", "id"],
    "ix_orders_kind": ["kind", "id"],
    "ix_orders_created_by": ["created_by", "id"],
    "ix_orders_source": ["source", "id"],
    "ix_orders_created_at": ["created_at"],
}


def upgrade() -> None:
    with op.batch_alter_table("modems") as batch:
        batch.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
    op.execute("UPDATE orders SET source = 'api' WHERE source IS NULL")
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("source", existing_type=sa.String(length=16), nullable=False, server_default="api")
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dedup_key", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("exclusive_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("expected_parts", sa.Integer(), nullable=True))
        batch.drop_index("ix_orders_status_priority")
    op.execute("UPDATE orders SET priority = 9 - priority")
    op.execute("UPDATE schedules SET priority = 9 - priority")
    op.create_index("ix_orders_claim", "orders", ["status", sa.text("priority DESC"), "id"], unique=False)
    for name, columns in FILTER_INDEXES.items():
        op.create_index(name, "orders", columns, unique=False)
    op.create_index("uq_orders_open_dedup", "orders", ["dedup_key"], unique=True,
                    postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    op.create_index("ix_orders_open_exclusive", "orders", ["exclusive_key"], unique=False,
                    postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    op.create_index("ix_orders_pending_expiry", "orders", ["expires_at"], unique=False,
                    postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.create_table(
        "order_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_order_attempts_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_attempts")),
        sa.UniqueConstraint("order_id", "attempt", name="uq_order_attempts_order_id"),
    )


def downgrade() -> None:
    op.drop_table("order_attempts")
    op.drop_index("ix_orders_pending_expiry", table_name="orders")
    op.drop_index("ix_orders_open_exclusive", table_name="orders")
    op.drop_index("uq_orders_open_dedup", table_name="orders")
    for name in FILTER_INDEXES:
        op.drop_index(name, table_name="orders")
    op.drop_index("ix_orders_claim", table_name="orders")
    # statuses the old lifecycle does not know become its nearest: expired -> failed, cancelled -> failed
    op.execute("UPDATE orders SET status = 'failed' WHERE status IN ('expired', 'cancelled')")
    op.execute("UPDATE orders SET priority = 9 - priority")
    op.execute("UPDATE schedules SET priority = 9 - priority")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("expected_parts")
        batch.drop_column("exclusive_key")
        batch.drop_column("dedup_key")
        batch.drop_column("max_attempts")
        batch.drop_column("expires_at")
        batch.drop_column("not_before")
        batch.alter_column("source", existing_type=sa.String(length=16), nullable=True, server_default=None)
        batch.create_index("ix_orders_status_priority", ["status", "priority", "id"], unique=False)
    # not a batch (table copy) on SQLite: orders and meters point at modems; SQLite >= 3.35 drops a column itself
    op.drop_column("modems", "max_concurrent")
