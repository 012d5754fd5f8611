"""A modem-level read returns every meter's result, not the first one (issue 8 item 1), over the real Mosquitto and
PostgreSQL with the project's gateway: the gateway answers a read without a meter with one read message per meter
(same referenceId, no final message), so the order waits for as many answers as the inventory has meters behind
the modem. Expected values come from the simulated meters' own state.

covers HES-10, HES-36, HES-63
"""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from osos.config import Settings
from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.headend import orders
from osos.headend.service import HeadEnd
from osos.store.db import make_engine, migrate
from osos.store.schema import meters, modems

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)
GW_NOW = T0 + dt.timedelta(hours=2)


def wait_for(predicate, timeout: float = 40.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_modem_read(pg_url, mqtt_broker, topic_prefix, provision, tmp_path, serial: str,  # type: ignore[no-untyped-def]
                   sims: list[SimMeter], dead: list[str]) -> dict:
    """Start a head-end and a gateway with these simulated meters (and ``dead`` ones on a closed port), order a
    read of the whole modem and return the finished order."""
    mqtt_broker.headend_role_for(topic_prefix)
    settings = Settings(mqtt_host=mqtt_broker.host, mqtt_port=mqtt_broker.tls_port, topic_root=topic_prefix,
                        database_url=pg_url, headend_id=f"he-{uuid.uuid4().hex[:8]}", order_timeout_s=30,
                        mqtt_username=mqtt_broker.headend_username, mqtt_password=mqtt_broker.headend_password,
                        mqtt_tls=True, mqtt_ca=mqtt_broker.ca, device_tls=True)
    engine = make_engine(pg_url)
    migrate(engine)
    creds = provision(engine, "OSS", serial)
    headend = HeadEnd(settings, engine)
    with TcpMeterServer(sims, clock=lambda: GW_NOW) as srv:
        configs = [MeterConfig(link=f"{srv.url}?address={m.model.serial}", flag="MKL", serial=m.model.serial,
                               kind="kombi", password=m.password, max_baud=19200, profile="makel") for m in sims]
        configs += [MeterConfig(link=f"tcp://127.0.0.1:{closed_port()}?address={s}", flag="MKL", serial=s,
                                kind="kombi", password="00000000", profile="makel") for s in dead]
        gw = Gateway(GatewayConfig(flag="OSS", serial=serial, data_dir=tmp_path / "gw", topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds)),
                     configs, clock=lambda: GW_NOW)
        headend.start()
        gw.start()
        try:
            def modem_with_meters() -> int | None:
                with engine.connect() as conn:
                    modem_id = conn.execute(select(modems.c.id).where(modems.c.serial == serial)).scalar_one()
                    n = conn.execute(select(func.count()).select_from(meters)
                                     .where(meters.c.modem_id == modem_id)).scalar_one()
                return modem_id if n == len(configs) else None

            modem_id = wait_for(modem_with_meters, what="the meters from the identification")
            with engine.begin() as conn:
                oid = orders.create_order(conn, "read", modem_id=modem_id, max_attempts=1)
            headend.wake_dispatcher()

            def done() -> dict | None:
                with engine.connect() as conn:
                    got = orders.get_order(conn, oid)
                return got if got and got["status"] not in ("pending", "running") else None

            return wait_for(done, what="the modem-level read")
        finally:
            gw.stop()
            headend.stop()
            engine.dispose()


def sim(serial: str, initial_wh: int) -> SimMeter:
    return SimMeter(MeterModel(serial, "kombi", T0, load=ConstantLoad(1000), initial_wh=initial_wh),
                    brand("makel"), address=serial)


def expected_kwh(initial_wh: int) -> Decimal:
    return Decimal(initial_wh + 1000 * 2) / 1000  # 1000 W for the 2 h between T0 and the gateway's clock


def test_a_modem_level_read_collects_every_meters_result(pg_url, mqtt_broker, topic_prefix, provision,
                                                        tmp_path) -> None:
    sims = [sim("21000001", 1_000_000), sim("21000002", 3_500_000), sim("21000003", 250_000)]
    order = run_modem_read(pg_url, mqtt_broker, topic_prefix, provision, tmp_path, "GWALL3", sims, dead=[])
    assert order["status"] == "succeeded", order["error"]
    result = order["result"]
    assert (result["answered"], result["expected"]) == (3, 3)
    assert sorted(result["meters"]) == ["MKL21000001", "MKL21000002", "MKL21000003"]
    for m, initial in zip(sims, (1_000_000, 3_500_000, 250_000), strict=True):
        registers = result["meters"][f"MKL{m.model.serial}"]["registers"]
        assert Decimal(registers["1.8.0"]["value"]) == expected_kwh(initial)
    assert [a["outcome"] for a in order["attempt_log"]] == ["succeeded"]


def test_a_meter_that_fails_fails_the_modem_read_but_keeps_the_others(pg_url, mqtt_broker, topic_prefix, provision,
                                                                     tmp_path) -> None:
    sims = [sim("22000001", 4_000_000)]
    order = run_modem_read(pg_url, mqtt_broker, topic_prefix, provision, tmp_path, "GWDEAD", sims,
                           dead=["22000009"])
    assert order["status"] == "failed"
    assert order["error"].startswith("1 of 2 meters failed: MKL22000009: read failed: 1")
    good = order["result"]["meters"]["MKL22000001"]["registers"]
    assert Decimal(good["1.8.0"]["value"]) == expected_kwh(4_000_000)
