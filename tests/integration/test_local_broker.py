"""The private Mosquitto that `osos demo` starts (osos.headend.broker): configuration, restart on the same ports with
the same accounts, and the no-TLS variant (HES-4, HES-52..55)."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from osos.headend.broker import start_mosquitto
from osos.protocols import mass

pytestmark = pytest.mark.integration


def login(host: str, port: int, username: str, password: str, ca: Any = None) -> bool:
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if ca:
        client.tls_set(ca_certs=str(ca))
    done, ok = threading.Event(), []
    client.on_connect = lambda c, u, f, rc, p: (ok.append(not rc.is_failure), done.set())
    client.on_disconnect = lambda *a: done.set()
    client.connect(host, port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return bool(ok and ok[0])


def test_restart_keeps_ports_accounts_and_configuration(tmp_path, mqtt_broker) -> None:
    broker_dir = tmp_path / "broker"
    first = start_mosquitto(broker_dir, tls=True)
    try:
        with first.admin() as admin:
            creds = admin.add_device(mass.Topics("mass"), mass.Device("OSS", "9000000001"))
        ports = (first.plain_port, first.tls_port)
    finally:
        first.stop()
    conf = (broker_dir / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf and "persistence true" in conf
    assert "max_queued_messages 200000" in conf and f"log_dest file {broker_dir / 'mosquitto.log'}" in conf
    assert "mount_point plain/" in conf
    assert json.loads((broker_dir / "broker.json").read_text())["tls_port"] == ports[1]
    assert (broker_dir / "dynamic-security.json").stat().st_mode & 0o777 == 0o600
    assert creds.password not in (broker_dir / "dynamic-security.json").read_text()  # a PBKDF2 hash only

    second = start_mosquitto(broker_dir, tls=True)
    try:
        assert (second.plain_port, second.tls_port) == ports
        assert second.admin_password == first.admin_password
        assert login(second.host, second.tls_port, creds.username, creds.password, ca=second.ca)
        assert login(second.host, second.plain_port, creds.username, creds.password)
        assert not login(second.host, second.plain_port, creds.username, "wrong")
    finally:
        second.stop()


def test_without_tls_one_plain_listener_without_mount_point(tmp_path, mqtt_broker) -> None:
    local = start_mosquitto(tmp_path / "plain", tls=False, persistence=False)
    try:
        assert local.tls_port is None and local.ca is None and local.port == local.plain_port
        conf = (tmp_path / "plain" / "mosquitto.conf").read_text()
        assert "mount_point" not in conf and "allow_anonymous false" in conf
        topics = mass.Topics("mass")
        with local.admin() as admin:
            admin.ensure_headend(topics, "osos-headend", "he-secret-1")
            creds = admin.add_device(topics, mass.Device("OSS", "9000000002"))
        got: list[str] = []
        seen = threading.Event()
        sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.username_pw_set("osos-headend", "he-secret-1")
        sub.on_message = lambda c, u, m: (got.append(m.topic), seen.set())
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.connect(local.host, local.plain_port)
        sub.loop_start()
        sub.subscribe(topics.uplink_filters[1], qos=1)
        assert subscribed.wait(5)
        dev = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        dev.username_pw_set(creds.username, creds.password)
        dev.connect(local.host, local.plain_port)
        dev.loop_start()
        dev.publish(topics.uplink(mass.Device("OSS", "9000000002")), b"x", qos=1).wait_for_publish(5)
        assert seen.wait(5)
        assert got == ["mass/device/OSS/9000000002/to_server"]  # no plain/ mark: every session counts as plain
        dev.disconnect()
        dev.loop_stop()
        sub.disconnect()
        sub.loop_stop()
    finally:
        local.stop()
