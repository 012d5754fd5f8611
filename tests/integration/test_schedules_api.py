"""GET/POST/DELETE /api/v1/schedules (HES-10, issue 8 item 9) on SQLite and the real PostgreSQL: "schedule.manage"
for operators and admins, viewers read only, bad bodies are 400/422, a created schedule is due at the next slot
in the head-end's time zone and runs from the database.

covers HES-10, HES-60
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from osos.auth import ROLE_PERMISSIONS, hash_password
from osos.config import Settings
from osos.headend.scheduler import run_due
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, meters, modems, orders, users
from osos.web.app import create_app

pytestmark = pytest.mark.integration

PASSWORD = "Schedules-test-4711"  # test-only credentials in a per-test database
NOW = datetime.now(UTC).replace(microsecond=0)


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def api(db_url: str, tmp_path) -> Iterator[tuple[TestClient, object]]:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        modem = conn.execute(insert(modems).values(flag="OSS", serial="GWSCH1", registered_at=NOW,
                                                   topic_style="device")).inserted_primary_key[0]
        for serial, kind in (("1", "three-phase"), ("2", "single-phase")):
            conn.execute(insert(meters).values(flag="MKL", serial=serial, modem_id=modem, kind=kind,
                                               first_seen_at=NOW))
        for name, role in (("ada", "admin"), ("oscar", "operator"), ("vera", "viewer")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=NOW))
    settings = Settings(data_dir=tmp_path / "d", database_url=db_url, timezone="Europe/Istanbul")
    with TestClient(create_app(settings, engine)) as client:
        yield client, engine
    engine.dispose()


def auth(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_permission_is_operator_and_admin() -> None:
    assert {r for r, perms in ROLE_PERMISSIONS.items() if "schedule.manage" in perms} == {"operator", "admin"}


def test_create_list_delete(api) -> None:  # type: ignore[no-untyped-def]
    client, engine = api
    operator, viewer, admin = auth(client, "oscar"), auth(client, "vera"), auth(client, "ada")
    body = {"name": "three-phase hourly", "kind": "read", "every_minutes": 60, "group": {"kind": "three-phase"},
            "priority": 4}
    res = client.post("/api/v1/schedules", json=body, headers=operator)
    assert res.status_code == 201, res.text
    made = res.json()
    assert res.headers["location"] == f"/api/v1/schedules/{made['id']}"
    assert (made["name"], made["kind"], made["every_minutes"], made["cron"], made["priority"], made["created_by"]) \
        == ("three-phase hourly", "read", 60, None, 4, "oscar")
    assert made["group"] == {"kind": "three-phase"}
    nxt = datetime.fromisoformat(made["next_run_at"])
    # the next full hour (Istanbul is a whole number of hours from UTC): after now, at most an hour away
    assert (nxt.minute, nxt.second) == (0, 0) and NOW < nxt <= datetime.now(UTC) + timedelta(hours=1)

    assert client.post("/api/v1/schedules", json={"name": "n", "kind": "read", "cron": "0 2 * * *"},
                       headers=admin).status_code == 201
    listed = client.get("/api/v1/schedules", headers=viewer)
    assert listed.status_code == 200
    assert [s["name"] for s in listed.json()] == ["n", "three-phase hourly"]
    assert client.get(f"/api/v1/schedules/{made['id']}", headers=viewer).json()["name"] == "three-phase hourly"

    # it runs from the database: one order for the one three-phase meter, source "schedule"
    [run] = run_due(engine, tz="Europe/Istanbul", now=nxt)
    assert run.name == "three-phase hourly"
    with engine.connect() as conn:
        got = conn.execute(select(orders.c.meter_id, orders.c.source, orders.c.priority)).all()
        one = conn.execute(select(meters.c.id).where(meters.c.serial == "1")).scalar_one()
    assert [tuple(r) for r in got] == [(one, "schedule", 4)]

    assert client.delete(f"/api/v1/schedules/{made['id']}", headers=viewer).status_code == 403
    assert client.delete(f"/api/v1/schedules/{made['id']}", headers=operator).status_code == 204
    assert client.delete(f"/api/v1/schedules/{made['id']}", headers=operator).status_code == 404
    assert client.get(f"/api/v1/schedules/{made['id']}", headers=viewer).status_code == 404
    assert [s["name"] for s in client.get("/api/v1/schedules", headers=viewer).json()] == ["n"]


def test_viewer_may_not_create_and_is_logged(api) -> None:  # type: ignore[no-untyped-def]
    client, engine = api
    res = client.post("/api/v1/schedules", json={"name": "x", "kind": "read", "every_minutes": 15},
                      headers=auth(client, "vera"))
    assert res.status_code == 403
    assert client.get("/api/v1/schedules", headers=auth(client, "ada")).json() == []
    with engine.connect() as conn:
        messages = [r.message for r in conn.execute(select(log_records).where(log_records.c.category == "security"))]
    assert any("schedule.manage" in m for m in messages)


def test_unauthenticated_is_401(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    assert client.get("/api/v1/schedules").status_code == 401
    assert client.post("/api/v1/schedules", json={"name": "x", "kind": "read", "every_minutes": 15}).status_code == 401


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"name": "x", "kind": "read"}, 400, "exactly one"),
    ({"name": "x", "kind": "read", "cron": "0 2 * * *", "every_minutes": 60}, 400, "exactly one"),
    ({"name": "x", "kind": "read", "cron": "0 99 * * *"}, 400, "cron"),
    ({"name": "x", "kind": "read", "every_minutes": 7}, 400, "divide"),
    ({"name": "x", "kind": "relay", "every_minutes": 60}, 400, "cannot be scheduled"),
    ({"name": "x", "kind": "read", "every_minutes": 60, "group": {"zone": "a"}}, 422, None),
    ({"name": "x", "kind": "read", "every_minutes": 60, "priority": 10}, 422, None),
    ({"name": "x", "kind": "read", "every_minutes": 60, "extra": 1}, 422, None),
])
def test_bad_bodies(api, body: dict, status: int, reason: str | None) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    res = client.post("/api/v1/schedules", json=body, headers=auth(client, "oscar"))
    assert res.status_code == status, res.text
    if reason:
        assert reason in res.json()["detail"]


def test_duplicate_name_is_400(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    operator = auth(client, "oscar")
    body = {"name": "dup", "kind": "read", "every_minutes": 60}
    assert client.post("/api/v1/schedules", json=body, headers=operator).status_code == 201
    res = client.post("/api/v1/schedules", json=body, headers=operator)
    assert res.status_code == 400 and "exists" in res.json()["detail"]
