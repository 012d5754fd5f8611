"""End to end over the real Mosquitto and PostgreSQL (AMR-6, HES-24, HES-28): a gateway reads a simulated Makel
meter every half second; when the meter's top cover opens, the gateway pushes the FF bit on the emergency topic
and its next readouts carry it in F.F.0 — the head-end keeps one raised alarm for it; when the cover closes the
bit goes away and the alarm is cleared by the device, while the history bit (7) is raised as information.

covers AMR-6, HES-11, HES-24, HES-28
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.store.schema import alarms

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)
GW_NOW = T0 + dt.timedelta(hours=2)


def test_cover_open_is_one_alarm_and_clears_when_closed(start_headend, provision, mqtt_broker, topic_prefix,
                                                        tmp_path, wait_until) -> None:
    headend, engine = start_headend()
    creds = provision(engine, "OSS", "GWALM01")
    iec = SimMeter(MeterModel("20000002", "kombi", T0, load=ConstantLoad(500), initial_wh=1_000_000),
                   brand("makel"), address="20000002")

    def alarm_rows() -> list:
        with engine.connect() as conn:
            return list(conn.execute(select(alarms).order_by(alarms.c.id)))

    with TcpMeterServer([iec], clock=lambda: GW_NOW) as srv:
        config = MeterConfig(link=f"{srv.url}?address=20000002", flag="MKL", serial="20000002", kind="kombi",
                             password=iec.password, max_baud=19200, profile="makel")
        gw = Gateway(GatewayConfig(flag="OSS", serial="GWALM01", data_dir=tmp_path / "gw", topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, read_interval_s=0.5,
                                   **mqtt_broker.gateway_kwargs(creds)),
                     [config], clock=lambda: GW_NOW)
        gw.start()
        try:
            reads = lambda: headend.stats.stored  # noqa: E731
            wait_until(lambda: reads() >= 3, what="the first push reads")
            assert alarm_rows() == []  # a healthy meter: FF is zero
            with iec.lock:
                iec.model.open_top_cover(GW_NOW)
            wait_until(lambda: any(r.code == "FF.6" for r in alarm_rows()), what="the top-cover alarm")
            seen = reads()
            wait_until(lambda: reads() >= seen + 4, what="more readouts carrying the bit")
            open_rows = [r for r in alarm_rows() if r.code == "FF.6"]
            assert len(open_rows) == 1  # the push and every readout after it: one alarm
            (cover,) = open_rows
            assert (cover.type, cover.severity, cover.state, cover.emergency) == ("topCoverOpen", "critical",
                                                                                  "raised", True)
            assert cover.repeats >= 1
            with iec.lock:
                iec.model.close_top_cover(GW_NOW)
            wait_until(lambda: next(r for r in alarm_rows() if r.code == "FF.6").state == "cleared",
                       what="the alarm cleared by the device")
            history = [r for r in alarm_rows() if r.code == "FF.7"]
            assert [(r.type, r.severity, r.state) for r in history] == [("topCoverOpen", "info", "raised")]
        finally:
            gw.stop()
