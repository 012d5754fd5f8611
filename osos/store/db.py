"""Engines and migrations: one place decides how OSOS talks to SQLite or PostgreSQL."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC, so say so."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings each backend needs for concurrent use."""
    if url.startswith("sqlite"):
        # WAL lets the CLI (e.g. `osos user create`) write while the demo runs; busy_timeout waits for locks
        # instead of failing. NullPool: a SQLite connection is cheap and must not be shared across threads.
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("osos.store").joinpath("migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()


def sqlite_url(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / 'osos.db').resolve()}"


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


@lru_cache(maxsize=64)
def _insert_ignore_stmt(dialect: str, table: Any, conflict: tuple[str, ...]) -> Any:
    pk = list(table.primary_key.columns)[0]
    return _dialect_insert(dialect)(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(pk)


@lru_cache(maxsize=64)
def _upsert_stmt(dialect: str, table: Any, conflict: tuple[str, ...], update_cols: tuple[str, ...],
                 only_if_newer: str | None) -> Any:
    stmt = _dialect_insert(dialect)(table)
    where = table.c[only_if_newer] <= stmt.excluded[only_if_newer] if only_if_newer is not None else None
    return stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update_cols}, where=where
    )


def insert_or_ignore(conn: Connection, table: Any, values: dict[str, Any], conflict: list[str]) -> Any | None:
    """INSERT that silently skips a row whose unique key exists; returns the new primary key or None.
    Both SQLite (>= 3.35) and PostgreSQL support ON CONFLICT DO NOTHING ... RETURNING. The statement is built
    once per table (values are bound parameters), so the hot ingest path does not recompile it."""
    row = conn.execute(_insert_ignore_stmt(conn.dialect.name, table, tuple(conflict)), values).first()
    return row[0] if row else None


def upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], conflict: list[str], update_cols: list[str],
           only_if_newer: str | None = None) -> None:
    """INSERT ... ON CONFLICT DO UPDATE of ``update_cols`` for many rows in one executemany; with
    ``only_if_newer`` the stored row is replaced only when the new row's value of that column is later (so an old
    packet arriving late never hides a newer one)."""
    if rows:
        stmt = _upsert_stmt(conn.dialect.name, table, tuple(conflict), tuple(update_cols), only_if_newer)
        conn.execute(stmt, rows)
