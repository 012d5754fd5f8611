"""`osos gateway` and `osos simulate` run against the real Mosquitto and stop cleanly after --duration."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from osos.cli.main import app

pytestmark = pytest.mark.integration


def collect(host: str, port: int, root: str) -> tuple[list[dict[str, Any]], Any]:
    import paho.mqtt.client as mqtt

    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(c: Any, u: Any, m: Any) -> None:
        with lock:
            got.append(json.loads(m.payload))

    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(host, port)
    sub.subscribe(f"{root}/#", qos=1)
    sub.loop_start()
    time.sleep(0.2)
    return got, sub


def test_gateway_command_with_a_simulated_meter(tmp_path, mqtt_broker, topic_prefix) -> None:
    got, sub = collect(*mqtt_broker, topic_prefix)
    try:
        result = CliRunner().invoke(app, [
            "gateway", "--broker", f"{mqtt_broker[0]}:{mqtt_broker[1]}", "--flag", "OSS", "--serial", "0000000077",
            "--sim-meter", "viko:kombi", "--topic-root", topic_prefix, "--data-dir", str(tmp_path),
            "--read-interval", "0.5", "--duration", "2.5",
        ])
        assert result.exit_code == 0, result.output
        assert "simulated Viko kombi meter" in result.output
        time.sleep(0.3)
    finally:
        sub.loop_stop()
        sub.disconnect()
    ident = next(m for m in got if m["function"] == "identification")
    assert ident["device"] == {"flag": "OSS", "serialNumber": "0000000077"}
    assert ident["response"]["meters"][0]["flag"] == "VIK"
    reads = [m for m in got if m["function"] == "read"]
    assert reads and reads[0]["response"]["push"] is True and reads[0]["response"]["bccOk"] is True


def test_gateway_command_rejects_bad_arguments(tmp_path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["gateway", "--flag", "OSS", "--serial", "1", "--meter", "udp://x:1",
                              "--data-dir", str(tmp_path), "--duration", "0.1"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["gateway", "--flag", "OSS", "--serial", "1", "--broker", "nohostport",
                              "--data-dir", str(tmp_path), "--duration", "0.1"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["gateway", "--flag", "OSS", "--serial", "1", "--sim-meter", "acme:kombi",
                              "--data-dir", str(tmp_path), "--duration", "0.1"])
    assert bad.exit_code == 2


def test_simulate_command(tmp_path, mqtt_broker, topic_prefix) -> None:
    got, sub = collect(*mqtt_broker, topic_prefix)
    try:
        result = CliRunner().invoke(app, [
            "simulate", "--broker", f"{mqtt_broker[0]}:{mqtt_broker[1]}", "--gateways", "2", "--seed", "3",
            "--topic-root", topic_prefix, "--data-dir", str(tmp_path), "--read-interval", "1",
            "--heartbeat", "1", "--no-events", "--mqtt", "v311", "--duration", "2.5",
        ])
        assert result.exit_code == 0, result.output
        assert "fleet: 2 gateways" in result.output
        time.sleep(0.3)
    finally:
        sub.loop_stop()
        sub.disconnect()
    gateways = {m["device"]["serialNumber"] for m in got if m["function"] == "identification"}
    assert gateways == {"0030000000", "0030000001"}
    assert any(m["function"] == "heartbeat" for m in got)
