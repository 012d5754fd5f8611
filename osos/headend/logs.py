"""Log categories, retention and reads (HES-59: records kept safely, readable only by authorized users, each
category for its own period).

The categories and periods are data (``osos/data/logs/categories.toml``, from the spec's Çizelge 3). The code
writes short category names (``write_log(conn, "parsing", ...)``, ``record_security_event`` → ``security``); the
table maps them onto the spec's categories. ``purge(conn, now)`` deletes what has outlived its category's
period; the head-end runs it periodically and ``osos logs purge`` on demand. ``now`` is a parameter so tests
drive it with a fake clock.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, select, true
from sqlalchemy.engine import Connection

from osos.store.db import as_utc, to_utc
from osos.store.schema import log_records

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "logs" / "categories.toml"
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Category:
    name: str  # the spec category id (communication, order_bottleneck, unauthorized_access …)
    retention_days: int
    stored: tuple[str, ...]  # log_records.category values that belong to it
    en: str
    tr: str

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)


@cache
def categories() -> dict[str, Category]:
    """The packaged table, loaded once."""
    with DATA_FILE.open("rb") as fh:
        doc = tomllib.load(fh)
    out = {}
    for name, entry in doc["categories"].items():
        days = int(entry["retention_days"])
        if days < 1:
            raise ValueError(f"{DATA_FILE}: category {name}: retention_days must be at least 1")
        out[name] = Category(name, days, tuple(entry["stored"]), entry["en"], entry["tr"])
    return out


def category_of(stored: str) -> Category | None:
    """The spec category of a stored category name; None for one the table does not list (never purged)."""
    return next((c for c in categories().values() if stored in c.stored), None)


def purge(conn: Connection, now: datetime) -> dict[str, int]:
    """Delete the records older than their category's retention at ``now``; returns deleted rows per spec
    category."""
    deleted = {}
    for cat in categories().values():
        cutoff = to_utc(now) - cat.retention
        result = conn.execute(
            delete(log_records).where(log_records.c.category.in_(cat.stored), log_records.c.at < cutoff)
        )
        deleted[cat.name] = int(result.rowcount or 0)
    return deleted


def normalize_level(level: Any) -> str:
    """A sender's level word (a modem's log) as one of LEVELS; ``info`` when unknown."""
    word = str(level or "").strip().lower()
    aliases = {"warn": "warning", "err": "error", "fatal": "error", "critical": "error", "trace": "debug",
               "information": "info", "notice": "info"}
    word = aliases.get(word, word)
    return word if word in LEVELS else "info"


def query(
    conn: Connection,
    *,
    category: str | None = None,
    level: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Log records newest first; ``category`` is a stored name (``security``) or a spec category
    (``unauthorized_access``). Returns (total matching, this page)."""
    where = []
    if category is not None:
        spec = categories().get(category)
        where.append(log_records.c.category.in_(spec.stored) if spec else log_records.c.category == category)
    if level is not None:
        where.append(log_records.c.level == level)
    if since is not None:
        where.append(log_records.c.at >= to_utc(since))
    if until is not None:
        where.append(log_records.c.at < to_utc(until))
    cond = and_(true(), *where)
    total = int(conn.execute(select(func.count()).select_from(log_records).where(cond)).scalar_one())
    rows = conn.execute(
        select(log_records).where(cond).order_by(log_records.c.at.desc(), log_records.c.id.desc())
        .limit(limit).offset(offset)
    )
    items = []
    for r in rows:
        spec = category_of(r.category)
        items.append({"id": r.id, "at": as_utc(r.at), "category": r.category,
                      "spec_category": spec.name if spec else None, "level": r.level, "message": r.message,
                      "raw_id": r.raw_id, "detail": r.detail})
    return total, items
