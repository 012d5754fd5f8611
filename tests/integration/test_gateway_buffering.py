"""Store and forward: messages made while the broker is down arrive, in order, once it is back (HES-34).

The test runs its own Mosquitto on a free port (with persistence, so the subscriber's session and its
queued messages survive the restart), stops it, lets the gateway produce while it is away, starts it again
and checks that every message arrives with its original referenceId, in the order it was made.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from osos.field.gateway import Gateway, GatewayConfig

pytestmark = pytest.mark.integration

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # started as root, mosquitto drops to its own user: the persistence folder must be reachable for it
        self.db = Path(tempfile.mkdtemp(prefix="osos-mosq-"))
        self.db.chmod(0o777)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.db}/\nautosave_interval 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its sessions to the persistence file
            self.proc.wait(timeout=10)
            self.proc = None
        wait_port(self.port, up=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.db, ignore_errors=True)


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto binary not installed")
def test_messages_made_offline_arrive_in_order_after_the_broker_returns(tmp_path, topic_prefix) -> None:
    import paho.mqtt.client as mqtt

    broker = Broker(tmp_path)
    broker.start()
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with lock:
            received.append(json.loads(msg.payload))

    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{tmp_path.name}",
                      protocol=mqtt.MQTTv311, clean_session=False)
    sub.on_message = on_message
    sub.reconnect_delay_set(0.2, 1)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(f"{topic_prefix}/device/#", qos=1)
    sub.loop_start()
    config = GatewayConfig(flag="OSS", serial="0000000042", data_dir=tmp_path / "gw", broker_host="127.0.0.1",
                           broker_port=broker.port, topic_root=topic_prefix, heartbeat_interval_s=3600,
                           reconnect_min_s=0.2, reconnect_max_s=1.0)
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
        broker.cleanup()


def _wait_down(gw: Gateway, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gw.connected.is_set():
            return True
        time.sleep(0.05)
    return False
