"""Order dispatch over the real Mosquitto and PostgreSQL (issue 8 item 1): an order to an offline modem waits and
goes out when the modem's heartbeat comes back.

covers HES-10, HES-12, HES-63
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from datetime import timedelta
from functools import reduce

import pytest
from sqlalchemy import select, update

from osos.headend import orders
from osos.protocols import mass
from osos.store.db import utcnow
from osos.store.schema import meters, modems

pytestmark = pytest.mark.integration


def data_block(lines: list[str]) -> str:
    body = "".join(line + "\r\n" for line in lines) + "!\r\n\x03"
    return "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))


class FakeDevice:
    """A bare MQTT device written in the test (not the project's gateway), to drive the head-end exactly."""

    def __init__(self, broker, creds, topics: mass.Topics, device: mass.Device) -> None:  # type: ignore[no-untyped-def]
        self.topics, self.device = topics, device
        self.inbox: queue.Queue[dict] = queue.Queue()
        self.client = broker.client(creds.username, creds.password, tls=True, client_id=f"dev-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.inbox.put(json.loads(m.payload))
        self.client.connect(broker.host, broker.port_for(True))
        self.client.subscribe(topics.downlink(device), qos=1)
        self.client.loop_start()

    def send(self, function: str, response: object, ref: str | None = None) -> str:
        msg = mass.make(function, self.device, reference_id=ref, response=response)
        self.client.publish(self.topics.uplink(self.device), mass.encode(msg), qos=1).wait_for_publish(10)
        return msg["referenceId"]

    def expect(self, function: str, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg["function"] == function:
                return msg
        raise AssertionError(f"no {function} arrived on {self.topics.downlink(self.device)}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_an_order_to_an_offline_modem_waits_for_its_heartbeat(mqtt_broker, start_headend, provision,
                                                                wait_until) -> None:
    headend, engine = start_headend(order_timeout_s=20)
    creds = provision(engine, "OSS", "GWSLEEP")
    dev = FakeDevice(mqtt_broker, creds, headend.topics, mass.Device("OSS", "GWSLEEP"))
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
