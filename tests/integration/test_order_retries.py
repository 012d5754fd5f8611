"""The order lifecycle of issue 8 item 1 on SQLite and the real PostgreSQL: every send is an attempt row; a timeout
or a transient device failure goes back to pending after the kind's backoff until its attempts are used up; an
order past its own deadline ends expired; an order to an offline modem waits; cancelling a pending or running order
(the late answer ignored). The expected times are worked out here from the policy's numbers.

covers HES-10, HES-12, HES-63
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from osos.headend import orders
from osos.headend.inventory import register_modem
from osos.store.db import as_utc, make_engine, migrate
from osos.store.schema import modems
from osos.store.schema import orders as orders_table

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 60  # seconds an attempt waits for its answer
READ = orders.RetryPolicy(attempts=3, interval_s=60, backoff=2)  # what the tests rely on, passed explicitly
POLICIES = {**orders.RETRY_POLICIES, "read": READ}


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def modem(engine) -> int:
    with engine.begin() as conn:
        return register_modem(conn, "OSS", "GWRETRY", by="test", now=T0)


def row(engine, oid: int):
    with engine.connect() as conn:
        return conn.execute(select(orders_table).where(orders_table.c.id == oid)).first()


def attempt_log(engine, oid: int) -> list[tuple]:
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    return [(a["attempt"], a["sent_at"], a["answered_at"], a["outcome"], a["error"]) for a in order["attempt_log"]]


def claim(engine, now: datetime):
    with engine.begin() as conn:
        return orders.claim_next(conn, timeout_s=TIMEOUT, now=now)


def expire(engine, now: datetime) -> list[int]:
    with engine.begin() as conn:
        return orders.expire(conn, now=now, policies=POLICIES)


def test_timeouts_retry_with_backoff_until_the_attempts_are_used_up(engine, modem) -> None:
    with engine.begin() as conn:
        oid = orders.create_order(conn, "read", modem_id=modem, now=T0)
    sent1 = T0
    assert claim(engine, sent1)["id"] == oid
    timeout1 = sent1 + timedelta(seconds=TIMEOUT + 1)
    assert expire(engine, timeout1) == [oid]
    first = row(engine, oid)
    assert (first.status, first.attempts) == ("pending", 1)
    retry1 = timeout1 + timedelta(seconds=60)  # interval 60 s after the first failure
    assert as_utc(first.not_before) == retry1
    assert claim(engine, retry1 - timedelta(seconds=1)) is None  # still backing off
    assert claim(engine, retry1)["attempts"] == 2
    timeout2 = retry1 + timedelta(seconds=TIMEOUT + 1)
    assert expire(engine, timeout2) == [oid]
    retry2 = timeout2 + timedelta(seconds=120)  # 60 s * 2 (backoff) after the second
    assert as_utc(row(engine, oid).not_before) == retry2
    assert claim(engine, retry2)["attempts"] == 3
    timeout3 = retry2 + timedelta(seconds=TIMEOUT + 1)
    assert expire(engine, timeout3) == [oid]
    last = row(engine, oid)
    assert (last.status, last.error, last.attempts) == ("failed", "no answer before the deadline", 3)
    no_answer = "no answer before the deadline"
    assert attempt_log(engine, oid) == [
        (1, sent1.isoformat(), None, "timeout", no_answer),
        (2, retry1.isoformat(), None, "timeout", no_answer),
        (3, retry2.isoformat(), None, "timeout", no_answer),
    ]


def test_a_retryable_failure_goes_back_to_pending_and_a_refusal_fails_at_once(engine, modem) -> None:
    with engine.begin() as conn:
        oid = orders.create_order(conn, "read", modem_id=modem, now=T0)
        ref = orders.claim_next(conn, timeout_s=TIMEOUT, now=T0)["reference_id"]
        at = T0 + timedelta(seconds=5)
        assert orders.finish(conn, ref, succeeded=False, error="read failed: 1 link down", retryable=True,
                             modem_id=modem, policies=POLICIES, now=at) == oid
    again = row(engine, oid)
    assert (again.status, as_utc(again.not_before)) == ("pending", at + timedelta(seconds=60))
    retry = at + timedelta(seconds=60)
    with engine.begin() as conn:
        assert orders.claim_next(conn, timeout_s=TIMEOUT, now=retry)["attempts"] == 2
        done = retry + timedelta(seconds=3)
        assert orders.finish(conn, ref, succeeded=False, error="device refused: 404 unknown directive",
                             modem_id=modem, policies=POLICIES, now=done) == oid
    assert row(engine, oid).status == "failed"
    assert attempt_log(engine, oid) == [
        (1, T0.isoformat(), at.isoformat(), "failed", "read failed: 1 link down"),
        (2, retry.isoformat(), done.isoformat(), "failed", "device refused: 404 unknown directive"),
    ]


def test_success_records_the_answer(engine, modem) -> None:
    with engine.begin() as conn:
        oid = orders.create_order(conn, "read", modem_id=modem, now=T0)
        ref = orders.claim_next(conn, timeout_s=TIMEOUT, now=T0)["reference_id"]
        answered = T0 + timedelta(seconds=7)
        orders.finish(conn, ref, succeeded=True, result={"ok": 1}, modem_id=modem, now=answered)
    assert attempt_log(engine, oid) == [(1, T0.isoformat(), answered.isoformat(), "succeeded", None)]


def test_the_order_deadline_ends_it_expired(engine, modem) -> None:
    """A pending order past its deadline expires; a running one whose retry would fall after it expires too."""
    with engine.begin() as conn:
        waiting = orders.create_order(conn, "read", modem_id=modem, deadline=T0 + timedelta(minutes=5), now=T0)
        conn.execute(update(modems).where(modems.c.id == modem).values(last_seen_at=T0 - timedelta(hours=2)))
    assert claim(engine, T0) is None  # offline: it waits
    assert expire(engine, T0 + timedelta(minutes=4)) == []
    assert expire(engine, T0 + timedelta(minutes=5)) == [waiting]
    assert row(engine, waiting).status == "expired"

    with engine.begin() as conn:
        conn.execute(update(modems).where(modems.c.id == modem).values(last_seen_at=T0))
        oid = orders.create_order(conn, "load-profile", modem_id=modem, deadline=T0 + timedelta(seconds=90),
                                  request={"start": "2026-12-01T00:00:00+00:00", "end": "2026-12-01T06:00:00+00:00"},
                                  now=T0)
    assert claim(engine, T0)["id"] == oid
    assert expire(engine, T0 + timedelta(seconds=TIMEOUT + 1)) == [oid]  # the retry (at +121 s) is too late
    late = row(engine, oid)
    assert late.status == "expired" and "deadline" in late.error


def test_an_order_to_an_offline_modem_waits_until_it_is_seen(engine, modem) -> None:
    offline_after = 900
    with engine.begin() as conn:
        conn.execute(update(modems).where(modems.c.id == modem)
                     .values(last_seen_at=T0 - timedelta(seconds=offline_after + 1),
                             last_heartbeat_at=T0 - timedelta(seconds=offline_after + 1)))
        oid = orders.create_order(conn, "read", modem_id=modem, now=T0)
        assert orders.claim_next(conn, timeout_s=TIMEOUT, now=T0, offline_after_s=offline_after) is None
        conn.execute(update(modems).where(modems.c.id == modem).values(last_heartbeat_at=T0))  # a heartbeat
        assert orders.claim_next(conn, timeout_s=TIMEOUT, now=T0, offline_after_s=offline_after)["id"] == oid


def test_cancel_pending_and_running_and_the_late_answer_is_ignored(engine, modem) -> None:
    with engine.begin() as conn:
        pending = orders.create_order(conn, "read", modem_id=modem, now=T0)
        assert orders.cancel(conn, pending, "changed my mind", now=T0) is True
        assert orders.cancel(conn, pending, "again", now=T0) is False  # closed stays closed
        running = orders.create_order(conn, "read", modem_id=modem, now=T0)
        ref = orders.claim_next(conn, timeout_s=TIMEOUT, now=T0)["reference_id"]
        assert orders.cancel(conn, running, "no longer needed", now=T0 + timedelta(seconds=1)) is True
        assert orders.finish(conn, ref, succeeded=True, result={"late": 1}, modem_id=modem,
                             now=T0 + timedelta(seconds=2)) is None
    assert (row(engine, pending).status, row(engine, pending).error) == ("cancelled", "changed my mind")
    late = row(engine, running)
    assert (late.status, late.result, late.error) == ("cancelled", None, "no longer needed")
    assert attempt_log(engine, running) == [(1, T0.isoformat(), None, "cancelled", "no longer needed")]


def test_retry_policies_from_the_environment_string() -> None:
    parsed = orders.parse_retry_policies("read=5/10/3, relay=1/0")
    assert parsed["read"] == orders.RetryPolicy(5, 10, 3)
    assert parsed["relay"] == orders.RetryPolicy(1, 0, 1)
    assert parsed["time-set"] == orders.RETRY_POLICIES["time-set"]
    assert orders.RetryPolicy(5, 10, 3).delay(3) == timedelta(seconds=90)  # 10 * 3 ** 2
    for bad in ("nope=1/1", "read=0/10", "read=1", "read=1/1/0.5"):
        with pytest.raises(ValueError):
            orders.parse_retry_policies(bad)


def test_migration_0005_downgrades_and_upgrades_again(db_url: str) -> None:
    """The lifecycle revision can be taken back (priorities flipped back, the new statuses folded into failed)."""
    from osos.store.db import current_revision, downgrade

    eng = make_engine(db_url)
    try:
        migrate(eng)
        with eng.begin() as conn:
            modem_id = register_modem(conn, "OSS", "GWDOWN", now=T0)
            urgent = orders.create_order(conn, "read", modem_id=modem_id, priority=9, now=T0)
            orders.cancel(conn, urgent, "test", now=T0)
        downgrade(eng, "0004")
        assert current_revision(eng) == "0004"
        with eng.connect() as conn:
            old = conn.exec_driver_sql(f"SELECT priority, status FROM orders WHERE id = {urgent}").one()
        assert tuple(old) == (0, "failed")  # 9 (most urgent now) was 0 (most urgent then)
        migrate(eng)
        with eng.connect() as conn:
            assert conn.execute(select(orders_table.c.priority).where(orders_table.c.id == urgent)).scalar_one() == 9
    finally:
        eng.dispose()


def test_a_modem_level_order_waits_for_every_meter_and_a_retry_keeps_what_came(engine, modem) -> None:
    from osos.store.schema import meters

    with engine.begin() as conn:
        for serial in ("A1", "B2"):
            conn.execute(meters.insert().values(flag="MKL", serial=serial, modem_id=modem, first_seen_at=T0))
        oid = orders.create_order(conn, "read", modem_id=modem, now=T0)
        ref = orders.claim_next(conn, timeout_s=TIMEOUT, now=T0)["reference_id"]
        assert orders.finish(conn, ref, succeeded=True, result={"v": 1}, part="MKLA1", modem_id=modem,
                             now=T0 + timedelta(seconds=1)) == oid
    half = row(engine, oid)
    assert (half.status, half.expected_parts, half.result["answered"]) == ("running", 2, 1)
    assert expire(engine, T0 + timedelta(seconds=TIMEOUT + 1)) == [oid]  # B2 never answered: retried
    retry = T0 + timedelta(seconds=TIMEOUT + 1 + 60)
    with engine.begin() as conn:
        assert orders.claim_next(conn, timeout_s=TIMEOUT, now=retry)["attempts"] == 2
        orders.finish(conn, ref, succeeded=True, result={"v": 2}, part="MKLB2", modem_id=modem, now=retry)
    done = row(engine, oid)
    assert done.status == "succeeded"
    assert done.result == {"meters": {"MKLA1": {"v": 1}, "MKLB2": {"v": 2}}, "answered": 2, "expected": 2}


def test_order_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from osos.config import Settings
    from osos.headend.service import HeadEnd

    assert (Settings().order_retries, Settings().order_ttl_s, Settings().modem_offline_s) == ("", 86400.0, 300.0)
    monkeypatch.setenv("OSOS_ORDER_RETRIES", "relay=1/0")
    monkeypatch.setenv("OSOS_ORDER_TTL_S", "3600")
    monkeypatch.setenv("OSOS_MODEM_OFFLINE_S", "120")
    s = Settings.from_env(data_dir=tmp_path)
    assert (s.order_retries, s.order_ttl_s, s.modem_offline_s) == ("relay=1/0", 3600.0, 120.0)
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert HeadEnd(s, engine).retry_policies["relay"] == orders.RetryPolicy(1, 0, 1)  # not started
        with pytest.raises(ValueError, match="bad retry policy"):
            HeadEnd(Settings(data_dir=tmp_path, order_retries="relay=x"), engine)
    finally:
        engine.dispose()
