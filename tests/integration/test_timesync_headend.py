"""Time sync through a running head-end on the real Mosquitto and PostgreSQL (HES-35): a device answers read
orders with its clock 7 minutes ahead for one meter and 2 minutes ahead for another; the head-end stores both
drifts, queues a time-set order (source "system") for the first only, and sends it to the device.

covers HES-35
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from osos.headend import orders
from osos.protocols import mass
from osos.store.schema import meters
from osos.store.schema import orders as orders_table

pytestmark = pytest.mark.integration


def test_a_clock_seven_minutes_off_is_synced(mqtt_broker, start_headend, provision, wait_until, fake_device,
                                             data_block) -> None:
    headend, engine = start_headend(order_timeout_s=20)
    creds = provision(engine, "OSS", "GWSYNC")
    dev = fake_device(creds, headend.topics, mass.Device("OSS", "GWSYNC"))
    try:
        dev.send("identification", {"brand": "T", "meters": [{"flag": "MKL", "serialNumber": "701"},
                                                             {"flag": "MKL", "serialNumber": "702"}]})
        dev.expect("ack")
        wait_until(lambda: len(ids(engine)) == 2, what="both meters registered")
        def read_with_clock(serial: str, ahead: timedelta, request: dict) -> None:
            read_date = (datetime.now(UTC) + ahead).strftime("%Y-%m-%d %H:%M:%S")
            raw = data_block([f"0.0.0({serial})", "1.8.0(000001.000*kWh)"])
            dev.send("read", {"meter": {"flag": "MKL", "serialNumber": serial}, "readDate": read_date,
                              "timezone": "+00:00", "data": {"id": "/MKL5X", "rawData": raw}},
                     ref=request["referenceId"])

        def drifts() -> dict[str, int | None]:
            with engine.connect() as conn:
                return dict(conn.execute(select(meters.c.serial, meters.c.clock_drift_s)).all())

        def time_sets() -> list[tuple[int, str]]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(select(orders_table.c.meter_id, orders_table.c.source)
                                                       .where(orders_table.c.kind == "time-set"))]

        # 701 answers its read with a clock 7 minutes ahead
        with engine.begin() as conn:
            oid = orders.create_order(conn, "read", meter_id=ids(engine)["701"], created_by="test")
        headend.wake_dispatcher()
        read_with_clock("701", timedelta(minutes=7), dev.expect("read"))
        wait_until(lambda: status(engine, oid) == "succeeded", what="read of 701 answered")
        # the device's clock ran 420 s ahead (minus the fraction of a second its timestamp drops, minus transit)
        assert 400 <= drifts()["701"] <= 420
        assert time_sets() == [(ids(engine)["701"], "system")]
        # the head-end sends the sync order itself; the set meter answers with its clock now right
        sync = dev.expect("read")
        assert sync["request"]["directive"] == "time-set"
        assert sync["request"]["meter"] == {"flag": "MKL", "serialNumber": "701"}
        read_with_clock("701", timedelta(0), sync)
        wait_until(lambda: abs(drifts()["701"]) <= 5, what="701's clock right after the sync")

        # 702 is 2 minutes ahead: inside the threshold, so no sync order
        with engine.begin() as conn:
            oid = orders.create_order(conn, "read", meter_id=ids(engine)["702"], created_by="test")
        headend.wake_dispatcher()
        read_with_clock("702", timedelta(minutes=2), dev.expect("read"))
        wait_until(lambda: status(engine, oid) == "succeeded", what="read of 702 answered")
        assert 100 <= drifts()["702"] <= 120
        assert time_sets() == [(ids(engine)["701"], "system")]
    finally:
        dev.close()


def ids(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {r.serial: r.id for r in conn.execute(select(meters.c.serial, meters.c.id))}


def status(engine, oid: int) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return str(conn.execute(select(orders_table.c.status).where(orders_table.c.id == oid)).scalar_one())
