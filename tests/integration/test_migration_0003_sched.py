"""Migration 0003 (scheduler and time sync): upgrade gives what osos.store.schema says, downgrade to 0002 removes
it, upgrade again works; on SQLite and the real PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from osos.store.db import downgrade, make_engine, migrate
from osos.store.schema import metadata

pytestmark = pytest.mark.integration

MINE = {"schedules", "meter_tags"}
MINE_COLUMNS = {("meters", "clock_drift_s"), ("meters", "drift_measured_at"), ("modems", "clock_drift_s"),
                ("modems", "drift_measured_at"), ("orders", "source")}


def _mentions_mine(diff) -> bool:  # type: ignore[no-untyped-def]
    text = repr(diff)
    return any(t in text for t in MINE) or any(c in text for _, c in MINE_COLUMNS)


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        assert [d for d in diffs if _mentions_mine(d)] == []
        downgrade(engine, "0002")
        with engine.connect() as conn:
            insp = inspect(conn)
            assert not MINE & set(insp.get_table_names())
            for table, column in MINE_COLUMNS:
                assert column not in {c["name"] for c in insp.get_columns(table)}
        migrate(engine)
        with engine.connect() as conn:
            insp = inspect(conn)
            assert set(insp.get_table_names()) >= MINE
            for table, column in MINE_COLUMNS:
                assert column in {c["name"] for c in insp.get_columns(table)}
    finally:
        engine.dispose()
