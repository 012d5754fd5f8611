"""Alembic environment: OSOS always hands in a live connection (see osos.store.db.migrate)."""

from __future__ import annotations

from alembic import context

from osos.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when someone runs plain `alembic`
    raise RuntimeError("run migrations through `osos migrate` or osos.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
