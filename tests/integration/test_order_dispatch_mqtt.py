"""Order dispatch over the real Mosquitto and PostgreSQL (issue 8 item 1): an order to an offline modem waits and
goes out when the modem's heartbeat comes back.

covers HES-10, HES-12, HES-63
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from osos.headend import orders
from osos.protocols import mass
from osos.store.db import utcnow
from osos.store.schema import meters, modems

pytestmark = pytest.mark.integration





def test_an_order_to_an_offline_modem_waits_for_its_heartbeat(mqtt_broker, start_headend, provision, fake_device,
                                                                data_block, wait_until) -> None:
    headend, engine = start_headend(order_timeout_s=20)
    creds = provision(engine, "OSS", "GWSLEEP")
    dev = fake_device(creds, headend.topics, mass.Device("OSS", "GWSLEEP"))
    try:
        dev.send("identification", {"brand": "T", "meters": [{"flag": "MKL", "serialNumber": "777"}]})
        dev.expect("ack")
        meter_id = wait_until(lambda: _meter(engine, "777"), what="the meter from the identification")
        silent_since = utcnow() - timedelta(seconds=headend.settings.modem_offline_s + 60)
        with engine.begin() as conn:  # the modem went quiet longer than the offline window
            conn.execute(update(modems).where(modems.c.flag == "OSS", modems.c.serial == "GWSLEEP")
                         .values(last_seen_at=silent_since, last_heartbeat_at=silent_since))
            oid = orders.create_order(conn, "read", meter_id=meter_id, created_by="test")
        headend.wake_dispatcher()
        time.sleep(2)  # several dispatcher rounds (it wakes every 0.5 s)
        with engine.connect() as conn:
            waiting = orders.get_order(conn, oid)
        assert (waiting["status"], waiting["attempts"], waiting["attempt_log"]) == ("pending", 0, [])
        assert dev.inbox.empty() or all(m["function"] != "read" for m in list(dev.inbox.queue))

        dev.send("heartbeat", {"signal": 17, "deviceDate": "2026-12-01 10:00:00"})  # it is back
        request = dev.expect("read")
        assert request["referenceId"] == waiting["reference_id"]
        raw = data_block(["0.0.0(777)", "1.8.0(000012.500*kWh)"])
        dev.send("read", {"meter": {"flag": "MKL", "serialNumber": "777"}, "data": {"id": "/MKL5X", "rawData": raw}},
                 ref=request["referenceId"])
        done = wait_until(lambda: _finished(engine, oid), what="the order's outcome")
        assert done["status"] == "succeeded"
        assert [a["outcome"] for a in done["attempt_log"]] == ["succeeded"]
    finally:
        dev.close()


def _meter(engine, serial: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(meters.c.id).where(meters.c.serial == serial)).scalar_one_or_none()


def _finished(engine, oid: int) -> dict | None:
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    return order if order and order["status"] not in ("pending", "running") else None
