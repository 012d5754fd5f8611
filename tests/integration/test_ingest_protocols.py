"""Head-end parsing of DLMS, Modbus and M-Bus read answers (HES-40, HES-5, HES-6, AMR-7): the bytes of
``data.rawHex`` are decoded with the protocol's own codec and stored as readings + register_latest; the gateway's
``values`` are ignored. Every raw byte string here is written by hand from the standards (A-XDR tags of
IEC 62056-6-2, IEEE 754 words of the SDM630 manual, an EN 13757-3 long frame), not produced by the code.

covers HES-40, HES-5, HES-6, HES-11, HES-35, AMR-5, AMR-7
"""

from __future__ import annotations

import json
import struct

import pytest
from sqlalchemy import select

from osos.headend import orders
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import meters, modems, raw_messages, readings, register_latest

pytestmark = pytest.mark.integration

TOPICS = mass.Topics("mass")
GW = mass.Device("OSS", "GW0042")

# A-XDR (IEC 62056-6-2): double-long-unsigned 06 + 4 bytes; structure 02 02 {integer 0F, enum 16};
# unit 30 = Wh (Blue Book table of units). 1.8.0 = 123456789 x 10^-1 Wh = 12345678.9 Wh
ENERGY_VALUE = "06" "075BCD15"
ENERGY_SCALER = "02 02 0F FF 16 1E"
# octet-string 09 0C: date-time 2026-03-10 (07EA 03 0A), weekday ff, 12:30:00.00, deviation -180 (FF4C), status 00
CLOCK = "09 0C 07EA 03 0A FF 0C 1E 00 00 FF4C 00"
RELAY_OUTPUT = "03 00"  # boolean false: disconnected
RELAY_STATE = "16 00"  # enum 0


def dlms_answer(parts: list[tuple[int, str, int, str]], **extra: object) -> dict:
    raw, records = b"", []
    for class_id, obis, attr, hex_text in parts:
        chunk = bytes.fromhex(hex_text.replace(" ", ""))
        records.append({"op": "get", "class": class_id, "obis": obis, "attr": attr, "offset": len(raw),
                        "length": len(chunk)})
        raw += chunk
    return {"id": "", "protocol": "dlms", "rawHex": raw.hex(), "records": records, **extra}


def read_msg(ref: str, meter: dict, data: dict, values: dict | None = None) -> Incoming:
    body = {"readDate": "2026-03-10 09:30:00", "timezone": "+00:00", "meter": meter, "packetClass": "shortRead",
            "directive": "short-read", "data": data, "values": values or {}}
    msg = {"device": {"flag": GW.flag, "serialNumber": GW.serial}, "function": "read", "referenceId": ref,
           "response": body}
    return Incoming(topic=TOPICS.uplink(GW), payload=json.dumps(msg).encode(), token=ref)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def provision(engine) -> int:
    """Devices are refused unless provisioned (issue 7)."""
    with engine.begin() as conn:
        return register_modem(conn, GW.flag, GW.serial, now=utcnow())


def latest(engine, serial: str) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(register_latest.c.obis, register_latest.c.value, register_latest.c.unit)
                            .join(meters, meters.c.id == register_latest.c.meter_id)
                            .where(meters.c.serial == serial)).all()
    return {r.obis: (r.value, r.unit) for r in rows}


def test_dlms_answer_is_decoded_by_the_head_end_not_taken_from_values(engine) -> None:
    provision(engine)
    data = dlms_answer([(8, "0.0.1.0.0.255", 2, CLOCK), (3, "1.0.1.8.0.255", 2, ENERGY_VALUE),
                        (3, "1.0.1.8.0.255", 3, ENERGY_SCALER), (70, "0.0.96.3.10.255", 2, RELAY_OUTPUT),
                        (70, "0.0.96.3.10.255", 3, RELAY_STATE)])
    lying = {"1.0.1.8.0.255": {"value": "999", "unit": "Wh"}}  # the gateway's parse is not trusted
    out = Ingestor(engine, TOPICS).process([read_msg("d1", {"flag": "LGZ", "serialNumber": "70000001"}, data,
                                                     lying)])
    assert [o.status for o in out] == ["stored"]
    regs = latest(engine, "70000001")
    assert regs["1.0.1.8.0.255"] == ("12345678.9", "Wh")
    assert regs["0.0.1.0.0.255"] == ("2026-03-10T12:30:00+03:00", None)
    assert regs["0.0.96.3.10.255"] == ("disconnected", None)
    with engine.connect() as conn:
        assert conn.execute(select(meters.c.protocol).where(meters.c.serial == "70000001")).scalar_one() == "dlms"
        assert len(conn.execute(select(readings.c.id)).all()) == 3


def test_modbus_answer_words_become_named_registers(engine) -> None:
    provision(engine)
    # SDM630 manual: 30001 voltage L1-N and 30071 frequency are IEEE 754 float32, high word first
    volts, hertz = struct.pack(">f", 230.5), struct.pack(">f", 50.0)
    raw = volts + hertz
    records = [{"op": "modbus", "map": "eastron-sdm630", "unit": 1, "reference": 300001, "count": 2,
                "table": "input", "offset": 0, "length": 4},
               {"op": "modbus", "map": "eastron-sdm630", "unit": 1, "reference": 300071, "count": 2,
                "table": "input", "offset": 4, "length": 4}]
    data = {"id": "", "protocol": "modbus", "rawHex": raw.hex(), "records": records}
    out = Ingestor(engine, TOPICS).process([read_msg("m1", {"flag": "EAS", "serialNumber": "SDM1"}, data)])
    assert [o.status for o in out] == ["stored"]
    regs = latest(engine, "SDM1")
    assert regs["voltage_l1_n"] == ("230.5", "V") and regs["frequency"] == ("50", "Hz")


def test_mbus_long_frame_records_are_stored(engine) -> None:
    provision(engine)
    # EN 13757-3: CI 72 variable data, header id 12345678 (BCD, LSB first), manufacturer 2C2D = KAM, version 1,
    # medium 07 water, access 55, status 00, signature 0000; record DIF 0C (8-digit BCD) VIF 13 (volume 10^-3 m3)
    user_data = bytes.fromhex("08 01 72 78563412 2D2C 01 07 55 00 0000 0C 13 78563412".replace(" ", ""))
    frame = bytes([0x68, len(user_data), len(user_data), 0x68]) + user_data + bytes([sum(user_data) & 0xFF, 0x16])
    data = {"id": "", "protocol": "mbus", "rawHex": frame.hex(), "records": [{"op": "mbus", "offset": 0,
                                                                              "length": len(frame)}]}
    out = Ingestor(engine, TOPICS).process([read_msg("b1", {"flag": "KAM", "serialNumber": "12345678"}, data)])
    assert [o.status for o in out] == ["stored"]
    assert latest(engine, "12345678") == {"Volume": ("12345.678", "m^3")}


@pytest.mark.parametrize(("data", "reason"), [
    ({"protocol": "zigbee", "rawHex": "00", "records": [{"offset": 0, "length": 1}]}, "unknown protocol 'zigbee'"),
    ({"protocol": "dlms", "rawHex": "zz", "records": [{"offset": 0, "length": 1}]}, "not hexadecimal"),
    ({"protocol": "dlms", "rawHex": "0600", "records": [{"class": 3, "obis": "1.0.1.8.0.255", "attr": 2,
                                                         "offset": 0, "length": 2}]}, "dlms"),
    ({"protocol": "dlms", "rawHex": "0600", "records": [{"offset": 0, "length": 9}]}, "outside"),
    ({"protocol": "modbus", "rawHex": "0000", "records": [{"map": "no-such-map", "reference": 1, "offset": 0,
                                                           "length": 2}]}, "unknown register map"),
])
def test_bad_binary_answers_are_invalid_with_a_reason_and_fail_the_order(engine, data: dict, reason: str) -> None:
    with engine.begin() as conn:
        modem_id = conn.execute(modems.insert().values(flag=GW.flag, serial=GW.serial, topic_style="device",
                                                       registered_at=utcnow())).inserted_primary_key[0]
        order_id = orders.create_order(conn, "read", modem_id=modem_id)
        ref = orders.get_order(conn, order_id)["reference_id"]
        orders.claim_next(conn, timeout_s=30)
    out = Ingestor(engine, TOPICS).process([read_msg(ref, {"flag": "LGZ", "serialNumber": "1"}, data)])
    assert out[0].status == "invalid" and reason in (out[0].error or "")
    with engine.connect() as conn:
        assert conn.execute(select(raw_messages.c.status)).scalar_one() == "invalid"
        order = orders.get_order(conn, order_id)
    assert order["status"] == "failed" and reason in order["error"]


def test_order_kinds_are_validated() -> None:
    with pytest.raises(orders.OrderError, match="state connect or disconnect"):
        orders.validate_request("relay", {"state": "toggle"})
    with pytest.raises(orders.OrderError, match="start must be before end"):
        orders.validate_request("load-profile", {"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T09:00:00Z"})
    with pytest.raises(orders.OrderError, match="only be given for a read"):
        orders.validate_request("relay", {"state": "connect", "directive": "readout"})
    assert orders.directive_request("relay", {"state": "disconnect"}) == {"directive": "relay-disconnect",
                                                                          "packetClass": "history"}
    lp = orders.validate_request("load-profile", {"start": "2026-03-10T06:00:00", "end": "2026-03-10T09:00:00"})
    assert orders.directive_request("load-profile", lp)["params"] == {"start": "2026-03-10T06:00:00+00:00",
                                                                      "end": "2026-03-10T09:00:00+00:00"}
