"""Engines and migrations: one place decides how OSOS talks to SQLite or PostgreSQL."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, event, inspect, make_url, text
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


def private_sqlite_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask, typically 0644), and take
    group/other bits from an existing file and its -wal/-shm companions. SQLite gives -wal/-shm the mode of the
    database file, so they follow. HES-59: records readable only by authorized users."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as exc:  # e.g. a read-only location: SQLite reports the real problem when it opens the file
        log.warning("cannot create %s: %s", path, exc)
        return
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
            if mode & 0o077:
                os.chmod(candidate, mode & 0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot restrict the mode of %s: %s", candidate, exc)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def to_utc(value: datetime) -> datetime:
    """A time to compare stored times with, in UTC (naive = UTC). SQLite keeps UTC times as text and compares them
    as text, so an offset must be resolved before a query, not left to the driver."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings each backend needs for concurrent use."""
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path is not None:
            private_sqlite_file(path)
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


@contextmanager
def _schema_change(engine: Engine) -> Iterator[Connection]:
    """A connection for a migration. SQLite alters a table by copying it and dropping the old one (Alembic's batch
    mode); with foreign keys on, dropping a table that other rows point at fails. Foreign keys can only be switched
    outside a transaction, so they are off for the migration and ``PRAGMA foreign_key_check`` proves the result
    consistent before it commits."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows pointing at nothing: {broken[:5]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start)."""
    from alembic import command

    with _schema_change(engine) as conn:
        command.upgrade(_alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (every migration has a downgrade; upgrade/rollback in docs)."""
    from alembic import command

    with _schema_change(engine) as conn:
        command.downgrade(_alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return MigrationContext.configure(conn).get_current_revision()


def sqlite_url(data_dir: Path) -> str:
    """The data dir's SQLite file; the dir is created (or tightened to) 0700."""
    from osos.config import ensure_private_dir

    ensure_private_dir(data_dir)
    return f"sqlite:///{(data_dir / 'osos.db').resolve()}"


@lru_cache(maxsize=128)
def _insert_ignore_stmt(table: Any, columns: tuple[str, ...], conflict: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (...) DO NOTHING RETURNING pk`` as a typed text statement: SQLAlchemy 2.0 does not
    cache the compiled form of dialect ``on_conflict`` constructs, and this runs several times per packet. The
    syntax is the same on SQLite (>= 3.35) and PostgreSQL; bind types come from the table, so JSON and
    datetimes are converted as usual."""
    pk = list(table.primary_key.columns)[0].name
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING RETURNING {pk}"
    )
    return text(sql).bindparams(*(bindparam(c, type_=table.c[c].type) for c in columns))


@lru_cache(maxsize=128)
def _upsert_stmt(table: Any, columns: tuple[str, ...], conflict: tuple[str, ...], update_cols: tuple[str, ...],
                 only_if_newer: str | None) -> Any:
    sets = ", ".join(f"{c} = excluded.{c}" for c in update_cols)
    where = f" WHERE {table.name}.{only_if_newer} <= excluded.{only_if_newer}" if only_if_newer else ""
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)}) "
        f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}{where}"
    )
    return text(sql).bindparams(*(bindparam(c, type_=table.c[c].type) for c in columns))


def insert_or_ignore(conn: Connection, table: Any, values: dict[str, Any], conflict: list[str]) -> Any | None:
    """INSERT that silently skips a row whose unique key exists; returns the new primary key or None.
    Both SQLite (>= 3.35) and PostgreSQL support ON CONFLICT DO NOTHING ... RETURNING. The statement is built
    once per table (values are bound parameters), so the hot ingest path does not recompile it."""
    row = conn.execute(_insert_ignore_stmt(table, tuple(values), tuple(conflict)), values).first()
    return row[0] if row else None


def upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], conflict: list[str], update_cols: list[str],
           only_if_newer: str | None = None) -> None:
    """INSERT ... ON CONFLICT DO UPDATE of ``update_cols`` for many rows in one executemany; with
    ``only_if_newer`` the stored row is replaced only when the new row's value of that column is later (so an old
    packet arriving late never hides a newer one)."""
    if rows:
        stmt = _upsert_stmt(table, tuple(rows[0]), tuple(conflict), tuple(update_cols), only_if_newer)
        conn.execute(stmt, rows)
