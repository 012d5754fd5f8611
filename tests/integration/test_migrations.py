"""Every Alembic revision upgrades and downgrades (upgrade/rollback), on SQLite and PostgreSQL, with rows in the
tables it touches: step down one revision at a time to the base, then up again, and the schema at head is what
``osos.store.schema`` declares (no autogenerate difference).

covers HES-5 (nothing lost by a schema change)
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select

from osos.headend import orders
from osos.headend.inventory import register_modem
from osos.store.db import _alembic_config, current_revision, downgrade, make_engine, migrate
from osos.store.schema import metadata, meters, modems

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _revisions(engine) -> list[str]:  # type: ignore[no-untyped-def]
    """Head first, base last, read from the migration scripts themselves."""
    with engine.connect() as conn:
        script = ScriptDirectory.from_config(_alembic_config(conn))
    return [rev.revision for rev in script.walk_revisions()]


def test_every_revision_downgrades_and_upgrades_again_with_data(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            modem_id = register_modem(conn, "OSS", "MIGR1", now=T0)
            meter_id = conn.execute(insert(meters).values(flag="MKL", serial="900001", modem_id=modem_id,
                                                          first_seen_at=T0)).inserted_primary_key[0]
            orders.create_order(conn, "read", meter_id=meter_id, created_by="test", now=T0)
        revisions = _revisions(engine)
        assert revisions[-1] == "0001" and len(revisions) >= 5
        for target in revisions[1:]:  # one step down at a time, down to the first revision
            downgrade(engine, target)
            assert current_revision(engine) == target
        migrate(engine)
        assert current_revision(engine) == revisions[0]
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.execute(select(func.count()).select_from(modems)).scalar_one() == 1
            assert conn.execute(select(func.count()).select_from(meters)).scalar_one() == 1
    finally:
        engine.dispose()
