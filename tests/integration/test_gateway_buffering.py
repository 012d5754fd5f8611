"""Store and forward: messages made while the broker is down arrive, in order, once it is back (HES-34).

The test runs its own Mosquitto (``osos.headend.broker``: authentication, TLS, and persistence, so the
subscriber's session and its queued messages survive the restart), stops it, lets the gateway produce while it
is away, starts it again on the same ports and checks that every message arrives with its original referenceId,
in the order it was made.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from osos.field.gateway import Gateway, GatewayConfig
from osos.headend.broker import LocalBroker, start_mosquitto
from osos.protocols import mass

pytestmark = pytest.mark.integration

def wait_port(port: int, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'}")


class Broker:
    """A private Mosquitto (the demo's code path: authentication, TLS, persistence) that restarts on the same
    ports with the same accounts and sessions."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "broker"
        self.local: LocalBroker | None = None

    def start(self) -> LocalBroker:
        self.local = start_mosquitto(self.dir, tls=True, persistence=True)
        return self.local

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()  # SIGTERM: mosquitto saves its sessions to the persistence file
            wait_port(self.local.plain_port, up=False)
            self.local = None


def test_messages_made_offline_arrive_in_order_after_the_broker_returns(tmp_path, topic_prefix, mqtt_broker) -> None:
    import paho.mqtt.client as mqtt

    broker = Broker(tmp_path)
    local = broker.start()
    topics = mass.Topics(topic_prefix)
    with local.admin() as admin:
        admin.ensure_headend(topics, "osos-headend", "headend-pw")
        creds = admin.add_device(topics, mass.Device("OSS", "0000000042"))
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with lock:
            received.append(json.loads(msg.payload))

    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{tmp_path.name}",
                      protocol=mqtt.MQTTv311, clean_session=False)
    sub.username_pw_set("osos-headend", "headend-pw")
    sub.tls_set(ca_certs=str(local.ca))
    sub.on_message = on_message
    sub.reconnect_delay_set(0.2, 1)
    sub.connect("127.0.0.1", local.tls_port)
    for topic in (*topics.uplink_filters, topics.emergency_filter):
        sub.subscribe(topic, qos=1)
    sub.loop_start()
    config = GatewayConfig(flag="OSS", serial="0000000042", data_dir=tmp_path / "gw", broker_host="127.0.0.1",
                           broker_port=local.tls_port, topic_root=topic_prefix, heartbeat_interval_s=3600,
                           reconnect_min_s=0.2, reconnect_max_s=1.0, broker_username=creds.username,
                           broker_password=creds.password, broker_tls=True, broker_ca=local.ca)
    gw = Gateway(config, [])
    try:
        gw.start()
        made = [gw.emit("notification", {"n": i}) for i in range(3)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len({m["referenceId"] for m in received}) < 4:
            time.sleep(0.05)
        assert {m["referenceId"] for m in received} >= set(made)

        broker.stop()
        assert gw.connected.wait(0) is False or _wait_down(gw)
        made += [gw.emit("notification", {"n": i}) for i in range(3, 60)]
        made.append(gw.emit("alarm", [{"type": "powerLoss", "level": "critical", "incidentCode": 23,
                                       "description": "test", "date": "2026-01-01 00:00:00"}], emergency=True))
        assert len(gw.outbox) >= 58  # held on disk while the broker is away

        broker.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not set(made) <= {m["referenceId"] for m in received}:
            time.sleep(0.1)
        with lock:
            refs = [m["referenceId"] for m in received]
        first_seen = list(dict.fromkeys(r for r in refs if r in set(made)))
        # everything arrives, each with its original referenceId; normal messages in the order made, and the
        # alarm (urgent lane, HES-24) ahead of the backlog made before it
        assert sorted(first_seen) == sorted(made)
        assert [r for r in first_seen if r != made[-1]] == made[:-1]
        assert first_seen.index(made[-1]) < first_seen.index(made[3])
        notes = [m["response"]["n"] for m in received if m["function"] == "notification"]
        assert list(dict.fromkeys(notes)) == list(range(60))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(gw.outbox):
            time.sleep(0.05)
        assert len(gw.outbox) == 0  # every message was acknowledged by the broker and forgotten
    finally:
        gw.stop()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


def _wait_down(gw: Gateway, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gw.connected.is_set():
            return True
        time.sleep(0.05)
    return False
