"""The simulated fleet against the real Mosquitto: joins, push reads, injected events become alarms (HES-66)."""

from __future__ import annotations

import json
import queue
import time
from typing import Any

import pytest

from osos.field.fleet import Fleet

pytestmark = pytest.mark.integration


def device_accounts(broker: Any, root: str) -> Any:
    """Each simulated gateway gets its own broker account, made when the fleet builds it."""

    def make(flag: str, serial: str) -> tuple[str, str]:
        creds = broker.device(root, flag, serial)
        return creds.username, creds.password

    return make


def test_fleet_joins_reads_and_alarms(tmp_path, mqtt_broker, topic_prefix) -> None:  # covers HES-38, AMR-6
    inbox: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    sub = mqtt_broker.headend_client(topic_prefix)
    sub.on_message = lambda c, u, m: inbox.put((m.topic, json.loads(m.payload)))
    for topic in mqtt_broker.headend_filters(topic_prefix):
        sub.subscribe(topic, qos=1)
    sub.loop_start()
    fleet = Fleet(mqtt_broker.host, mqtt_broker.tls_port, gateways=3, topic_root=topic_prefix, read_interval_s=1.0,
                  heartbeat_interval_s=1.0, data_dir=tmp_path, seed=5, events=False, acceleration=60.0,
                  broker_credentials=device_accounts(mqtt_broker, topic_prefix), broker_ca=mqtt_broker.ca)
    seen: list[tuple[str, dict[str, Any]]] = []

    def wait_for(pred, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        for item in seen:
            if pred(*item):
                return item
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(item)
            if pred(*item):
                return item
        raise AssertionError("expected message did not arrive")

    try:
        fleet.start()
        serials = {u.gateway.device.serial for u in fleet.units}
        for serial in serials:
            _, ident = wait_for(lambda t, m, s=serial: m["function"] == "identification"
                                and m["device"]["serialNumber"] == s)
            meters = ident["response"]["meters"]
            assert 1 <= len(meters) <= 4
            assert {m["flag"] for m in meters} <= {"ELM", "MKL", "VIK"}
        all_meters = {m.serial for u in fleet.units for m in u.meters}
        for serial in all_meters:
            wait_for(lambda t, m, s=serial: m["function"] == "read" and m["response"].get("push")
                     and m["response"]["meter"]["serialNumber"] == s)
        unit = fleet.units[0]
        fleet.inject(unit, 0, "power_off")
        topic, alarm = wait_for(lambda t, m: m["function"] == "alarm")
        assert topic.endswith(f"/device/{unit.gateway.device.flag}/{unit.gateway.device.serial}/emergency")
        assert alarm["response"][0]["type"] == "powerLoss"
        assert alarm["response"][0]["meter"]["serialNumber"] == unit.meters[0].serial
    finally:
        fleet.stop()
        sub.loop_stop()
        sub.disconnect()


def test_same_seed_same_inventory(tmp_path) -> None:
    def inventory(seed: int) -> list[tuple[str, str, str, str]]:
        fleet = Fleet("127.0.0.1", 1, gateways=4, data_dir=tmp_path / str(seed) / str(time.monotonic_ns()),
                      seed=seed).build()
        try:
            return [(u.gateway.device.serial, m.serial, m.brand.flag, m.kind) for u in fleet.units for m in u.meters]
        finally:
            fleet.stop()

    first = inventory(11)
    assert first == inventory(11)
    assert first != inventory(12)
    assert {kind for *_, kind in first} <= {"single-phase", "three-phase", "kombi"}


@pytest.mark.slow
def test_fleet_soak_with_events(tmp_path, mqtt_broker, topic_prefix) -> None:  # covers HES-66
    """One minute of 10 gateways with injected outages and cover openings: no read fails, every meter keeps
    being read, every alarm names a meter an event was injected into."""
    got: list[dict[str, Any]] = []
    sub = mqtt_broker.headend_client(topic_prefix)
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    for topic in mqtt_broker.headend_filters(topic_prefix):
        sub.subscribe(topic, qos=1)
    sub.loop_start()
    fleet = Fleet(mqtt_broker.host, mqtt_broker.tls_port, gateways=10, topic_root=topic_prefix, read_interval_s=5.0,
                  heartbeat_interval_s=10, data_dir=tmp_path, seed=9, events=True, event_interval_s=2.0,
                  broker_credentials=device_accounts(mqtt_broker, topic_prefix), broker_ca=mqtt_broker.ca)
    try:
        fleet.start()
        time.sleep(60)
    finally:
        fleet.stop()
        time.sleep(1)
        sub.loop_stop()
        sub.disconnect()
    reads = [m for m in got if m["function"] == "read"]
    assert not [m for m in reads if m.get("messageStatus") == "fail"]
    per_meter: dict[str, int] = {}
    for m in reads:
        per_meter[m["response"]["meter"]["serialNumber"]] = per_meter.get(m["response"]["meter"]["serialNumber"], 0) + 1
    all_meters = {m.serial for u in fleet.units for m in u.meters}
    assert set(per_meter) == all_meters and min(per_meter.values()) >= 60 // 5 - 2
    injected = {serial for serial, _ in fleet.injected}
    alarms = [a for m in got if m["function"] == "alarm" for a in m["response"]]
    assert injected and alarms
    assert {a["meter"]["serialNumber"] for a in alarms} <= injected
