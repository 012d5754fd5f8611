"""The head-end's own trust checks (issue 7, defence in depth beside the broker's ACLs), on both stores (SQLite and
the real PostgreSQL): unknown and disabled devices, the shared legacy topic, forged order answers, poisoned
registers (a meter bound to another modem, a read dated in the future), oversized payloads, and the session
(TLS or plain) each uplink came over. Expected values are written out here, never read back from the code.

covers HES-4, HES-5, HES-6, HES-9, HES-48, HES-54, HES-59
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import reduce

import pytest
from sqlalchemy import func, select, update

from osos.headend import orders
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import InventoryError, register_modem
from osos.protocols import mass
from osos.store.db import as_utc, make_engine, migrate
from osos.store.schema import (
    alarms,
    heartbeats,
    log_records,
    meters,
    modems,
    raw_messages,
    readings,
    register_latest,
)

pytestmark = pytest.mark.integration

TOPICS = mass.Topics("mass")
A = mass.Device("OSS", "GWA0001")
B = mass.Device("OSS", "GWB0002")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
METER_A = {"flag": "MKL", "serialNumber": "11111111"}


def block(lines: list[str]) -> str:
    """An IEC 62056-21 data block with its BCC (XOR of every byte after STX up to ETX), built here."""
    body = "".join(line + "\r\n" for line in lines) + "!\r\n\x03"
    return "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))


def read_body(value: str, read_date: str, meter: dict = METER_A) -> dict:
    raw = block([f"0.0.0({meter['serialNumber']})", f"1.8.0({value}*kWh)"])
    return {"readDate": read_date, "timezone": "+00:00", "meter": meter,
            "data": {"id": f"/{meter['flag']}5TEST", "rawData": raw}}


def up(device: mass.Device, function: str, response: object, ref: str, *, topic: str | None = None,
       at: datetime = NOW) -> Incoming:
    payload = mass.encode(mass.make(function, device, reference_id=ref, response=response))
    return Incoming(topic=topic or TOPICS.uplink(device), payload=payload, received_at=at, token=ref)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def provision(engine, device: mass.Device, legacy: bool = False) -> int:
    with engine.begin() as conn:
        return register_modem(conn, device.flag, device.serial, legacy=legacy, by="test", now=NOW)


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        q = select(func.count()).select_from(table)
        for w in where:
            q = q.where(w)
        return int(conn.execute(q).scalar_one())


def raw_row(engine, raw_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(raw_messages).where(raw_messages.c.id == raw_id)).mappings().one())


def security_rows(engine, raw_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(log_records.c.message).where(
            log_records.c.category == "security", log_records.c.raw_id == raw_id)).scalars())


def latest(engine, serial: str) -> dict[str, tuple[str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(select(register_latest.c.obis, register_latest.c.value, register_latest.c.read_at)
                            .join(meters, meters.c.id == register_latest.c.meter_id)
                            .where(meters.c.serial == serial)).all()
    return {r.obis: (r.value, as_utc(r.read_at)) for r in rows}


# ---------------------------------------------------------------- who may speak


def test_unknown_device_is_refused_stored_raw_and_never_answered(engine) -> None:
    ing = Ingestor(engine, TOPICS)
    beat = up(A, "heartbeat", {"signal": 20}, "hb-1")
    alarm = up(A, "alarm", [{"type": "powerLoss", "level": "critical", "date": "2026-12-01 11:00:00"}], "al-1",
               topic=TOPICS.emergency(A))
    outs = ing.process([beat, alarm])
    assert [o.status for o in outs] == ["rejected", "rejected"]
    assert all(o.replies == [] for o in outs)  # a stranger gets no ack
    assert outs[0].error == "identity: unknown device OSSGWA0001"
    assert count(engine, modems) == 0  # no registration on the fly
    assert count(engine, heartbeats) == 0 and count(engine, alarms) == 0
    for out in outs:
        row = raw_row(engine, out.raw_id)
        assert (row["status"], bytes(row["payload"])) == ("rejected", (beat if out is outs[0] else alarm).payload)
        assert security_rows(engine, out.raw_id) == [f"{(beat if out is outs[0] else alarm).topic}: {out.error}"]


def test_disabled_device_is_refused(engine) -> None:
    modem_id = provision(engine, A)
    with engine.begin() as conn:
        conn.execute(update(modems).where(modems.c.id == modem_id).values(status="disabled"))
    [out] = Ingestor(engine, TOPICS).process([up(A, "heartbeat", {"signal": 20}, "hb-1")])
    assert (out.status, out.error, out.replies) == ("rejected", "identity: device OSSGWA0001 is disabled", [])
    assert count(engine, heartbeats) == 0 and len(security_rows(engine, out.raw_id)) == 1


def test_register_modem_refuses_a_second_row_and_bad_names(engine) -> None:
    provision(engine, A, legacy=True)
    with engine.begin() as conn:
        row = conn.execute(select(modems)).mappings().one()
        assert (row["flag"], row["serial"], row["topic_style"], row["status"], row["mqtt_username"],
                row["provisioned_by"]) == ("OSS", "GWA0001", "legacy", "active", "OSSGWA0001", "test")
        with pytest.raises(InventoryError, match="already provisioned"):
            register_modem(conn, "OSS", "GWA0001", now=NOW)
        with pytest.raises(InventoryError):
            register_modem(conn, "OS1", "X", now=NOW)
        with pytest.raises(InventoryError):
            register_modem(conn, "OSS", "a/b", now=NOW)  # would be a topic level


def test_shared_topic_only_for_modems_marked_legacy(engine) -> None:
    provision(engine, A)  # per-device
    provision(engine, B, legacy=True)
    ing = Ingestor(engine, TOPICS)
    outs = ing.process([
        up(A, "heartbeat", {"signal": 1}, "a-1", topic=TOPICS.legacy_uplink),
        up(B, "heartbeat", {"signal": 2}, "b-1", topic=TOPICS.legacy_uplink),
        up(B, "heartbeat", {"signal": 3}, "b-2"),  # a legacy-marked modem on its own topic is fine too
    ])
    assert [o.status for o in outs] == ["rejected", "stored", "stored"]
    assert outs[0].error == "identity: OSSGWA0001 is not marked legacy and may not use the shared topic"
    assert outs[0].replies == [] and len(security_rows(engine, outs[0].raw_id)) == 1
    assert outs[1].replies[0][0] == "mass/server/to_device"
    assert outs[2].replies[0][0] == "mass/server/OSS/GWB0002/to_device"
    with engine.connect() as conn:
        assert conn.execute(select(modems.c.topic_style).where(modems.c.serial == "GWB0002")).scalar_one() == \
            "legacy"  # an uplink never changes what the admin marked
    assert count(engine, heartbeats) == 2


def test_header_must_name_the_topics_device(engine) -> None:
    provision(engine, A)
    provision(engine, B)
    [out] = Ingestor(engine, TOPICS).process([up(B, "heartbeat", {"signal": 1}, "x", topic=TOPICS.uplink(A))])
    assert out.status == "rejected" and "topic belongs to OSSGWA0001" in (out.error or "")
    assert count(engine, heartbeats) == 0


# ---------------------------------------------------------------- forged order answers


@pytest.mark.parametrize("forged_topic", ["own", "legacy"])
def test_forged_answer_first_real_answer_second(engine, forged_topic: str) -> None:
    """Device B answers A's order first (on its own topic with A's referenceId, or on the shared topic claiming
    to be A); A's real answer comes second. Both are stored; the order is closed by A with A's values."""
    a_id = provision(engine, A)
    provision(engine, B)
    ing = Ingestor(engine, TOPICS)
    ing.process([up(A, "identification", {"meters": [METER_A]}, "ident-a")])
    with engine.begin() as conn:
        meter_id = conn.execute(select(meters.c.id).where(meters.c.serial == "11111111")).scalar_one()
        oid = orders.create_order(conn, "read", meter_id=meter_id, created_by="test")
        claimed = orders.claim_next(conn, timeout_s=60, now=NOW)
    assert claimed is not None and claimed["modem_id"] == a_id
    ref = claimed["reference_id"]

    if forged_topic == "own":
        forged = up(B, "read", read_body("999999.999", "2026-12-01 11:59:00"), ref)
    else:
        forged = up(A, "read", read_body("999999.999", "2026-12-01 11:59:00"), ref, topic=TOPICS.legacy_uplink)
    real = up(A, "read", read_body("000123.456", "2026-12-01 11:59:30"), ref)
    [f_out] = ing.process([forged])
    [r_out] = ing.process([real])

    assert (f_out.status, r_out.status) == ("rejected", "stored")
    assert f_out.replies == []
    assert count(engine, raw_messages, raw_messages.c.reference_id == ref) == 2  # nothing lost
    assert bytes(raw_row(engine, f_out.raw_id)["payload"]) == forged.payload
    assert bytes(raw_row(engine, r_out.raw_id)["payload"]) == real.payload
    assert len(security_rows(engine, f_out.raw_id)) == 1
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    assert order["status"] == "succeeded"
    assert order["result"]["raw_id"] == r_out.raw_id
    assert order["result"]["registers"]["1.8.0"] == {"value": "000123.456", "unit": "kWh"}
    assert latest(engine, "11111111")["1.8.0"][0] == "000123.456"
    assert count(engine, readings, readings.c.raw_id == f_out.raw_id) == 0


def test_forged_failure_cannot_fail_another_modems_order(engine) -> None:
    a_id = provision(engine, A)
    provision(engine, B)
    ing = Ingestor(engine, TOPICS)
    ing.process([up(A, "identification", {"meters": [METER_A]}, "ident-a")])
    with engine.begin() as conn:
        oid = orders.create_order(conn, "read", modem_id=a_id)
        ref = orders.claim_next(conn, timeout_s=60, now=NOW)["reference_id"]  # the messages' clock
    nack = mass.ack(B, ref, fail_code=12, reason="forged")
    bad_read = up(B, "read", {"meter": METER_A, "data": {"rawData": "\x02garbage"}}, ref)
    outs = ing.process([Incoming(topic=TOPICS.uplink(B), payload=mass.encode(nack), received_at=NOW), bad_read])
    assert [o.status for o in outs] == ["rejected", "rejected"]
    with engine.connect() as conn:
        assert orders.get_order(conn, oid)["status"] == "running"


# ---------------------------------------------------------------- poisoned registers


def test_read_of_a_meter_bound_to_another_modem_is_kept_but_flagged(engine) -> None:
    a_id = provision(engine, A)
    provision(engine, B)
    ing = Ingestor(engine, TOPICS)
    ing.process([up(A, "read", read_body("000100.000", "2026-12-01 11:00:00"), "a-1")])
    [out] = ing.process([up(B, "read", read_body("999999.999", "2026-12-01 11:30:00"), "b-1")])
    assert out.status == "stored"  # stored, not lost (HES-5) ...
    assert raw_row(engine, out.raw_id)["flags"] == "foreign-meter"
    assert count(engine, readings, readings.c.raw_id == out.raw_id) == 2
    assert latest(engine, "11111111")["1.8.0"][0] == "000100.000"  # ... but not the meter's latest value
    with engine.connect() as conn:
        assert conn.execute(select(meters.c.modem_id).where(meters.c.serial == "11111111")).scalar_one() == a_id
    assert len(security_rows(engine, out.raw_id)) == 1


def test_identification_does_not_move_a_meter(engine) -> None:
    a_id = provision(engine, A)
    provision(engine, B)
    ing = Ingestor(engine, TOPICS)
    ing.process([up(A, "identification", {"meters": [METER_A]}, "ident-a")])
    [out] = ing.process([up(B, "identification", {"meters": [METER_A, {"flag": "VIK", "serialNumber": "2"}]},
                            "ident-b")])
    assert out.status == "stored"
    with engine.connect() as conn:
        bound = dict(conn.execute(select(meters.c.serial, meters.c.modem_id)).all())
    assert bound["11111111"] == a_id  # not re-bound: a move is an inventory action
    assert bound["2"] != a_id  # a new meter is bound to the modem that reported it
    assert raw_row(engine, out.raw_id)["flags"] == "foreign-meter"
    assert len(security_rows(engine, out.raw_id)) == 1


def test_poison_read_from_the_future_never_becomes_latest(engine) -> None:
    """The issue's attack: 1.8.0 = 999999.999 dated 2030-01-01 for a meter behind another modem, then real reads."""
    provision(engine, A)
    provision(engine, B)
    ing = Ingestor(engine, TOPICS)
    ing.process([up(A, "identification", {"meters": [METER_A]}, "ident-a")])
    [poison] = ing.process([up(B, "read", read_body("999999.999", "2030-01-01 00:00:00"), "p-1")])
    [own_poison] = ing.process([up(A, "read", read_body("888888.888", "2030-01-01 00:00:00"), "p-2")])
    [real] = ing.process([up(A, "read", read_body("000123.456", "2026-12-01 11:59:00"), "r-1")])
    assert (poison.status, own_poison.status, real.status) == ("stored", "stored", "stored")
    assert set(raw_row(engine, poison.raw_id)["flags"].split(",")) == {"foreign-meter", "future-date"}
    assert raw_row(engine, own_poison.raw_id)["flags"] == "future-date"
    assert raw_row(engine, real.raw_id)["flags"] is None
    assert latest(engine, "11111111")["1.8.0"] == ("000123.456", datetime(2026, 12, 1, 11, 59, tzinfo=UTC))
    with engine.connect() as conn:  # the readings keep the device's own date
        dates = {as_utc(d) for d in conn.execute(select(readings.c.read_at).where(
            readings.c.raw_id == own_poison.raw_id)).scalars()}
        assert as_utc(conn.execute(select(meters.c.last_read_at)).scalar_one()) == datetime(2026, 12, 1, 11, 59,
                                                                                          tzinfo=UTC)
    assert dates == {datetime(2030, 1, 1, tzinfo=UTC)}


def test_future_skew_is_configurable(engine) -> None:
    provision(engine, A)
    ing = Ingestor(engine, TOPICS, future_skew_s=60)
    [near] = ing.process([up(A, "read", read_body("000001.000", "2026-12-01 12:00:59"), "n-1")])  # 59 s ahead
    [far] = ing.process([up(A, "read", read_body("000002.000", "2026-12-01 12:01:01"), "f-1")])  # 61 s ahead
    assert raw_row(engine, near.raw_id)["flags"] is None
    assert raw_row(engine, far.raw_id)["flags"] == "future-date"
    assert latest(engine, "11111111")["1.8.0"][0] == "000001.000"


# ---------------------------------------------------------------- oversized payloads


def test_oversized_payload_keeps_hash_size_and_a_prefix(engine) -> None:
    provision(engine, A)
    head = json.dumps({"device": {"flag": "OSS", "serialNumber": "GWA0001"}, "function": "heartbeat",
                       "referenceId": "big", "response": {"pad": ""}}).encode()
    payload = head[:-3] + b"x" * (10 * 1024 * 1024 - len(head)) + head[-3:]
    assert len(payload) == 10 * 1024 * 1024
    item = Incoming(topic=TOPICS.uplink(A), payload=payload, received_at=NOW)
    [out] = Ingestor(engine, TOPICS).process([item])
    assert (out.status, out.replies) == ("rejected", [])
    row = raw_row(engine, out.raw_id)
    assert row["status"] == "rejected" and row["flags"] == "oversized"
    assert row["payload_size"] == 10 * 1024 * 1024
    assert bytes(row["payload"]) == payload[:4096]
    assert hashlib.sha256(payload).hexdigest() in row["error"]
    assert len(security_rows(engine, out.raw_id)) == 1
    assert count(engine, heartbeats) == 0


def test_payload_at_the_limit_is_still_parsed(engine) -> None:
    provision(engine, A)
    head = json.dumps({"device": {"flag": "OSS", "serialNumber": "GWA0001"}, "function": "heartbeat",
                       "referenceId": "edge", "response": {"pad": ""}}).encode()
    payload = head[:-3] + b"x" * (mass.MAX_PAYLOAD - len(head)) + head[-3:]
    assert len(payload) == 1 << 20
    [out] = Ingestor(engine, TOPICS).process([Incoming(topic=TOPICS.uplink(A), payload=payload, received_at=NOW)])
    assert out.status == "stored"
    assert raw_row(engine, out.raw_id)["payload_size"] is None


# ---------------------------------------------------------------- TLS or plain session (HES-54)


def test_each_uplink_records_its_session_and_is_answered_on_it(engine) -> None:
    provision(engine, A)
    ing = Ingestor(engine, mass.Topics("mass", device_tls=True))

    def transport() -> str:
        with engine.connect() as conn:
            return conn.execute(select(modems.c.transport)).scalar_one()

    [plain] = ing.process([up(A, "heartbeat", {"signal": 1}, "p", topic="plain/mass/device/OSS/GWA0001/to_server")])
    assert plain.status == "stored" and transport() == "plain"
    assert plain.replies[0][0] == "plain/mass/server/OSS/GWA0001/to_device"
    [tls] = ing.process([up(A, "heartbeat", {"signal": 1}, "t")])
    assert tls.status == "stored" and transport() == "tls"
    assert tls.replies[0][0] == "mass/server/OSS/GWA0001/to_device"
    # without TLS in the deployment every session is plain, and answered without mount point
    [bare] = Ingestor(engine, TOPICS).process([up(A, "heartbeat", {"signal": 1}, "b")])
    assert transport() == "plain" and bare.replies[0][0] == "mass/server/OSS/GWA0001/to_device"
