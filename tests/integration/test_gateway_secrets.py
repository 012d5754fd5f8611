"""Meter secrets end to end over the real Mosquitto (and PostgreSQL for the head-end) - issue 7, HES-56.

* a meter whose password is not configured fails its programming-mode order as a failed order (not a crash),
  while its readout still works, and a meter whose password is in the store is programmed;
* no secret (IEC password, DLMS ek/ak) ever appears in any uplink payload (every message on the topic root is
  captured raw and searched);
* the gateway's HLS-GMAC invocation counter survives a restart: after the restart its first frame uses a counter
  past the last one the meter saw, without the recovery round trip through the public client.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from osos.field import dlms_client
from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.field.secrets import KEY_ENV, SecretStore, generate_key, parse_key
from osos.headend import orders
from osos.protocols import mass
from osos.store.schema import meters

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=2)
EK, AK = bytes.fromhex("7a1c5e3b9d20f4a6c8e01b3d5f7092a4"), bytes.fromhex("e4c2a08f6d4b2907e5c3a1f8d6b49270")
DLMS_PASSWORD = "Lls-pw-93xq"
TITLE = b"OSO\x00\x00\x00\x00\x01"  # the gateway's client system title (protocol_ops default)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Tap:
    """Every message on the test's topic root, raw, as the broker delivered it (uplink and downlink)."""

    def __init__(self, broker: Any, root: str) -> None:
        self.raw: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = broker.tap_client(root, client_id=f"tap-{uuid.uuid4().hex[:8]}")  # a test-only wiretap
        self.client.on_message = self._on_message
        self.client.subscribe(f"{root}/#", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.raw.append((msg.topic, bytes(msg.payload)))

    def uplink(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            items = list(self.raw)
        return [(t, json.loads(p)) for t, p in items if "/device/" in t]

    def answer(self, ref: str, function: str = "read") -> dict[str, Any] | None:
        return next((b for _, b in self.uplink() if b.get("referenceId") == ref and b["function"] == function),
                    None)

    def assert_carries_none_of(self, *secrets: str) -> None:
        with self.lock:
            blobs = [p for _, p in self.raw]
        assert blobs, "nothing captured"
        for secret in secrets:
            for variant in {secret, secret.lower(), secret.upper()}:
                assert not any(variant.encode() in blob for blob in blobs), f"a payload carries {variant!r}"

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        self.client.publish(topic, mass.encode(message), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_missing_password_fails_the_order_and_no_secret_goes_uplink(start_headend, mqtt_broker, topic_prefix,
                                                                    provision, tmp_path, monkeypatch,
                                                                    caplog) -> None:
    key = generate_key()
    monkeypatch.setenv(KEY_ENV, key)
    with_pw = SimMeter(MeterModel("20000001", "single-phase", T0, load=ConstantLoad(1000), initial_wh=2_000_000),
                       brand("makel"), address="20000001", password="Mk-7Q2x9W")
    without = SimMeter(MeterModel("20000002", "single-phase", T0, load=ConstantLoad(500), initial_wh=1_000_000),
                       brand("viko"), address="20000002", password="Vk-3p8Z1r")
    data_dir = tmp_path / "gw"
    SecretStore.open(data_dir, key=parse_key(key)).set("mkl-20000001", "password", with_pw.password)
    headend, engine = start_headend()
    creds = provision(engine, "OSS", "GWSECRET1")
    tap = Tap(mqtt_broker, topic_prefix)
    with TcpMeterServer([with_pw, without], clock=lambda: NOW) as server:
        configs = [
            MeterConfig(link=f"{server.url}?address=20000001&secret=mkl-20000001", flag="MKL", serial="20000001",
                        secret="mkl-20000001", profile="makel"),
            MeterConfig(link=f"{server.url}?address=20000002", flag="VIK", serial="20000002", profile="viko"),
        ]
        gw = Gateway(GatewayConfig(flag="OSS", serial="GWSECRET1", data_dir=data_dir, topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds)),
                     configs, clock=lambda: NOW)
        gw.start()
        try:
            def meter_ids() -> dict[str, int] | None:
                with engine.connect() as conn:
                    rows = conn.execute(select(meters.c.serial, meters.c.id)
                                        .where(meters.c.serial.in_(["20000001", "20000002"]))).all()
                return {r.serial: r.id for r in rows} if len(rows) == 2 else None

            ids = wait_for(meter_ids, what="both meters from the identification")

            def order(kind: str, serial: str) -> dict:
                with engine.begin() as conn:
                    order_id = orders.create_order(conn, kind, meter_id=ids[serial])
                headend.wake_dispatcher()

                def done() -> dict | None:
                    with engine.connect() as conn:
                        got = orders.get_order(conn, order_id)
                    return got if got and got["status"] in ("succeeded", "failed") else None

                return wait_for(done, what=f"{kind} order for {serial}")

            # the configured meter is programmed: its clock, 7 minutes slow, is set (HES-35)
            with_pw.model.clock_offset = -dt.timedelta(minutes=7)
            assert order("time-set", "20000001")["status"] == "succeeded"
            assert with_pw.model.clock_offset == dt.timedelta(0)
            # the meter without a configured password: a failed order that says why, the meter untouched
            without.model.clock_offset = -dt.timedelta(minutes=7)
            failed = order("time-set", "20000002")
            assert failed["status"] == "failed" and "secret store" in str(failed["error"]), failed
            assert without.model.clock_offset == -dt.timedelta(minutes=7)
            # ... while a readout, which needs no password, still works
            read = order("read", "20000002")
            assert read["status"] == "succeeded", read
            assert read["result"]["registers"]["1.8.0"]["unit"] == "kWh"
            # the gateway is still alive and answering after the failure
            assert order("read", "20000001")["status"] == "succeeded"
        finally:
            gw.stop()
            time.sleep(0.3)
            tap.close()
    assert any(b["function"] == "identification" for _, b in tap.uplink())
    tap.assert_carries_none_of(with_pw.password, without.password)
    assert with_pw.password not in caplog.text


def test_hls_counter_survives_a_gateway_restart_without_recovery(mqtt_broker, topic_prefix, tmp_path,
                                                                 monkeypatch) -> None:
    creds = mqtt_broker.device(topic_prefix, "OSS", "GWSECRET2")
    key = generate_key()
    monkeypatch.setenv(KEY_ENV, key)
    data_dir = tmp_path / "gw"
    store = SecretStore.open(data_dir, key=parse_key(key))
    store.set("dlms-1", "ek", EK.hex())
    store.set("dlms-1", "ak", AK.hex())
    store.set("dlms-1", "password", DLMS_PASSWORD)
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=DLMS_PASSWORD.encode(), ek=EK, ak=AK))
    seen: list[tuple[int, bool]] = []  # every client counter the meter was offered, and whether it was accepted
    accept = meter.accept_client_ic

    def recording(system_title: bytes, ic: int) -> int | None:
        expected = accept(system_title, ic)
        if system_title == TITLE:
            seen.append((ic, expected is None))
        return expected

    monkeypatch.setattr(meter, "accept_client_ic", recording)
    recoveries: list[int] = []
    real_reader = dlms_client.read_invocation_counter

    def counting_reader(transport: Any) -> int:
        recoveries.append(1)
        return real_reader(transport)

    monkeypatch.setattr(dlms_client, "read_invocation_counter", counting_reader)
    tap = Tap(mqtt_broker, topic_prefix)

    def run_gateway(ref: str) -> dict[str, Any]:
        config = MeterConfig(link=f"tcp://127.0.0.1:{srv.port}", flag="OSS", serial="00012345", protocol="dlms",
                             profile="osos-sim-dlms", auth="hls-gmac", client_sap="1", secret="dlms-1")
        gw = Gateway(GatewayConfig(flag="OSS", serial="GWSECRET2", data_dir=data_dir, topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds)),
                     [config], clock=lambda: NOW)
        gw.start()
        try:
            assert gw.connected.wait(10)
            time.sleep(0.3)
            tap.publish(gw.topics.downlink(gw.device),
                        mass.make("read", gw.device, reference_id=ref, request={"directive": "short-read"}))
            return wait_for(lambda: tap.answer(ref), what=f"read answer {ref}")
        finally:
            gw.stop()

    with WrapperServer(meter) as srv:
        first = run_gateway("hls-1")
        assert first.get("messageStatus") != "fail" and first["response"]["values"], first
        used_before = max(ic for ic, _ in seen)
        offered_before = len(seen)
        # a restart: a new Gateway object on the same data directory
        second = run_gateway("hls-2")
    tap.close()
    assert second.get("messageStatus") != "fail" and second["response"]["values"], second
    after = seen[offered_before:]
    assert after and after[0][0] > used_before  # the first frame after the restart is already past the last one
    assert all(ok for _, ok in after)  # ... and the meter accepted every one: no stale counter, no rejection
    assert recoveries == []  # no recovery round trip through the public client
    tap.assert_carries_none_of(EK.hex(), AK.hex(), DLMS_PASSWORD)
