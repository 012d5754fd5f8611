"""Two head-end processes' scheduler threads on one PostgreSQL (HES-10): a due schedule is run by one of them,
once, and its next run moves to the next slot. (The exactly-once race is proven with answered orders between
rounds in test_scheduler.py; here the real HeadEnd wiring is checked.)

covers HES-10
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import select, update

from osos.headend.inventory import register_modem
from osos.headend.scheduler import add_schedule
from osos.store.db import as_utc, utcnow
from osos.store.schema import meters, orders, schedules

pytestmark = pytest.mark.integration


def test_two_headends_run_a_due_schedule_once(start_headend, wait_until) -> None:
    first, engine = start_headend()
    second, _ = start_headend()
    now = utcnow()
    with engine.begin() as conn:
        modem = register_modem(conn, "OSS", "GWHE2", by="test", now=now)
        for serial in ("a", "b", "c"):
            conn.execute(meters.insert().values(flag="MKL", serial=serial, modem_id=modem, first_seen_at=now))
        made = add_schedule(conn, name="every-day", kind="read", every_minutes=1440, priority=7,
                            tz=first.settings.timezone, now=now)
        # due since an hour ago: as if the head-ends had been down over the run
        conn.execute(update(schedules).values(next_run_at=now - timedelta(hours=1)))

    def ran():  # type: ignore[no-untyped-def]
        with engine.connect() as conn:
            return conn.execute(select(schedules.c.last_run_at)).scalar_one()

    wait_until(ran, timeout=30, what="a scheduler thread to run the schedule")
    with engine.connect() as conn:
        got = conn.execute(select(orders.c.meter_id, orders.c.source, orders.c.priority, orders.c.created_by)).all()
        row = conn.execute(select(schedules)).mappings().one()
    assert len(got) == 3
    assert {(r.source, r.priority, r.created_by) for r in got} == {("schedule", 7, "schedule:every-day")}
    # once a day at local midnight: the Istanbul (UTC+3) midnight after the run
    local_run = as_utc(row["last_run_at"]) + timedelta(hours=3)
    midnight = datetime.combine(local_run.date() + timedelta(days=1), time(), tzinfo=UTC) - timedelta(hours=3)
    assert as_utc(row["next_run_at"]) == midnight
    assert made["id"] == row["id"]
