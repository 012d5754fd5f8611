"""Schedules: recurring orders for a device group (HES-10, issue 8 item 5).

A schedule names an order kind, a priority, a device group (``osos.headend.groups``) and when it runs: a 5-field
cron expression or "every N minutes" aligned to local midnight, both evaluated in the configured time zone
(``Settings.timezone``). Cron expressions are evaluated by ``cronsim`` (BSD-3-Clause, maintained, pure Python,
Debian-cron semantics including DST transitions); ``croniter`` was archived by its maintainer, and a home-grown
parser would be one more thing to keep correct.

The state is in the database (``schedules.next_run_at``), so schedules survive restarts, and N head-end processes
can run :func:`run_due` side by side: a run is claimed by a conditional UPDATE that moves ``next_run_at`` on from
the value the process read, in the same transaction that creates the run's orders. Only one process's UPDATE
matches (on PostgreSQL the second waits for the first's row lock, then finds the value changed; SQLite serialises
writers), so each due run creates its orders exactly once, and a crash before the commit leaves it due.

Missed runs (the head-end was down over one or more due times): the schedule runs ONCE when it is next checked,
and its next run is the first due time after that moment; runs are never replayed N times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from osos.headend import orders
from osos.headend.groups import GroupError, group_meters, normalize_group
from osos.store.db import as_utc, utcnow
from osos.store.schema import schedules

log = logging.getLogger(__name__)

MINUTES_PER_DAY = 1440
NAME_MAX = 64


class ScheduleError(ValueError):
    """A schedule that cannot be created as asked; the message says why."""


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {tz!r}") from None


def check_cron(expr: str) -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), normalised to single spaces."""
    if not isinstance(expr, str) or len(expr) > 128:
        raise ScheduleError("cron must be a string of at most 128 characters")
    parts = expr.split()
    if len(parts) != 5:
        raise ScheduleError("cron needs 5 fields: minute hour day-of-month month day-of-week")
    try:
        CronSim(" ".join(parts), datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ScheduleError(f"cron {expr!r}: {exc}") from None
    return " ".join(parts)


def check_every(minutes: Any) -> int:
    """Every N minutes, aligned to local midnight: N must divide a day so each day has the same slots."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MINUTES_PER_DAY \
            or MINUTES_PER_DAY % minutes:
        raise ScheduleError("every_minutes must divide 1440 (a day): 1, 5, 15, 30, 60, 90, 120, ... 1440")
    return minutes


def next_run(*, cron: str | None, every_minutes: int | None, after: datetime, tz: str) -> datetime:
    """The first due time strictly after ``after`` (UTC in, UTC out), evaluated in time zone ``tz``."""
    zone = _zone(tz)
    local = as_utc(after).astimezone(zone)  # type: ignore[union-attr]
    if cron is not None:
        return next(CronSim(cron, local)).astimezone(UTC)
    if every_minutes is None:
        raise ScheduleError("a schedule needs cron or every_minutes")
    slot = (local.hour * 60 + local.minute) // every_minutes + 1
    day = local.date()
    if slot * every_minutes >= MINUTES_PER_DAY:
        day, slot = day + timedelta(days=1), 0
    wall = datetime.combine(day, time()) + timedelta(minutes=slot * every_minutes)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _view(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "last_run_at", "next_run_at"):
        value = as_utc(out.get(key))
        out[key] = value.isoformat() if value else None
    return out


def add_schedule(
    conn: Connection,
    *,
    name: str,
    kind: str,
    cron: str | None = None,
    every_minutes: int | None = None,
    group: dict[str, Any] | None = None,
    priority: int = 5,
    created_by: str | None = None,
    tz: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create a schedule; its first run is the first due time after ``now``. Raises ScheduleError."""
    now = now or utcnow()
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > NAME_MAX:
        raise ScheduleError(f"name must be 1..{NAME_MAX} characters")
    name = name.strip()
    if (cron is None) == (every_minutes is None):
        raise ScheduleError("give exactly one of cron or every_minutes")
    cron = check_cron(cron) if cron is not None else None
    every_minutes = check_every(every_minutes) if every_minutes is not None else None
    try:
        orders.validate_request(kind, None)  # a schedule carries no request: its kind must need none
    except orders.OrderError as exc:
        raise ScheduleError(f"kind {kind!r} cannot be scheduled: {exc}") from None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ScheduleError("priority must be 0..9")
    try:
        group = normalize_group(group)
    except GroupError as exc:
        raise ScheduleError(str(exc)) from None
    if conn.execute(select(schedules.c.id).where(schedules.c.name == name)).first() is not None:
        raise ScheduleError(f"a schedule named {name!r} exists")
    values = {"name": name, "kind": kind, "cron": cron, "every_minutes": every_minutes, "group": group,
              "priority": priority, "enabled": True, "created_by": created_by, "created_at": now,
              "next_run_at": next_run(cron=cron, every_minutes=every_minutes, after=now, tz=tz)}
    try:
        with conn.begin_nested():
            new_id = conn.execute(insert(schedules).values(**values)).inserted_primary_key[0]
    except IntegrityError:  # a concurrent add with the same name won
        raise ScheduleError(f"a schedule named {name!r} exists") from None
    return get_schedule(conn, int(new_id))  # type: ignore[return-value]


def get_schedule(conn: Connection, schedule_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(schedules).where(schedules.c.id == schedule_id)).mappings().first()
    return None if row is None else _view(row)


def list_schedules(conn: Connection) -> list[dict[str, Any]]:
    return [_view(r) for r in conn.execute(select(schedules).order_by(schedules.c.name)).mappings()]


def remove_schedule(conn: Connection, ref: int | str) -> bool:
    """Delete a schedule by id or name; orders it already created stay."""
    where = schedules.c.id == ref if isinstance(ref, int) else schedules.c.name == ref
    return conn.execute(delete(schedules).where(where)).rowcount == 1


@dataclass
class Run:
    """One claimed run: which orders it queued (an open identical order is answered, HES-12) and which meters
    could not get one (e.g. no modem, or a TLS-only kind to a plain session), with the reason."""

    schedule_id: int
    name: str
    due_at: datetime
    order_ids: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def run_due(engine: Engine, *, tz: str, now: datetime | None = None) -> list[Run]:
    """Run every enabled schedule whose next_run_at has come, each in its own transaction, exactly once across
    processes (see the module doc); returns the runs this process claimed."""
    now = now or utcnow()
    with engine.connect() as conn:
        due = conn.execute(
            select(schedules.c.id, schedules.c.next_run_at)
            .where(and_(schedules.c.enabled.is_(True), schedules.c.next_run_at <= now))
            .order_by(schedules.c.next_run_at, schedules.c.id)
        ).all()
    runs = []
    for schedule_id, seen_next in due:
        try:
            with engine.begin() as conn:
                run = _claim_and_run(conn, int(schedule_id), seen_next, tz=tz, now=now)
        except Exception:  # one broken schedule (e.g. a row edited by hand) must not stop the others
            log.exception("schedule %s could not run", schedule_id)
            continue
        if run is not None:
            runs.append(run)
    return runs


def _claim_and_run(conn: Connection, schedule_id: int, seen_next: datetime, *, tz: str,
                   now: datetime) -> Run | None:
    row = conn.execute(select(schedules).where(schedules.c.id == schedule_id)).mappings().first()
    if row is None or as_utc(row["next_run_at"]) != as_utc(seen_next):
        return None  # removed, or another process ran it already
    following = next_run(cron=row["cron"], every_minutes=row["every_minutes"], after=now, tz=tz)
    claimed = conn.execute(
        update(schedules)
        .where(and_(schedules.c.id == schedule_id, schedules.c.next_run_at == seen_next))
        .values(next_run_at=following, last_run_at=now)
    ).rowcount == 1
    if not claimed:
        return None
    run = Run(schedule_id, row["name"], as_utc(seen_next))  # type: ignore[arg-type]
    for meter_id in list(group_meters(conn, row["group"] or {})):
        try:
            run.order_ids.append(orders.create_order(conn, row["kind"], meter_id=meter_id, priority=row["priority"],
                                                     created_by=f"schedule:{row['name']}", source="schedule",
                                                     now=now))
        except orders.OrderError as exc:
            run.skipped[meter_id] = str(exc)
    if run.skipped:
        from osos.headend.ingest import write_log

        write_log(conn, "orders", "warning", f"schedule {row['name']!r}: {len(run.skipped)} meter(s) got no "
                  "order", detail={str(k): v for k, v in list(run.skipped.items())[:50]}, now=now)
    log.info("schedule %r ran: %d order(s), %d skipped", row["name"], len(run.order_ids), len(run.skipped))
    return run
