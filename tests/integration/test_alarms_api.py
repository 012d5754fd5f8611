"""GET /api/v1/alarms (filters, paging with a total) and POST .../ack, .../clear with the permission alarm.manage
(operator, admin; viewers may only read), on both stores.

covers HES-11, HES-24, HES-25, HES-28, HES-60
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from osos.auth import hash_password
from osos.config import Settings
from osos.headend.ingest import Incoming, Ingestor
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, users
from osos.web.app import create_app

pytestmark = pytest.mark.integration

PASSWORD = "Alarms-test-4711"  # test-only credentials in a per-test database
NOW = datetime.now(UTC).replace(microsecond=0)
TOPICS = mass.Topics("mass")
GW = mass.Device("OSS", "GWALARM")
T0 = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


def alarm_msg(ref: str, entries: list[dict], at: datetime, emergency: bool = False) -> Incoming:
    msg = {"device": {"flag": GW.flag, "serialNumber": GW.serial}, "function": "alarm", "referenceId": ref,
           "response": entries}
    topic = TOPICS.emergency(GW) if emergency else TOPICS.uplink(GW)
    return Incoming(topic=topic, payload=json.dumps(msg).encode(), token=ref, received_at=at)


@pytest.fixture
def api(db_url: str, tmp_path) -> Iterator[tuple[TestClient, object, int]]:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        modem = register_modem(conn, GW.flag, GW.serial, by="test", now=NOW)
        for name, role in (("ada", "admin"), ("oscar", "operator"), ("vera", "viewer")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=NOW))
    # five alarms, one a minute: power loss (emergency), cover, battery, magnetic, and a notification
    ingest = Ingestor(engine, TOPICS)
    ingest.process([alarm_msg("a0", [{"type": "powerLoss"}], T0, emergency=True)])
    ingest.process([alarm_msg("a1", [{"type": "coverOpen"}], T0 + timedelta(minutes=1))])
    ingest.process([alarm_msg("a2", [{"type": "lowBattery"}], T0 + timedelta(minutes=2))])
    ingest.process([alarm_msg("a3", [{"type": "magnetic"}], T0 + timedelta(minutes=3))])
    note = {"device": {"flag": GW.flag, "serialNumber": GW.serial}, "function": "notification",
            "referenceId": "n4", "response": {"description": "hello"}}
    ingest.process([Incoming(TOPICS.uplink(GW), json.dumps(note).encode(), T0 + timedelta(minutes=4))])
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=db_url), engine)) as client:
        yield client, engine, modem
    engine.dispose()


def auth(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_list_filters_and_paging(api) -> None:  # type: ignore[no-untyped-def]
    client, _, modem = api
    viewer = auth(client, "vera")
    assert client.get("/api/v1/alarms").status_code == 401
    res = client.get("/api/v1/alarms", headers=viewer).json()
    assert res["total"] == 5
    assert [a["type"] for a in res["items"]] == ["notification", "magneticTamper", "lowBattery", "topCoverOpen",
                                                 "powerLoss"]  # newest first
    page = client.get("/api/v1/alarms?limit=2&offset=2", headers=viewer).json()
    assert (page["total"], [a["type"] for a in page["items"]]) == (5, ["lowBattery", "topCoverOpen"])
    crit = client.get("/api/v1/alarms?severity=critical", headers=viewer).json()
    assert {a["type"] for a in crit["items"]} == {"powerLoss", "topCoverOpen", "magneticTamper"}
    emerg = client.get("/api/v1/alarms?emergency=true", headers=viewer).json()
    assert [a["type"] for a in emerg["items"]] == ["powerLoss"]
    assert client.get("/api/v1/alarms?type=lowBattery", headers=viewer).json()["total"] == 1
    assert client.get(f"/api/v1/alarms?modem={modem}", headers=viewer).json()["total"] == 5
    assert client.get(f"/api/v1/alarms?modem={modem + 1}", headers=viewer).json()["total"] == 0
    window = client.get("/api/v1/alarms", params={"from": "2026-11-21T07:01:00Z", "to": "2026-11-21T10:03:00+03:00"},
                        headers=viewer).json()  # [07:01, 07:03) UTC
    assert [a["type"] for a in window["items"]] == ["lowBattery", "topCoverOpen"]
    assert client.get("/api/v1/alarms?state=bogus", headers=viewer).status_code == 422


def test_ack_and_clear_need_alarm_manage_and_follow_the_states(api) -> None:  # type: ignore[no-untyped-def]
    client, engine, _ = api
    viewer, operator, admin = auth(client, "vera"), auth(client, "oscar"), auth(client, "ada")
    magnetic = client.get("/api/v1/alarms?type=magneticTamper", headers=viewer).json()["items"][0]
    assert client.post(f"/api/v1/alarms/{magnetic['id']}/ack", headers=viewer).status_code == 403
    res = client.post(f"/api/v1/alarms/{magnetic['id']}/ack", headers=operator)
    assert res.status_code == 200
    assert (res.json()["state"], res.json()["acked_by"]) == ("acknowledged", "oscar")
    assert client.post(f"/api/v1/alarms/{magnetic['id']}/ack", headers=admin).status_code == 409
    res = client.post(f"/api/v1/alarms/{magnetic['id']}/clear", headers=admin)
    assert (res.json()["state"], res.json()["cleared_by"], res.json()["acked_by"]) == ("cleared", "ada", "oscar")
    assert client.post(f"/api/v1/alarms/{magnetic['id']}/clear", headers=admin).status_code == 409
    assert client.post("/api/v1/alarms/999999/ack", headers=admin).status_code == 404
    states = client.get("/api/v1/alarms?state=raised", headers=viewer).json()
    assert states["total"] == 4
    assert client.get(f"/api/v1/alarms/{magnetic['id']}", headers=viewer).json()["state"] == "cleared"
    with engine.connect() as conn:
        logged = conn.execute(select(log_records.c.message).where(log_records.c.category == "user")).scalars().all()
    assert logged == [f"oscar acknowledged alarm {magnetic['id']}", f"ada cleared alarm {magnetic['id']}"]
    with engine.connect() as conn:  # HES-59 API command errors: the two 409s and the 404
        refused = conn.execute(select(log_records.c.message).where(log_records.c.category == "api")
                               .order_by(log_records.c.id)).scalars().all()
    assert refused == [f"ada: POST /api/v1/alarms/{magnetic['id']}/ack: alarm {magnetic['id']} is acknowledged; "
                       "it cannot become acknowledged",
                       f"ada: POST /api/v1/alarms/{magnetic['id']}/clear: alarm {magnetic['id']} is cleared; "
                       "it cannot become cleared",
                       "ada: POST /api/v1/alarms/999999/ack: no alarm 999999"]


def test_alarms_page(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = api
    viewer, operator = auth(client, "vera"), auth(client, "oscar")
    page = client.get("/alarms", headers=viewer)
    assert page.status_code == 200
    assert "magneticTamper" in page.text and "powerLoss" in page.text
    assert 'data-action="ack"' not in page.text  # viewers only read
    page = client.get("/alarms?state=raised", headers=operator)
    assert page.text.count('data-action="ack"') == 5 and page.text.count('data-action="clear"') == 5
    assert client.get("/alarms?state=cleared", headers=operator).text.count("data-alarm=") == 0
    assert client.get("/alarms?state=nonsense", headers=operator).status_code in (400, 422)
