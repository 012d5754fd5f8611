"""trust boundary: modem provisioning state, raw-message trust flags, token generations and revocations

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 14:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("modems") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("mqtt_username", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("transport", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("provisioned_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("provisioned_by", sa.String(length=64), nullable=True))
    with op.batch_alter_table("raw_messages") as batch:
        batch.add_column(sa.Column("flags", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("payload_size", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("token_generation")
    with op.batch_alter_table("raw_messages") as batch:
        batch.drop_column("payload_size")
        batch.drop_column("flags")
    with op.batch_alter_table("modems") as batch:
        batch.drop_column("provisioned_by")
        batch.drop_column("provisioned_at")
        batch.drop_column("transport")
        batch.drop_column("mqtt_username")
        batch.drop_column("status")
