"""Ingest on both stores (embedded SQLite and the real PostgreSQL): identification, readings stored exactly as read,
idempotency, bad input, and orders closed by their answers.

covers HES-5, HES-6, HES-9, HES-12, HES-26, HES-47, HES-48, AMR-2, AMR-7
"""

from __future__ import annotations

import json
from functools import reduce

import pytest
from sqlalchemy import func, select

from osos.headend import orders
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import heartbeats, log_records, meters, modems, raw_messages, readings, register_latest

pytestmark = pytest.mark.integration

TOPICS = mass.Topics("mass")
GW = mass.Device("OSS", "GW0001")


def frame_with_bcc(lines: list[str]) -> str:
    """An IEC 62056-21 data block built here, independently of the codec: STX, lines, '!', CR LF, ETX, BCC where
    BCC is the XOR of every byte after STX up to and including ETX (IEC 62056-21 clause 6.3.x)."""
    body = "".join(line + "\r\n" for line in lines) + "!\r\n" + "\x03"
    bcc = reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0)
    return "\x02" + body + chr(bcc)


def up(device: mass.Device, function: str, response: object, ref: str, legacy: bool = False) -> Incoming:
    msg = {
        "device": {"flag": device.flag, "serialNumber": device.serial},
        "function": function,
        "referenceId": ref,
        "response": response,
    }
    topic = TOPICS.legacy_uplink if legacy else TOPICS.uplink(device)
    return Incoming(topic=topic, payload=json.dumps(msg).encode(), token=ref)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def provision(engine, device: mass.Device = GW, legacy: bool = False) -> int:
    """Devices are refused unless provisioned (issue 7): every test provisions its modem first."""
    with engine.begin() as conn:
        return register_modem(conn, device.flag, device.serial, legacy=legacy, by="test", now=utcnow())


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        q = select(func.count()).select_from(table)
        for w in where:
            q = q.where(w)
        return int(conn.execute(q).scalar_one())


def test_identification_registers_modem_and_its_meters(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    ident = {
        "brand": "OSOS",
        "model": "SIM-GW",
        "firmware": "1.2.3",
        "protocolVersion": "0.2",
        "deviceType": "MM",
        "communicationType": "4G",
        "imei": "356938035643809",
        "signal": 21,
        "deviceDate": "2026-11-21 10:00:00",
        "timezone": "+03:00",
        "meters": [
            {
                "flag": "MKL",
                "serialNumber": "12345678",
                "brand": "Makel",
                "kind": "three-phase",
                "protocol": "iec62056-21",
            }
        ],
    }
    [out] = ing.process([up(GW, "identification", ident, "id-1")])
    assert out.status == "stored"
    # every device message is acknowledged on the device's own downlink topic
    assert out.replies and out.replies[0][0] == TOPICS.downlink(GW)
    assert out.replies[0][1]["function"] == "ack" and out.replies[0][1]["referenceId"] == "id-1"
    with engine.connect() as conn:
        m = conn.execute(select(modems)).mappings().one()
        assert (m["flag"], m["serial"], m["imei"], m["device_type"], m["comm_type"]) == (
            "OSS",
            "GW0001",
            "356938035643809",
            "MM",
            "4G",
        )
        meter = conn.execute(select(meters)).mappings().one()
        assert (meter["flag"], meter["serial"], meter["modem_id"], meter["kind"]) == (
            "MKL",
            "12345678",
            m["id"],
            "three-phase",
        )


def test_readout_is_stored_raw_and_parsed_with_digits_kept(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    raw = frame_with_bcc(
        ["0.0.0(12345678)", "1.8.0(015214.234*kWh)", "1.8.1(010000.100*kWh)", "1.6.0(00.123*kW)(21-06-22 10:15)"]
    )
    resp = {
        "readDate": "2026-11-21 07:00:00",
        "timezone": "+00:00",
        "meter": {"flag": "MKL", "serialNumber": "12345678"},
        "packetClass": "shortRead",
        "data": {"id": "/MKL5<1>MSY3P", "rawData": raw},
    }
    item = up(GW, "read", resp, "push-1")
    [out] = ing.process([item])
    assert out.status == "stored", out.error
    with engine.connect() as conn:
        stored = conn.execute(select(raw_messages.c.payload)).scalar_one()
        assert bytes(stored) == item.payload  # raw kept byte for byte (HES-5)
        latest = {r.obis: (r.value, r.unit, r.extra) for r in conn.execute(select(register_latest))}
    assert latest["1.8.0"] == ("015214.234", "kWh", None)
    assert latest["1.8.1"] == ("010000.100", "kWh", None)
    assert latest["1.6.0"][:2] == ("00.123", "kW")
    assert latest["1.6.0"][2] == [{"value": "21-06-22 10:15", "unit": None}]
    assert count(engine, readings) == 4


def test_redelivery_and_resend_store_once(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    raw = frame_with_bcc(["0.0.0(1)", "1.8.0(000001.000*kWh)"])
    resp = {"meter": {"flag": "VIK", "serialNumber": "1"}, "data": {"id": "/VIK4VIKO", "rawData": raw}}
    item = up(GW, "read", resp, "same-ref")
    outs = ing.process([item, item])  # QoS 1 redelivery inside one batch
    assert [o.status for o in outs] == ["stored", "duplicate"]
    [again] = ing.process([item])  # gateway resend after a reconnect
    assert again.status == "duplicate"
    assert again.replies, "a resent message is acknowledged again"
    assert count(engine, raw_messages) == 1
    assert count(engine, readings) == 2


def test_bad_input_is_logged_never_raised_and_spares_the_batch(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    good = up(GW, "heartbeat", {"signal": 17, "deviceDate": "2026-11-21 10:00:00", "cpuTemp": 40}, "hb-1")
    bad_bcc_raw = frame_with_bcc(["0.0.0(2)", "1.8.0(000002.000*kWh)"])
    bad_bcc_raw = bad_bcc_raw[:-1] + chr(ord(bad_bcc_raw[-1]) ^ 0x01)
    bad_bcc = up(GW, "read", {"meter": {"flag": "VIK", "serialNumber": "2"}, "data": {"rawData": bad_bcc_raw}}, "r-2")
    not_json = Incoming(topic=TOPICS.uplink(GW), payload=b"\xff{not json", token="x")
    wrong_schema = Incoming(topic=TOPICS.uplink(GW), payload=b'{"device": {"flag": "TOOLONG"}}', token="y")
    spoof = up(mass.Device("EVL", "666"), "heartbeat", {"signal": 1}, "s-1")
    spoof.topic = TOPICS.uplink(GW)  # another device's message on this modem's topic
    outs = ing.process([not_json, good, bad_bcc, wrong_schema, spoof])
    assert [o.status for o in outs] == ["invalid", "stored", "invalid", "invalid", "rejected"]
    assert "integrity" in (outs[2].error or "") and "BCC" in (outs[2].error or "").upper()
    assert count(engine, heartbeats) == 1
    assert count(engine, readings) == 0
    assert count(engine, raw_messages) == 5  # even bad input is kept as received
    assert count(engine, log_records, log_records.c.category == "parsing") == 3
    assert count(engine, log_records, log_records.c.category == "security") == 1
    # the bad read is refused to the device with a negative ack
    assert outs[2].replies[0][1]["response"]["failCode"] == 400


def test_legacy_mass_reference_readout(engine) -> None:
    """The public MASS v0.2 reference simulator's read answer: bare data lines without units (HES-48)."""
    ing = Ingestor(engine, TOPICS)
    sim = mass.Device("XYZ", "0123456789ABCDE")
    provision(engine, sim, legacy=True)  # the shared topic is for devices an admin marked legacy
    resp = {
        "readDate": "2026-11-21 10:18:42",
        "data": {
            "id": "/LGZ5\\2ZMG405000b.P07",
            "rawData": "0.0.0(23660088)\r\n0.9.2(2021-06-22)\r\n0.9.1(10:18:42)\r\n1.8.0(0000004891.722)\r\n",
        },
    }
    [out] = ing.process([up(sim, "read", resp, "test-001", legacy=True)])
    assert out.status == "stored", out.error
    assert out.replies[0][0] == TOPICS.legacy_downlink
    with engine.connect() as conn:
        meter = conn.execute(select(meters)).mappings().one()
        latest = {r.obis: r.value for r in conn.execute(select(register_latest))}
        modem = conn.execute(select(modems)).mappings().one()
    assert (meter["flag"], meter["serial"]) == ("LGZ", "23660088")
    assert latest["1.8.0"] == "0000004891.722"
    assert modem["topic_style"] == "legacy"


def test_order_is_closed_by_its_answer(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    ing.process([up(GW, "identification", {"meters": [{"flag": "EMO", "serialNumber": "777"}]}, "i")])
    with engine.begin() as conn:
        meter_id = conn.execute(select(meters.c.id)).scalar_one()
        oid = orders.create_order(conn, "read", meter_id=meter_id, created_by="test")
        # asking again for the same open work gives the same order (no duplicate commands, HES-12)
        assert orders.create_order(conn, "read", meter_id=meter_id, created_by="test") == oid
        claimed = orders.claim_next(conn, timeout_s=30)
    assert claimed is not None and claimed["id"] == oid
    with engine.begin() as conn:
        assert orders.claim_next(conn, timeout_s=30) is None  # nobody claims it twice
    raw = frame_with_bcc(["0.0.0(777)", "1.8.0(000123.456*kWh)"])
    resp = {"meter": {"flag": "EMO", "serialNumber": "777"}, "data": {"id": "/EMO5EMO", "rawData": raw}}
    [out] = ing.process([up(GW, "read", resp, claimed["reference_id"])])
    assert out.status == "stored"
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    assert order is not None and order["status"] == "succeeded"
    assert order["result"]["registers"]["1.8.0"] == {"value": "000123.456", "unit": "kWh"}


def test_negative_ack_fails_the_order(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    ing.process([up(GW, "identification", {"meters": [{"flag": "EMO", "serialNumber": "778"}]}, "i2")])
    with engine.begin() as conn:
        meter_id = conn.execute(select(meters.c.id)).scalar_one()
        oid = orders.create_order(conn, "read", meter_id=meter_id)
        claimed = orders.claim_next(conn, timeout_s=30)
    nack = mass.ack(GW, claimed["reference_id"], fail_code=12, reason="meter does not answer")
    ing.process([Incoming(topic=TOPICS.uplink(GW), payload=mass.encode(nack))])
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    assert order["status"] == "failed" and "meter does not answer" in order["error"]


def data_message(line: str) -> str:
    """A programming-mode answer STX data ETX BCC, built here independently of the codec."""
    body = line + "\x03"
    return "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))


def test_programming_mode_answers_in_series_are_each_bcc_checked(engine) -> None:
    """A short read done in programming mode (R1 per register) arrives as consecutive data messages."""
    ing = Ingestor(engine, TOPICS)
    provision(engine)
    good = data_message("1.8.0(0002771.698*kWh)") + data_message("1.8.1(0002738.205*kWh)")
    resp = {"meter": {"flag": "VIK", "serialNumber": "45746282"}, "data": {"id": "/VIK4VEM-T31", "rawData": good}}
    bad = data_message("1.8.0(0002771.698*kWh)")
    bad = bad[:-1] + chr(ord(bad[-1]) ^ 0x20)
    resp_bad = {"meter": {"flag": "VIK", "serialNumber": "45746283"}, "data": {"rawData": good + bad}}
    outs = ing.process([up(GW, "read", resp, "sr-1"), up(GW, "read", resp_bad, "sr-2")])
    assert [o.status for o in outs] == ["stored", "invalid"]
    with engine.connect() as conn:
        latest = {r.obis: r.value for r in conn.execute(select(register_latest))}
    assert latest == {"1.8.0": "0002771.698", "1.8.1": "0002738.205"}


class _IngestorWithABug(Ingestor):
    """Fault injection: a handler that fails the way a programming error would."""

    def _on_heartbeat(self, *args, **kwargs) -> None:
        raise RuntimeError("handler bug")


def test_a_handler_bug_keeps_the_raw_message_and_spares_the_batch(engine) -> None:
    ing = _IngestorWithABug(engine, TOPICS)
    provision(engine)
    ident = up(GW, "identification", {"brand": "T"}, "i-1")
    beat = up(GW, "heartbeat", {"signal": 3}, "hb-1")
    outs = ing.process([ident, beat])
    assert [o.status for o in outs] == ["stored", "invalid"]
    assert outs[1].settled  # acknowledged to the broker: it will not come back to block the queue
    assert (outs[1].error or "").startswith("internal: RuntimeError")
    with engine.connect() as conn:
        payloads = {bytes(p) for p in conn.execute(select(raw_messages.c.payload)).scalars()}
    assert payloads == {ident.payload, beat.payload}  # nothing lost (HES-5)
    assert count(engine, heartbeats) == 0
    assert count(engine, log_records, log_records.c.message.like("%internal: RuntimeError%")) == 1
