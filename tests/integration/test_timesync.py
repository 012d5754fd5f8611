"""Central time sync (HES-35, issue 8 item 6) through the real ingest path on SQLite and the real PostgreSQL:
scripted read answers and heartbeats with clocks set off by hand-chosen amounts; the expected drifts are worked
out in the comments. A meter 7 minutes off gets a time-set order (source "system"), one 2 minutes off none; the
threshold is configurable; at most one sync order is open per meter; pushes, foreign meters and modems (no modem
time-set kind yet) create no order.

covers HES-35, HES-12
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest
from sqlalchemy import select, update

from osos.config import Settings
from osos.headend import orders as order_api
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import as_utc, make_engine, migrate
from osos.store.schema import meters, modems, orders

pytestmark = pytest.mark.integration

TOPICS = mass.Topics("mass")
GW = mass.Device("OSS", "GWTIME1")
NOW = datetime(2026, 12, 1, 12, 0, 0, 500000, tzinfo=UTC)  # the head-end receives the answer now
SENT = datetime(2026, 12, 1, 11, 59, 58, 200000, tzinfo=UTC)  # the order went out 2.3 s before
METER = {"flag": "MKL", "serialNumber": "22222222"}


def block(lines: list[str]) -> str:
    """An IEC 62056-21 data block with its BCC (XOR of every byte after STX up to ETX)."""
    body = "".join(line + "\r\n" for line in lines) + "!\r\n\x03"
    return "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))


def read_body(read_date: str, tz: str = "+03:00", meter: dict = METER) -> dict:
    raw = block([f"0.0.0({meter['serialNumber']})", "1.8.0(000123.456*kWh)"])
    return {"readDate": read_date, "timezone": tz, "meter": meter,
            "data": {"id": f"/{meter['flag']}5TEST", "rawData": raw}}


def up(function: str, response: object, ref: str, at: datetime = NOW, device: mass.Device = GW) -> Incoming:
    payload = mass.encode(mass.make(function, device, reference_id=ref, response=response))
    return Incoming(topic=TOPICS.uplink(device), payload=payload, received_at=at, token=ref)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def meter(engine) -> int:
    with engine.begin() as conn:
        modem_id = register_modem(conn, GW.flag, GW.serial, by="test", now=SENT - timedelta(days=1))
        return int(conn.execute(meters.insert().values(flag="MKL", serial=METER["serialNumber"], modem_id=modem_id,
                                                       first_seen_at=SENT)).inserted_primary_key[0])


def sent_read(engine, meter_id: int, sent: datetime = SENT) -> str:
    """A read order for the meter, sent (marked running, as the dispatcher's claim does) at ``sent``; returns its
    referenceId."""
    with engine.begin() as conn:
        oid = order_api.create_order(conn, "read", meter_id=meter_id, now=sent - timedelta(seconds=1))
        conn.execute(update(orders).where(orders.c.id == oid).values(status="running", started_at=sent))
        return str(conn.execute(select(orders.c.reference_id).where(orders.c.id == oid)).scalar_one())


def drift_of(engine, meter_id: int) -> tuple[int | None, datetime | None]:
    with engine.connect() as conn:
        row = conn.execute(select(meters.c.clock_drift_s, meters.c.drift_measured_at)
                           .where(meters.c.id == meter_id)).one()
    return row.clock_drift_s, as_utc(row.drift_measured_at)


def sync_orders(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(orders).where(orders.c.kind == "time-set")
                                              .order_by(orders.c.id)).mappings()]


def test_seven_minutes_ahead_gets_a_time_set_order(engine, meter) -> None:
    ref = sent_read(engine, meter)
    # the meter says 15:07:00 at +03:00 = 12:07:00 UTC; received 12:00:00.5 -> 419.5 s ahead -> 419 whole seconds
    [out] = Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 15:07:00"), ref)])
    assert out.status == "stored"
    assert drift_of(engine, meter) == (419, NOW)
    [sync] = sync_orders(engine)
    assert (sync["meter_id"], sync["status"], sync["source"], sync["created_by"]) == (
        meter, "pending", "system", "system:time-sync")


def test_seven_minutes_behind_gets_one_too(engine, meter) -> None:
    ref = sent_read(engine, meter)
    # 14:52:58 local = 11:52:58 UTC; the read went out at 11:59:58.2, counted from 11:59:58 -> 420 s behind
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 14:52:58"), ref)])
    assert drift_of(engine, meter) == (-420, NOW)
    assert len(sync_orders(engine)) == 1


def test_two_minutes_off_gets_none(engine, meter) -> None:
    ref = sent_read(engine, meter)
    # 12:02:00 UTC against 12:00:00.5 -> 119 s
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 12:02:00", tz="+00:00"), ref)])
    assert drift_of(engine, meter) == (119, NOW)
    assert sync_orders(engine) == []


def test_a_clock_inside_the_round_trip_is_on_time(engine, meter) -> None:
    ref = sent_read(engine, meter)
    # 11:59:59 UTC lies between sending (11:59:58.2) and receiving (12:00:00.5)
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 14:59:59"), ref)])
    assert drift_of(engine, meter) == (0, NOW)


def test_threshold_is_configurable(engine, meter, monkeypatch) -> None:
    monkeypatch.setenv("OSOS_TIME_SYNC_THRESHOLD_S", "60")
    settings = Settings.from_env()
    assert settings.time_sync_threshold_s == 60
    assert Settings().time_sync_threshold_s == 300  # the default: five minutes
    ref = sent_read(engine, meter)
    Ingestor(engine, TOPICS, time_sync_threshold_s=settings.time_sync_threshold_s).process(
        [up("read", read_body("2026-12-01 12:02:00", tz="+00:00"), ref)])
    assert len(sync_orders(engine)) == 1


def test_one_open_sync_order_per_meter(engine, meter) -> None:
    ing = Ingestor(engine, TOPICS)
    for i in range(2):
        at = NOW + timedelta(minutes=10 * i)
        ref = sent_read(engine, meter, sent=at - timedelta(seconds=2))
        ing.process([up("read", read_body((at + timedelta(minutes=7)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                                          tz="+00:00"), ref, at=at)])
    assert len(sync_orders(engine)) == 1  # the second measurement found the first order still open
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.kind == "time-set").values(status="failed"))
    at = NOW + timedelta(minutes=30)
    ref = sent_read(engine, meter, sent=at - timedelta(seconds=2))
    ing.process([up("read", read_body((at + timedelta(minutes=7)).strftime("%Y-%m-%d %H:%M:%S"), tz="+00:00"),
                    ref, at=at)])
    assert [o["status"] for o in sync_orders(engine)] == ["failed", "pending"]  # a failed sync is asked again


def test_a_push_measures_nothing(engine, meter) -> None:
    # not the answer to an order: its readDate may be hours old (outbox), so it says nothing about the clock
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 15:07:00"), "push-0001")])
    assert drift_of(engine, meter) == (None, None)
    assert sync_orders(engine) == []


def test_no_time_zone_measures_nothing(engine, meter) -> None:
    ref = sent_read(engine, meter)
    body = read_body("2026-12-01 15:07:00")
    del body["timezone"]
    Ingestor(engine, TOPICS).process([up("read", body, ref)])
    assert drift_of(engine, meter) == (None, None)


def test_a_foreign_meter_measures_nothing(engine, meter) -> None:
    other = mass.Device("OSS", "GWTIME2")
    with engine.begin() as conn:
        register_modem(conn, other.flag, other.serial, by="test", now=SENT)
        oid = order_api.create_order(conn, "read", modem_id=conn.execute(
            select(modems.c.id).where(modems.c.serial == other.serial)).scalar_one(), now=SENT)
        claimed = order_api.claim_next(conn, timeout_s=60, now=SENT)
        assert claimed["id"] == oid
    # GWTIME2 answers with GWTIME1's meter: stored, flagged foreign-meter, and not measured
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 15:07:00"), claimed["reference_id"],
                                         device=other)])
    assert drift_of(engine, meter) == (None, None)
    assert sync_orders(engine) == []


def test_heartbeat_drift_per_modem_and_no_order(engine, meter) -> None:
    ing = Ingestor(engine, TOPICS)
    # no zone anywhere yet: nothing measured
    ing.process([up("heartbeat", {"signal": 20, "deviceDate": "2026-12-01 15:07:00"}, "hb-1")])
    with engine.begin() as conn:
        row = conn.execute(select(modems.c.clock_drift_s).where(modems.c.serial == GW.serial)).one()
        assert row.clock_drift_s is None
        conn.execute(update(modems).values(timezone="+03:00"))  # as an identification would set it
    # 15:07:00 +03:00 = 12:07:00 UTC against 12:00:00.5 -> 419 s
    ing.process([up("heartbeat", {"signal": 20, "deviceDate": "2026-12-01 15:07:00"}, "hb-2")])
    with engine.connect() as conn:
        row = conn.execute(select(modems.c.clock_drift_s, modems.c.drift_measured_at)
                           .where(modems.c.serial == GW.serial)).one()
    assert (row.clock_drift_s, as_utc(row.drift_measured_at)) == (419, NOW)
    # a zone in the heartbeat itself wins: 12:00:30 +00:00 -> 29 s (29.5 toward zero)
    ing.process([up("heartbeat", {"deviceDate": "2026-12-01 12:00:30", "timezone": "+00:00"}, "hb-3",
                    at=NOW)])
    with engine.connect() as conn:
        assert conn.execute(select(modems.c.clock_drift_s).where(modems.c.serial == GW.serial)).scalar_one() == 29
    assert sync_orders(engine) == []  # no modem time-set kind exists yet


def test_drift_is_visible_in_the_api_views(engine, meter) -> None:
    from osos.store import queries

    ref = sent_read(engine, meter)
    Ingestor(engine, TOPICS).process([up("read", read_body("2026-12-01 15:07:00"), ref),
                                      up("heartbeat", {"deviceDate": "2026-12-01 11:59:00", "timezone": "+00:00"},
                                         "hb-1")])
    with engine.connect() as conn:
        m = queries.get_meter(conn, meter)
        [listed] = queries.list_meters(conn)
        modem_id = m["modem"]["id"]
        d = queries.get_modem(conn, modem_id, now=NOW)
        [ml] = queries.list_modems(conn, now=NOW)
    assert (m["clock_drift_s"], m["drift_measured_at"]) == (419, NOW)
    assert listed["clock_drift_s"] == 419
    # 11:59:00 against 12:00:00.5 -> -60.5 s -> -60
    assert (d["clock_drift_s"], d["drift_measured_at"], ml["clock_drift_s"]) == (-60, NOW, -60)


@pytest.mark.parametrize("bad", ["-5", "five", "1.5"])
def test_bad_threshold_is_a_config_error(monkeypatch, bad: str) -> None:
    from osos.config import ConfigError

    monkeypatch.setenv("OSOS_TIME_SYNC_THRESHOLD_S", bad)
    with pytest.raises(ConfigError, match="OSOS_TIME_SYNC_THRESHOLD_S"):
        Settings.from_env()
