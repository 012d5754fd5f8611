"""End to end over the real Mosquitto and PostgreSQL (HES-38, HES-40, HES-11, HES-35, AMR-5, AMR-7): one gateway
with an IEC meter (Makel), a DLMS meter and a Modbus analyzer behind it; the head-end sends read, load-profile,
relay and time-set orders, each answered through the directive the meter's library profile provides, and each
order succeeds with the values the simulators hold (computed here from their state, not from the code).

covers HES-10, HES-11, HES-35, HES-36, HES-38, HES-40, HES-41, HES-44, HES-63, AMR-5, AMR-7
"""

from __future__ import annotations

import datetime as dt
import struct
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from osos.config import Settings
from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer
from osos.field.meters.iec import SimMeter
from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.headend import orders
from osos.headend.service import HeadEnd
from osos.protocols import modbus as M
from osos.store.db import make_engine, migrate
from osos.store.schema import meters

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)
GW_NOW = T0 + dt.timedelta(hours=2)  # the gateway's clock (and the IEC meter's)
PASSWORD = "12345678"


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_read_load_profile_relay_and_time_set_across_three_protocols(pg_url, mqtt_broker, topic_prefix, provision,
                                                                     tmp_path) -> None:
    iec = SimMeter(MeterModel("20000001", "kombi", T0, load=ConstantLoad(1000), initial_wh=2_000_000),
                   brand("makel"), address="20000001")
    dlms_now = GW_NOW
    dlms = SimulatedDlmsMeter(lambda: dlms_now, MeterSecrets(password=PASSWORD.encode()))
    dlms.set_time(GW_NOW - dt.timedelta(minutes=7))  # a meter clock 7 minutes slow, for the time-set order
    sdm = M.load_map("eastron-sdm630")
    analyzer = SimulatedAnalyzer(sdm, seed=7, unit=1, clock=lambda: GW_NOW)
    mqtt_broker.headend_role_for(topic_prefix)
    settings = Settings(mqtt_host=mqtt_broker.host, mqtt_port=mqtt_broker.tls_port, topic_root=topic_prefix,
                        database_url=pg_url, headend_id=f"he-{uuid.uuid4().hex[:8]}", order_timeout_s=30,
                        mqtt_username=mqtt_broker.headend_username, mqtt_password=mqtt_broker.headend_password,
                        mqtt_tls=True, mqtt_ca=mqtt_broker.ca, device_tls=True,
                        # the gateway's scripted clock is months behind the head-end's: automatic time-set orders
                        # (HES-35, tested in test_timesync*) would change the meters under this test's scripted orders
                        time_sync_threshold_s=10**9)
    engine = make_engine(pg_url)
    migrate(engine)
    creds = provision(engine, "OSS", "GW3PROTO")
    headend = HeadEnd(settings, engine)
    with TcpMeterServer([iec], clock=lambda: GW_NOW) as iec_srv, WrapperServer(dlms) as dlms_srv, \
            AnalyzerServer([analyzer], framer="rtu") as mb_srv:
        configs = [
            MeterConfig(link=f"{iec_srv.url}?address=20000001", flag="MKL", serial="20000001", kind="kombi",
                        password=iec.password, max_baud=19200, profile="makel"),
            MeterConfig(link=f"tcp://127.0.0.1:{dlms_srv.port}", flag="OSS", serial="00012345", protocol="dlms",
                        profile="osos-sim-dlms", password=PASSWORD),
            # Modbus analyzers have no FLAG code: the inventory names it (EAS is this test's choice)
            MeterConfig(link=f"tcp://127.0.0.1:{mb_srv.port}", flag="EAS", serial="SDM0001", protocol="modbus",
                        profile="eastron-sdm630"),
        ]
        gw = Gateway(GatewayConfig(flag="OSS", serial="GW3PROTO", data_dir=tmp_path / "gw", topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds)),
                     configs, clock=lambda: GW_NOW)
        headend.start()
        gw.start()
        try:
            def meter_ids() -> dict[str, int] | None:
                with engine.connect() as conn:
                    rows = conn.execute(select(meters.c.serial, meters.c.id, meters.c.protocol)
                                        .where(meters.c.serial.in_([c.serial for c in configs]))).all()
                return {r.serial: r.id for r in rows} if len(rows) == 3 else None

            ids = wait_for(meter_ids, what="the three meters from the identification")

            def order(kind: str, serial: str, request: dict | None = None) -> dict:
                with engine.begin() as conn:
                    order_id = orders.create_order(conn, kind, meter_id=ids[serial], request=request)
                headend.wake_dispatcher()

                def done() -> dict | None:
                    with engine.connect() as conn:
                        got = orders.get_order(conn, order_id)
                    return got if got and got["status"] in ("succeeded", "failed") else None

                finished = wait_for(done, what=f"{kind} order for {serial}")
                assert finished["status"] == "succeeded", finished["error"]
                return finished["result"]

            # IEC 62056-21 readout: 2 000 000 Wh + 1000 W for 2 h
            regs = order("read", "20000001")["registers"]
            assert Decimal(regs["1.8.0"]["value"]) == Decimal(2_000_000 + 1000 * 2) / 1000
            assert regs["1.8.0"]["unit"] == "kWh"

            # IEC load profile by an ISO range: the gateway asks R5 P.01(YYMMDDhhmm;…) in meter time (UTC+3)
            result = order("load-profile", "20000001", {"start": "2026-03-10T06:00:00+00:00",
                                                        "end": "2026-03-10T08:00:00+00:00"})
            entries = iec.model.profile_between(T0, GW_NOW)
            assert len(entries) == 8  # kombi: 15-minute periods
            utc3 = dt.timezone(dt.timedelta(hours=3))
            assert [r["time"] for r in result["profile"]] == [e.end.astimezone(utc3).strftime("%Y-%m-%dT%H:%M")
                                                              for e in entries]
            assert [Decimal(r["values"]["1.29.0"]["value"]) for r in result["profile"]] == [
                Decimal(e.import_wh) / 1000 for e in entries]

            # IEC time-set: a meter clock 7 minutes slow is set to the gateway's time by W1 0.9.1/0.9.2 (HES-35)
            iec.model.clock_offset = -dt.timedelta(minutes=7)
            order("time-set", "20000001")
            assert iec.model.clock_offset == dt.timedelta(0)

            # DLMS short read: registers in 0.1 Wh (scaler -1, unit Wh) as the simulator holds them
            result = order("read", "00012345", {"directive": "short-read"})
            assert result["protocol"] == "dlms"
            held = dlms.registers()
            for tariff in range(5):
                assert Decimal(result["registers"][f"1.0.1.8.{tariff}.255"]["value"]) == Decimal(held[tariff]) / 10

            # time-set: the meter clock was 7 minutes slow; now it shows the gateway's time (HES-35)
            result = order("time-set", "00012345")
            assert dlms.local_now() == GW_NOW
            assert dt.datetime.fromisoformat(result["registers"]["0.0.1.0.0.255"]["value"]) == GW_NOW

            # DLMS load profile 06:00..08:00 UTC, clock now right: three hourly rows of the energy register
            result = order("load-profile", "00012345", {"start": "2026-03-10T06:00:00+00:00",
                                                        "end": "2026-03-10T08:00:00+00:00"})
            hours = [T0 + dt.timedelta(hours=h) for h in range(3)]
            assert [dt.datetime.fromisoformat(r["time"]) for r in result["profile"]] == hours
            for row, when in zip(result["profile"], hours, strict=True):
                expected = Decimal(dlms.energy.registers(when.astimezone(dlms.tz))[0]) / 10
                assert Decimal(row["values"]["1.0.1.8.0.255"]["value"]) == expected

            # relay: disconnect, then connect; the meter's own disconnector follows (HES-11)
            result = order("relay", "00012345", {"state": "disconnect"})
            assert result["registers"]["0.0.96.3.10.255"]["value"] == "disconnected"
            assert dlms.disconnector.control_state == 0
            result = order("relay", "00012345", {"state": "connect"})
            assert result["registers"]["0.0.96.3.10.255"]["value"] == "connected"
            assert dlms.disconnector.control_state == 1

            # Modbus: the SDM630 short read, float32 words decoded by the head-end
            result = order("read", "SDM0001", {"directive": "short-read"})
            words = analyzer.words_at(GW_NOW)
            for name in ("voltage_l1_n", "frequency", "active_energy_import"):
                reg = sdm.register(name)
                raw = struct.pack(">HH", words[reg.reference], words[reg.reference + 1])
                assert Decimal(result["registers"][name]["value"]) == M.float32_to_decimal(raw), name

            # an IEC meter has no relay in its profile: the gateway refuses (failCode 13), the order fails
            with engine.begin() as conn:
                refused = orders.create_order(conn, "relay", meter_id=ids["20000001"], request={"state": "connect"})
            headend.wake_dispatcher()

            def refused_done() -> dict | None:
                with engine.connect() as conn:
                    got = orders.get_order(conn, refused)
                return got if got and got["status"] == "failed" else None

            assert "13" in wait_for(refused_done, what="the refused relay order")["error"]
        finally:
            gw.stop()
            headend.stop()
            engine.dispose()
