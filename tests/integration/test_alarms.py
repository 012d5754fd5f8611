"""Alarms on both stores (SQLite and the real PostgreSQL): device alarms normalized, notifications, FF bits that
appear and go away, a changed GF code, HES-33 rules on analyzer reads, dedup of open alarms, and the state machine
raised -> acknowledged -> cleared.

covers HES-11, HES-24, HES-25, HES-28, HES-33
"""

from __future__ import annotations

import json
import struct
from datetime import timedelta
from functools import reduce

import pytest
from sqlalchemy import select

from osos.headend import alarms as A
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import alarms, meters

pytestmark = pytest.mark.integration

TOPICS = mass.Topics("mass")
GW = mass.Device("OSS", "GW0009")


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    with eng.begin() as conn:
        register_modem(conn, GW.flag, GW.serial, by="test", now=utcnow())
    yield eng
    eng.dispose()


def up(function: str, response: object, ref: str, emergency: bool = False) -> Incoming:
    msg = {"device": {"flag": GW.flag, "serialNumber": GW.serial}, "function": function, "referenceId": ref,
           "response": response}
    topic = TOPICS.emergency(GW) if emergency else TOPICS.uplink(GW)
    return Incoming(topic=topic, payload=json.dumps(msg).encode(), token=ref)


def readout(ref: str, serial: str, lines: list[str], read_date: str) -> Incoming:
    """An IEC 62056-21 readout block built here: STX, lines, '!', CR LF, ETX, BCC (XOR after STX up to ETX)."""
    body = "".join(line + "\r\n" for line in [f"0.0.0({serial})", *lines]) + "!\r\n\x03"
    raw = "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))
    return up("read", {"meter": {"flag": "MKL", "serialNumber": serial}, "readDate": read_date,
                       "timezone": "+00:00", "data": {"id": "/MKL5MSY3P", "rawData": raw}}, ref)


def rows(engine, *where):
    with engine.connect() as conn:
        q = select(alarms).order_by(alarms.c.id)
        for w in where:
            q = q.where(w)
        return list(conn.execute(q))


def store(engine, *items: Incoming) -> None:
    out = Ingestor(engine, TOPICS).process(list(items))
    assert [o.status for o in out] == ["stored"] * len(items), [o.error for o in out]


def test_device_alarms_get_a_normalized_type_and_severity(engine) -> None:
    sent = [  # (type as a vendor sends it, level) -> expected (type, severity), from osos/data/alarms/types.toml
        ("lastGasp", None, "powerLoss", "critical"),
        ("coverOpen", "warning", "topCoverOpen", "warning"),
        ("terminal_cover_open", None, "terminalCoverOpen", "warning"),
        ("magneticField", "HIGH", "magneticTamper", "critical"),
        ("batteryLow", None, "lowBattery", "warning"),
        ("undervoltage", None, "voltageSag", "warning"),
        ("overVoltage", "info", "voltageSwell", "info"),
        ("relayOpen", None, "relayState", "warning"),
        ("neutralVoltage", None, "neutralVoltage", "critical"),
        ("somethingElse", None, "other", "warning"),
    ]
    entries = [{"type": t, "incidentCode": i, "description": t, "date": "2026-11-21 07:00:00"}
               | ({"level": lvl} if lvl else {}) for i, (t, lvl, _, _) in enumerate(sent)]
    store(engine, up("alarm", entries, "a-1"))
    got = [(r.source_type, r.type, r.severity, r.source, r.state, r.emergency) for r in rows(engine)]
    assert got == [(t, kind, sev, "device", "raised", False) for t, _, kind, sev in sent]


def test_same_open_alarm_is_not_duplicated_and_a_cleared_one_can_come_again(engine) -> None:
    gasp = [{"type": "powerLoss", "level": "critical", "incidentCode": 0, "description": "last will"}]
    store(engine, up("alarm", gasp, "lw-1", emergency=True))
    store(engine, up("alarm", gasp, "lw-2", emergency=True), up("alarm", gasp, "lw-3", emergency=True))
    (one,) = rows(engine)
    assert (one.type, one.emergency, one.repeats, one.state) == ("powerLoss", True, 2, "raised")
    # the gateway identifies itself again: its last gasp is over (cleared by the device)
    store(engine, up("identification", {"brand": "OSOS", "model": "GW"}, "id-1"))
    (one,) = rows(engine)
    assert (one.state, one.cleared_by, one.open_key) == ("cleared", "device", None)
    store(engine, up("alarm", gasp, "lw-4", emergency=True))
    assert [r.state for r in rows(engine)] == ["cleared", "raised"]


def test_power_restored_clears_power_loss(engine) -> None:
    store(engine, up("alarm", [{"type": "powerLoss", "incidentCode": 23}], "p-1"))
    store(engine, up("alarm", [{"type": "powerRestored", "incidentCode": 24}], "p-2"))
    loss, back = rows(engine)
    assert (loss.type, loss.state) == ("powerLoss", "cleared")
    assert (back.type, back.severity, back.state) == ("powerRestored", "info", "raised")


def test_notification_is_an_informational_alarm(engine) -> None:  # HES-25
    store(engine, up("notification", {"type": "firmwareReady", "description": "new firmware staged"}, "n-1"))
    (note,) = rows(engine)
    assert (note.type, note.severity, note.source, note.source_type, note.description) == (
        "notification", "info", "notification", "firmwareReady", "new firmware staged")
    store(engine, up("notification", {"type": "firmwareReady", "description": "new firmware staged"}, "n-2"),
          up("notification", [{"description": "tariff table received"}], "n-3"))
    assert [(r.description, r.repeats) for r in rows(engine)] == [("new firmware staged", 1),
                                                                  ("tariff table received", 0)]


def test_ff_bits_raise_when_they_appear_and_clear_when_they_go(engine) -> None:
    top_cover, battery, outage_r = 6, 37, 20  # appendix: top cover open, system battery low, phase R outage
    ff = lambda *bits: f"F.F.0({sum(1 << b for b in bits):016X})"  # noqa: E731
    store(engine, readout("r-1", "100", ["1.8.0(000001.000*kWh)", ff(top_cover, battery)], "2026-11-21 07:00:00"))
    got = {(r.code, r.type, r.severity, r.source) for r in rows(engine)}
    assert got == {("FF.6", "topCoverOpen", "critical", "ff"), ("FF.37", "lowBattery", "warning", "ff")}
    # battery replaced, outage on R: bit 37 clears, bit 20 raises, bit 6 stays raised once
    store(engine, readout("r-2", "100", [ff(top_cover, outage_r)], "2026-11-21 08:00:00"))
    state = {r.code: (r.state, r.cleared_by) for r in rows(engine)}
    assert state == {"FF.6": ("raised", None), "FF.37": ("cleared", "device"), "FF.20": ("raised", None)}
    # an older packet arriving late never flips alarm state
    store(engine, readout("r-0", "100", [ff(battery)], "2026-11-21 06:00:00"))
    assert {r.code: r.state for r in rows(engine)} == {"FF.6": "raised", "FF.37": "cleared", "FF.20": "raised"}
    # a user clears bit 6 while the meter still reports it: not raised again by the next identical readout
    (six,) = rows(engine, alarms.c.code == "FF.6")
    with engine.begin() as conn:
        A.move(conn, six.id, "cleared", user="alice", now=utcnow())
    store(engine, readout("r-3", "100", [ff(top_cover, outage_r)], "2026-11-21 09:00:00"))
    assert len(rows(engine)) == 3
    with engine.connect() as conn:
        meter_id = conn.execute(select(meters.c.id).where(meters.c.serial == "100")).scalar_one()
    assert {r.meter_id for r in rows(engine)} == {meter_id}


def test_gateway_push_and_readout_of_one_ff_bit_are_one_alarm(engine) -> None:  # AMR-6, HES-24
    store(engine, readout("q-1", "300", ["F.F.0(0000000000000000)"], "2026-11-21 07:00:00"))
    push = [{"type": "topCoverOpen", "level": "critical", "incidentCode": 6, "description": "top cover opened",
             "meter": {"flag": "MKL", "serialNumber": "300"}}]
    store(engine, up("alarm", push, "q-push", emergency=True))
    store(engine, readout("q-2", "300", [f"F.F.0({1 << 6:016X})"], "2026-11-21 07:01:00"))
    (one,) = rows(engine)
    assert (one.type, one.code, one.source, one.emergency, one.repeats) == ("topCoverOpen", "FF.6", "device", True, 1)
    store(engine, readout("q-3", "300", ["F.F.0(0000000000000000)"], "2026-11-21 07:02:00"))
    (one,) = rows(engine)
    assert (one.state, one.cleared_by) == ("cleared", "device")


def test_gf_code_change_is_an_informational_alarm(engine) -> None:
    store(engine, readout("g-1", "200", ["F.F.1(0000000015)"], "2026-11-21 07:00:00"))
    assert rows(engine) == []  # the first GF seen is no change
    store(engine, readout("g-2", "200", ["F.F.1(0000000015)"], "2026-11-21 08:00:00"))
    assert rows(engine) == []
    new = 3 | 7 << 5  # EDAŞ 3, substation 7
    store(engine, readout("g-3", "200", [f"F.F.1({new:010X})"], "2026-11-21 09:00:00"))
    (gf,) = rows(engine)
    assert (gf.type, gf.severity, gf.source) == ("geoCodeChanged", "info", "gf")
    assert gf.detail["fields"]["edas_id"] == 3 and gf.detail["fields"]["substation_id"] == 7


def modbus_read(ref: str, volts: float, read_date: str) -> Incoming:
    # SDM630: 30001 voltage L1-N, IEEE 754 float32 high word first
    records = [{"op": "modbus", "map": "eastron-sdm630", "unit": 1, "reference": 300001, "count": 2,
                "table": "input", "offset": 0, "length": 4}]
    data = {"id": "", "protocol": "modbus", "rawHex": struct.pack(">f", volts).hex(), "records": records}
    return up("read", {"meter": {"flag": "EAS", "serialNumber": "SDM1"}, "readDate": read_date,
                       "timezone": "+00:00", "data": data}, ref)


def test_hes33_rules_run_on_analyzer_reads(engine) -> None:
    # the SDM630 map's limit is 253 V (osos/data/registermaps/eastron-sdm630.toml): 260 V is a swell on L1
    store(engine, modbus_read("m-1", 230.0, "2026-11-21 07:00:00"))
    assert rows(engine) == []
    store(engine, modbus_read("m-2", 260.0, "2026-11-21 07:01:00"))
    store(engine, modbus_read("m-3", 261.0, "2026-11-21 07:02:00"))
    (swell,) = rows(engine)
    assert (swell.type, swell.code, swell.source, swell.state) == ("voltageSwell", "voltage_high:L1", "modbus",
                                                                   "raised")
    store(engine, modbus_read("m-4", 150.0, "2026-11-21 07:03:00"))  # below 207 V: the swell ends, a sag begins
    got = [(r.type, r.code, r.state) for r in rows(engine)]
    assert got == [("voltageSwell", "voltage_high:L1", "cleared"), ("voltageSag", "voltage_low:L1", "raised")]


def test_state_machine_keeps_who_and_when(engine) -> None:
    store(engine, up("alarm", [{"type": "magnetic"}], "s-1"))
    (alarm,) = rows(engine)
    t0 = utcnow()
    with engine.begin() as conn:
        acked = A.move(conn, alarm.id, "acknowledged", user="alice", now=t0)
    assert (acked.state, acked.acked_by) == ("acknowledged", "alice")
    assert abs(acked.acked_at.replace(tzinfo=t0.tzinfo) - t0) < timedelta(seconds=1)
    with engine.begin() as conn, pytest.raises(A.AlarmError, match="acknowledged"):
        A.move(conn, alarm.id, "acknowledged", user="bob", now=t0)
    store(engine, up("alarm", [{"type": "magnetic"}], "s-2"))  # still open (acknowledged): counted, not new
    assert [(r.repeats, r.state) for r in rows(engine)] == [(1, "acknowledged")]
    with engine.begin() as conn:
        cleared = A.move(conn, alarm.id, "cleared", user="bob", now=t0 + timedelta(minutes=5))
    assert (cleared.state, cleared.cleared_by, cleared.acked_by) == ("cleared", "bob", "alice")
    with engine.begin() as conn, pytest.raises(A.AlarmError):
        A.move(conn, alarm.id, "acknowledged", user="bob", now=t0)
    with engine.begin() as conn, pytest.raises(A.AlarmError, match="no alarm"):
        A.move(conn, 999999, "cleared", user="bob", now=t0)


def test_migration_downgrades_and_upgrades_again(engine) -> None:
    from sqlalchemy import inspect

    from osos.store.db import downgrade

    store(engine, up("alarm", [{"type": "lowBattery"}], "d-1"))
    downgrade(engine, "0002")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("alarms")}
    assert "state" not in columns and "open_key" not in columns and "type" in columns
    migrate(engine)
    (old,) = rows(engine)  # the alarm stored before keeps what it had, and is open again as raised
    assert (old.type, old.state, old.source) == ("lowBattery", "raised", "device")
