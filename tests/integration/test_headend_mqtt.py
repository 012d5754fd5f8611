"""The head-end against the real Mosquitto and PostgreSQL: uplink, acks, orders over MQTT, the emergency lane,
and a kill -9 in the middle of a burst that must lose and double nothing.

covers HES-1, HES-5, HES-10, HES-12, HES-24, HES-34, HES-48, HES-49
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from osos.headend import orders
from osos.protocols import mass
from osos.store.db import make_engine, migrate
from osos.store.schema import alarms, heartbeats, meters, modems, raw_messages, readings

pytestmark = pytest.mark.integration





def count(engine, table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_uplink_orders_and_emergency_over_the_real_broker(mqtt_broker, start_headend, provision, wait_until,
                                                           fake_device, data_block) -> None:
    headend, engine = start_headend(order_timeout_s=20)
    creds = provision(engine, "OSS", "GW42")
    dev = fake_device(creds, headend.topics, mass.Device("OSS", "GW42"))
    try:
        assert headend.connected
        ref = dev.send("identification", {"brand": "T", "meters": [{"flag": "MKL", "serialNumber": "4242"}]})
        ack = dev.expect("ack")
        assert ack["referenceId"] == ref and "response" not in ack
        dev.send("heartbeat", {"signal": 20, "deviceDate": "2026-11-21 10:00:00"})
        wait_until(lambda: count(engine, heartbeats) == 1, what="heartbeat row")

        with engine.begin() as conn:
            meter_id = conn.execute(select(meters.c.id)).scalar_one()
            oid = orders.create_order(conn, "read", meter_id=meter_id, created_by="test")
        headend.wake_dispatcher()
        request = dev.expect("read")
        assert request["request"]["meter"] == {"flag": "MKL", "serialNumber": "4242"}
        raw = data_block(["0.0.0(4242)", "1.8.0(000042.000*kWh)"])
        dev.send(
            "read",
            {"meter": {"flag": "MKL", "serialNumber": "4242"}, "data": {"id": "/MKL5X", "rawData": raw}},
            ref=request["referenceId"],
        )

        def done():
            with engine.connect() as conn:
                o = orders.get_order(conn, oid)
            return o if o["status"] in ("succeeded", "failed") else None

        order = wait_until(done, what="order outcome")
        assert order["status"] == "succeeded"
        assert order["result"]["registers"]["1.8.0"]["value"] == "000042.000"

        dev.send(
            "alarm",
            [
                {
                    "type": "alarm",
                    "level": "critical",
                    "incidentCode": 1,
                    "description": "power loss",
                    "date": "2026-11-21 10:00:01",
                }
            ],
            emergency=True,
        )
        wait_until(lambda: count(engine, alarms) == 1, what="alarm row")
        with engine.connect() as conn:
            assert conn.execute(select(alarms.c.emergency)).scalar_one() is True
    finally:
        dev.close()


def _start_headend(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "osos.cli.main", "headend"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_kill_minus_nine_loses_and_doubles_nothing(pg_url, mqtt_broker, topic_prefix, provision, tmp_path, fake_device,
                                                   data_block, wait_until) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    creds = provision(engine, "OSS", "CRASH1")
    mqtt_broker.headend_role_for(topic_prefix)
    env = {
        **os.environ,
        "OSOS_DATABASE_URL": pg_url,
        "OSOS_MQTT_HOST": mqtt_broker.host,
        "OSOS_MQTT_PORT": str(mqtt_broker.tls_port),
        "OSOS_MQTT_USERNAME": mqtt_broker.headend_username,
        "OSOS_MQTT_PASSWORD": mqtt_broker.headend_password,
        "OSOS_MQTT_CA": str(mqtt_broker.ca),
        "OSOS_DEVICE_TLS": "1",
        "OSOS_TOPIC_ROOT": topic_prefix,
        "OSOS_HEADEND_ID": f"crash-{uuid.uuid4().hex[:8]}",
        "OSOS_DATA_DIR": str(tmp_path),
    }
    topics = mass.Topics(topic_prefix)
    proc = _start_headend(env)
    total, per_meter_registers = 600, 2
    try:
        # wait until the worker is subscribed: its first ack proves it
        dev = fake_device(creds, topics, mass.Device("OSS", "CRASH1"))
        for _ in range(30):  # until the worker has subscribed, a heartbeat goes nowhere: repeat it
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "head-end exited"
            dev.send("heartbeat", {"signal": 1})
            try:
                dev.expect("ack", timeout=1)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("the head-end never answered")
        hb_count = count(engine, raw_messages)

        sent: list[str] = []

        def publish_all() -> None:
            for i in range(total):
                serial = str(10000 + i % 50)
                raw = data_block([f"0.0.0({serial})", f"1.8.0({i:06d}.000*kWh)"])
                resp = {
                    "meter": {"flag": "VIK", "serialNumber": serial},
                    "packetClass": "shortRead",
                    "data": {"id": "/VIK5VIKO", "rawData": raw},
                }
                sent.append(dev.send("read", resp))
                time.sleep(0.01)

        publisher = threading.Thread(target=publish_all)
        publisher.start()
        # kill once a third has gone out and some of it is stored: the rest is still in flight or unsent
        wait_until(lambda: len(sent) >= total // 3 and count(engine, raw_messages) > hb_count + 20, what="first part")
        assert publisher.is_alive(), "the kill must land while the gateway is still publishing"
        proc.send_signal(signal.SIGKILL)  # no goodbye: whatever was in flight is unacknowledged
        proc.wait(10)
        time.sleep(0.5)
        proc = _start_headend(env)
        publisher.join(60)
        assert len(sent) == total
        wait_until(lambda: count(engine, raw_messages) >= total + hb_count, timeout=60, what="all packets stored")
        time.sleep(1.0)  # let any redelivered duplicates arrive; they must not add rows
        with engine.connect() as conn:
            refs = [
                r[0] for r in conn.execute(select(raw_messages.c.reference_id).where(raw_messages.c.function == "read"))
            ]
            n_readings = conn.execute(select(func.count()).select_from(readings)).scalar_one()
        assert sorted(refs) == sorted(sent)  # every packet, exactly once
        assert n_readings == total * per_meter_registers
        dev.close()
    finally:
        proc.kill()
        proc.wait(10)
        engine.dispose()


def test_plain_session_is_answered_on_the_mount_and_gets_no_relay(mqtt_broker, start_headend, provision, fake_device,
                                                                  data_block, wait_until) -> None:
    """HES-54 with the broker's plain listener mounted at ``plain/``: the head-end (no mount point, device_tls on)
    sees the topics of a device on the plain listener with the prefix, while the device itself uses the bare
    topics (the real Mosquitto mount). Its acks and orders go to the plain form; a relay order is refused for it;
    a TLS-side device gets its order on the bare topic."""
    headend, engine = start_headend(order_timeout_s=20)
    plain_dev = mass.Device("OSS", "PLAIN1")
    tls_dev = mass.Device("OSS", "TLS1")
    creds = {dev.serial: provision(engine, dev.flag, dev.serial) for dev in (plain_dev, tls_dev)}
    plain = fake_device(creds["PLAIN1"], headend.topics, plain_dev, tls=False)
    tls = fake_device(creds["TLS1"], headend.topics, tls_dev)
    try:
        assert headend.connected
        meters_of = {"PLAIN1": "5001", "TLS1": "5002"}
        for dev in (plain, tls):
            meter = {"flag": "MKL", "serialNumber": meters_of[dev.device.serial]}
            ref = dev.send("identification", {"meters": [meter]})
            assert dev.expect("ack")["referenceId"] == ref
        with engine.connect() as conn:
            seen = dict(conn.execute(select(modems.c.serial, modems.c.transport)).all())
            ids = dict(conn.execute(select(meters.c.serial, meters.c.id)).all())
        assert seen == {"PLAIN1": "plain", "TLS1": "tls"}

        for dev in (plain, tls):
            with engine.begin() as conn:
                orders.create_order(conn, "read", meter_id=ids[meters_of[dev.device.serial]])
            headend.wake_dispatcher()
            request = dev.expect("read")
            assert request["request"]["meter"]["serialNumber"] == meters_of[dev.device.serial]
            if dev is tls:  # answered, so the modem (one order at a time, issue 8) is free for the relay order
                serial = meters_of["TLS1"]
                raw = data_block([f"0.0.0({serial})", "1.8.0(000001.000*kWh)"])
                dev.send("read", {"meter": {"flag": "MKL", "serialNumber": serial},
                                  "data": {"id": "/MKL5X", "rawData": raw}}, ref=request["referenceId"])

        with engine.begin() as conn, pytest.raises(orders.OrderError, match="needs a TLS session"):
            orders.create_order(conn, "relay", meter_id=ids["5001"], request={"state": "disconnect"})
        with engine.begin() as conn:
            orders.create_order(conn, "relay", meter_id=ids["5002"], request={"state": "disconnect"})
        headend.wake_dispatcher()
        assert tls.expect("read")["request"]["directive"] == "relay-disconnect"
    finally:
        plain.close()
        tls.close()
