"""The scheduler (HES-10, issue 8 item 5) on SQLite and the real PostgreSQL, with a fake clock: schedules are kept
in the database (a new engine, as after a restart, carries on), a due run queues one order per meter of its group
with the schedule's kind, priority and source "schedule", a missed run after downtime runs once, and two
schedulers on two engines racing over the same due runs create each run's orders exactly once.

covers HES-10, HES-12
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from osos.headend import orders as order_api
from osos.headend.groups import set_tags
from osos.headend.inventory import register_modem
from osos.headend.scheduler import ScheduleError, add_schedule, list_schedules, remove_schedule, run_due
from osos.store.db import as_utc, make_engine, migrate
from osos.store.schema import log_records, meters, orders, schedules

pytestmark = pytest.mark.integration

IST = "Europe/Istanbul"
T0 = datetime(2026, 12, 1, 12, 10, tzinfo=UTC)  # 15:10 in Istanbul
H13 = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)  # 16:00 in Istanbul: the next full hour after T0


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def fleet(engine) -> dict[str, int]:
    """Modem GWS with meters s1, s2 (tagged "north") and s3; meter s4 has no modem."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        ids["modem"] = register_modem(conn, "OSS", "GWS", by="test", now=T0)
        for name in ("s1", "s2", "s3"):
            ids[name] = conn.execute(meters.insert().values(flag="MKL", serial=name, modem_id=ids["modem"],
                                                            first_seen_at=T0)).inserted_primary_key[0]
        ids["s4"] = conn.execute(meters.insert().values(flag="MKL", serial="s4", first_seen_at=T0)
                                 ).inserted_primary_key[0]
        set_tags(conn, ids["s1"], ["north"])
        set_tags(conn, ids["s2"], ["north"])
    return ids


def add(engine, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("kind", "read")
    with engine.begin() as conn:
        return add_schedule(conn, tz=IST, now=kw.pop("now", T0), **kw)


def scheduled_orders(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(orders).where(orders.c.source == "schedule").order_by(orders.c.id)).mappings()
        return [dict(r) for r in rows]


def close_all(engine) -> None:
    """Answer every open order, so the next run is not folded into open ones by the dedup (HES-12)."""
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.status.in_(("pending", "running"))).values(status="succeeded"))


def test_add_list_remove(engine, fleet) -> None:
    made = add(engine, name="hourly", every_minutes=60, group={"tags": ["north"]}, priority=3, created_by="ops")
    assert made["next_run_at"] == H13.isoformat()
    assert (made["kind"], made["priority"], made["group"], made["enabled"]) == ("read", 3, {"tags": ["north"]}, True)
    add(engine, name="nightly", cron="0 2 * * *")
    with engine.begin() as conn:
        names = [s["name"] for s in list_schedules(conn)]
        assert names == ["hourly", "nightly"]
        # 02:00 local on 2 December = 23:00 UTC on 1 December
        assert list_schedules(conn)[1]["next_run_at"] == datetime(2026, 12, 1, 23, 0, tzinfo=UTC).isoformat()
        assert remove_schedule(conn, "nightly") is True
        assert remove_schedule(conn, made["id"]) is True
        assert remove_schedule(conn, made["id"]) is False
        assert list_schedules(conn) == []


@pytest.mark.parametrize(("kw", "reason"), [
    ({"name": "x", "every_minutes": 60, "cron": "* * * * *"}, "exactly one"),
    ({"name": "x"}, "exactly one"),
    ({"name": "x", "every_minutes": 7}, "divide"),
    ({"name": "x", "cron": "0 25 * * *"}, "cron"),
    ({"name": "x", "every_minutes": 60, "kind": "relay"}, "cannot be scheduled"),
    ({"name": "x", "every_minutes": 60, "kind": "bogus"}, "cannot be scheduled"),
    ({"name": "x", "every_minutes": 60, "priority": 10}, "priority"),
    ({"name": "", "every_minutes": 60}, "name"),
    ({"name": "x", "every_minutes": 60, "group": {"zone": 1}}, "unknown group key"),
])
def test_bad_schedules_are_refused(engine, kw: dict, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        add(engine, **kw)


def test_duplicate_name_refused(engine) -> None:
    add(engine, name="hourly", every_minutes=60)
    with pytest.raises(ScheduleError, match="exists"):
        add(engine, name="hourly", cron="0 * * * *")


def test_due_run_queues_one_order_per_meter(engine, fleet) -> None:
    add(engine, name="north", every_minutes=60, group={"tags": ["north"]}, priority=2)
    assert run_due(engine, tz=IST, now=H13 - timedelta(seconds=1)) == []
    assert scheduled_orders(engine) == []
    [run] = run_due(engine, tz=IST, now=H13)
    got = scheduled_orders(engine)
    assert sorted(o["meter_id"] for o in got) == sorted([fleet["s1"], fleet["s2"]])
    assert {(o["kind"], o["priority"], o["created_by"], o["modem_id"]) for o in got} == {
        ("read", 2, "schedule:north", fleet["modem"])}
    assert sorted(run.order_ids) == [o["id"] for o in got]
    with engine.connect() as conn:
        row = conn.execute(select(schedules)).mappings().one()
    assert as_utc(row["next_run_at"]) == H13 + timedelta(hours=1)
    assert as_utc(row["last_run_at"]) == H13
    assert run_due(engine, tz=IST, now=H13 + timedelta(minutes=30)) == []  # ran already


def test_empty_group_is_every_meter_and_unreachable_ones_are_logged(engine, fleet) -> None:
    add(engine, name="all", cron="0 * * * *")
    [run] = run_due(engine, tz=IST, now=H13)
    assert sorted(o["meter_id"] for o in scheduled_orders(engine)) == sorted([fleet["s1"], fleet["s2"], fleet["s3"]])
    assert list(run.skipped) == [fleet["s4"]]
    assert "no modem" in run.skipped[fleet["s4"]]
    with engine.connect() as conn:
        messages = [r.message for r in conn.execute(select(log_records).where(log_records.c.category == "orders"))]
    assert any("'all'" in m and "1 meter(s)" in m for m in messages)


def test_open_orders_are_not_duplicated(engine, fleet) -> None:
    with engine.begin() as conn:
        existing = order_api.create_order(conn, "read", meter_id=fleet["s1"], now=T0)
    add(engine, name="s1", every_minutes=60, group={"modems": ["GWS"], "tags": ["north"]})
    [run] = run_due(engine, tz=IST, now=H13)
    assert existing in run.order_ids
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders).where(
            orders.c.meter_id == fleet["s1"])).scalar_one() == 1


def test_missed_runs_after_downtime_run_once(engine, fleet) -> None:
    add(engine, name="quarter", every_minutes=15, group={"modems": [fleet["modem"]]})
    # down from 12:10 to 17:20 UTC: 20 quarter hours were missed; one run now, the next at 17:30 UTC
    back = datetime(2026, 12, 1, 17, 20, tzinfo=UTC)
    runs = run_due(engine, tz=IST, now=back)
    assert len(runs) == 1
    assert len(scheduled_orders(engine)) == 3
    close_all(engine)
    assert run_due(engine, tz=IST, now=back + timedelta(minutes=5)) == []
    with engine.connect() as conn:
        assert as_utc(conn.execute(select(schedules.c.next_run_at)).scalar_one()) == \
            datetime(2026, 12, 1, 17, 30, tzinfo=UTC)


def test_state_survives_a_restart(engine, fleet, db_url: str) -> None:
    add(engine, name="hourly", every_minutes=60, group={"tags": ["north"]})
    assert len(run_due(engine, tz=IST, now=H13)) == 1
    close_all(engine)
    engine.dispose()
    again = make_engine(db_url)  # a new process: nothing but the database
    try:
        migrate(again)
        assert run_due(again, tz=IST, now=H13 + timedelta(minutes=59)) == []
        assert len(run_due(again, tz=IST, now=H13 + timedelta(hours=1))) == 1
    finally:
        again.dispose()
    assert len(scheduled_orders(engine)) == 4  # two meters, two runs


def test_disabled_schedule_does_not_run(engine, fleet) -> None:
    add(engine, name="off", every_minutes=60)
    with engine.begin() as conn:
        conn.execute(update(schedules).values(enabled=False))
    assert run_due(engine, tz=IST, now=H13 + timedelta(days=1)) == []


def test_two_schedulers_each_run_once(engine, fleet, db_url: str) -> None:
    """Two schedulers (two engines, as two head-end processes) start together on every due minute for 12 rounds;
    orders are answered between rounds so the dedup cannot hide a double run. Expected: 12 runs of 3 meters."""
    add(engine, name="minutely", every_minutes=1, group={"modems": ["OSSGWS"]})
    other = make_engine(db_url)
    rounds, claimed = 12, []
    try:
        for i in range(rounds):
            now = datetime(2026, 12, 1, 12, 11 + i, tzinfo=UTC)
            barrier = threading.Barrier(2)
            results: list[int] = []
            errors: list[BaseException] = []

            def tick(eng, now=now, barrier=barrier, results=results, errors=errors) -> None:  # type: ignore[no-untyped-def]
                try:
                    barrier.wait(timeout=10)
                    results.append(len(run_due(eng, tz=IST, now=now)))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=tick, args=(e,)) for e in (engine, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert errors == []
            claimed.append(sum(results))
            close_all(engine)
    finally:
        other.dispose()
    assert claimed == [1] * rounds
    assert len(scheduled_orders(engine)) == rounds * 3


def test_a_broken_schedule_does_not_stop_the_others(engine, fleet) -> None:
    add(engine, name="a-broken", cron="0 * * * *")
    add(engine, name="b-fine", cron="0 * * * *", group={"tags": ["north"]})
    with engine.begin() as conn:  # written by other means than add_schedule: not a cron expression
        conn.execute(update(schedules).where(schedules.c.name == "a-broken").values(cron="not a cron"))
    runs = run_due(engine, tz=IST, now=H13)
    assert [r.name for r in runs] == ["b-fine"]
    assert len(scheduled_orders(engine)) == 2
    with engine.connect() as conn:  # the broken one stays due (its claim rolled back)
        row = conn.execute(select(schedules).where(schedules.c.name == "a-broken")).mappings().one()
    assert as_utc(row["next_run_at"]) == H13 and row["last_run_at"] is None
