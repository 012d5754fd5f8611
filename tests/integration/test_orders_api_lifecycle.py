"""The order API of issue 8: cancel (with the kind's permission), duplicates answered with 200 and the existing
id, contradicting relay orders (the later wins), source and attempts on every order, and the filtered, paged
list with a total (HES-12, HES-60, HES-63).

covers HES-12, HES-60, HES-63
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import cache

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from osos.auth import hash_password
from osos.config import Settings
from osos.headend import orders as order_ops
from osos.store.db import make_engine, migrate
from osos.store.schema import meters, modems, users
from osos.web.app import create_app

pytestmark = pytest.mark.integration

PASSWORD = "Orders-life-4711"  # test-only credentials in a per-test database
NOW = datetime.now(UTC).replace(microsecond=0)


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def api(db_url: str, tmp_path) -> Iterator[tuple[TestClient, object, dict[str, int]]]:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        modem = conn.execute(insert(modems).values(flag="OSS", serial="GWLIFE", registered_at=NOW,
                                                   topic_style="device", transport="tls")).inserted_primary_key[0]
        meter = conn.execute(insert(meters).values(flag="LGZ", serial="71000001", modem_id=modem, protocol="dlms",
                                                   first_seen_at=NOW)).inserted_primary_key[0]
        meter2 = conn.execute(insert(meters).values(flag="LGZ", serial="71000002", modem_id=modem,
                                                    protocol="dlms", first_seen_at=NOW)).inserted_primary_key[0]
        for name, role in (("ada", "admin"), ("oscar", "operator"), ("vera", "viewer")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=NOW))
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=db_url), engine)) as client:
        yield client, engine, {"modem": modem, "meter": meter, "meter2": meter2}
    engine.dispose()


def auth(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_cancel_needs_the_kinds_permission_and_an_open_order(api) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    operator, viewer = auth(client, "oscar"), auth(client, "vera")
    relay = client.post("/api/v1/orders", json={"kind": "relay", "meter": ids["meter"], "state": "disconnect"},
                        headers=operator).json()["id"]
    assert client.post(f"/api/v1/orders/{relay}/cancel", headers=viewer).status_code == 403
    res = client.post(f"/api/v1/orders/{relay}/cancel", json={"reason": "wrong meter"}, headers=operator)
    assert res.status_code == 200
    assert (res.json()["status"], res.json()["error"]) == ("cancelled", "cancelled by oscar: wrong meter")
    assert client.post(f"/api/v1/orders/{relay}/cancel", headers=operator).status_code == 409
    assert client.post("/api/v1/orders/999999/cancel", headers=operator).status_code == 404

    # a running order: cancelled, and its answer when it comes changes nothing
    read = client.post("/api/v1/orders", json={"kind": "read", "meter": ids["meter"]}, headers=operator).json()["id"]
    with engine.begin() as conn:
        claimed = order_ops.claim_next(conn, timeout_s=60)
    assert claimed["id"] == read
    assert client.post(f"/api/v1/orders/{read}/cancel", headers=operator).json()["status"] == "cancelled"
    with engine.begin() as conn:
        assert order_ops.finish(conn, claimed["reference_id"], succeeded=True, result={"v": 1}) is None
    order = client.get(f"/api/v1/orders/{read}", headers=viewer).json()
    assert (order["status"], order["result"]) == ("cancelled", None)
    assert [(a["attempt"], a["outcome"]) for a in order["attempt_log"]] == [(1, "cancelled")]


def test_a_duplicate_answers_200_and_a_contradicting_relay_supersedes(api) -> None:  # type: ignore[no-untyped-def]
    client, _engine, ids = api
    operator = auth(client, "oscar")
    body = {"kind": "relay", "meter": ids["meter"], "state": "connect"}
    first = client.post("/api/v1/orders", json=body, headers=operator)
    assert first.status_code == 201 and first.json()["existing"] is False
    again = client.post("/api/v1/orders", json=body, headers=auth(client, "ada"))
    assert again.status_code == 200
    assert again.json() == {"id": first.json()["id"], "status": "pending", "existing": True}
    assert again.headers["Location"] == f"/api/v1/orders/{first.json()['id']}"
    later = client.post("/api/v1/orders", json={**body, "state": "disconnect"}, headers=operator)
    assert later.status_code == 201
    earlier = client.get(f"/api/v1/orders/{first.json()['id']}", headers=operator).json()
    assert (earlier["status"], earlier["error"]) == ("cancelled", f"superseded by order {later.json()['id']}")
    assert earlier["source"] == "api"  # a bearer token: another system, not the web UI


def test_the_order_list_filters_pages_and_counts(api) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    t0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    made = []  # (id, kind, meter, modem, created_by, source, created_at, status)
    specs = [  # kind, meter key or None (the modem), creator, source, hour offset, request
        ("read", "meter", "oscar", "api", 0, {"directive": "readout"}),
        ("read", "meter2", "ada", "ui", 1, {"directive": "readout"}),
        ("time-set", "meter", "ada", "schedule", 2, None),
        ("read", None, "system-bot", "system", 3, None),
        ("time-set", "meter2", "oscar", "api", 4, None),
        ("read", "meter", "oscar", "schedule", 5, {"directive": "short-read"}),
    ]
    with engine.begin() as conn:
        for kind, target, by, source, hours, request in specs:
            at = t0 + timedelta(hours=hours)
            kwargs = {"meter_id": ids[target]} if target else {"modem_id": ids["modem"]}
            oid = order_ops.create_order(conn, kind, created_by=by, source=source, request=request, now=at,
                                         deadline=at + timedelta(days=3650), **kwargs)
            made.append({"id": oid, "kind": kind, "meter": ids[target] if target else None, "modem": ids["modem"],
                         "created_by": by, "source": source, "created_at": at, "status": "pending"})
        cancelled = made[1]["id"]
        order_ops.cancel(conn, cancelled, "test", now=t0)
        made[1]["status"] = "cancelled"
    viewer = auth(client, "vera")

    def ask(**params) -> dict:
        res = client.get("/api/v1/orders", params=params, headers=viewer)
        assert res.status_code == 200, res.text
        return res.json()

    def expect(pred) -> list[int]:
        return sorted((o["id"] for o in made if pred(o)), reverse=True)  # newest first

    everything = ask()
    assert everything["total"] == 6 and [o["id"] for o in everything["items"]] == expect(lambda o: True)
    assert all(o["attempt_log"] == [] and o["source"] in ("api", "ui", "schedule", "system")
               for o in everything["items"])
    cases = [
        ({"status": "cancelled"}, lambda o: o["status"] == "cancelled"),
        ({"kind": "time-set"}, lambda o: o["kind"] == "time-set"),
        ({"meter": ids["meter"]}, lambda o: o["meter"] == ids["meter"]),
        ({"modem": ids["modem"]}, lambda o: o["modem"] == ids["modem"]),
        ({"created_by": "oscar"}, lambda o: o["created_by"] == "oscar"),
        ({"source": "schedule"}, lambda o: o["source"] == "schedule"),
        ({"created_from": (t0 + timedelta(hours=2)).isoformat(), "created_to": (t0 + timedelta(hours=4)).isoformat()},
         lambda o: t0 + timedelta(hours=2) <= o["created_at"] < t0 + timedelta(hours=4)),
        # the same window written in Istanbul time (+03:00) selects the same orders on both stores
        ({"created_from": (t0 + timedelta(hours=2)).astimezone(timezone(timedelta(hours=3))).isoformat(),
          "created_to": (t0 + timedelta(hours=4)).astimezone(timezone(timedelta(hours=3))).isoformat()},
         lambda o: t0 + timedelta(hours=2) <= o["created_at"] < t0 + timedelta(hours=4)),
        ({"kind": "read", "created_by": "oscar", "source": "api"},
         lambda o: (o["kind"], o["created_by"], o["source"]) == ("read", "oscar", "api")),
    ]
    for params, pred in cases:
        got = ask(**params)
        assert [o["id"] for o in got["items"]] == expect(pred), params
        assert got["total"] == len(expect(pred)), params
    page = ask(limit=2, offset=2)
    assert (page["total"], page["limit"], page["offset"]) == (6, 2, 2)
    assert [o["id"] for o in page["items"]] == expect(lambda o: True)[2:4]
    assert ask(offset=10)["items"] == []
    assert client.get("/api/v1/orders", params={"status": "lost"}, headers=viewer).status_code == 422
    assert client.get("/api/v1/orders", params={"limit": 501}, headers=viewer).status_code == 422
    naive = client.get("/api/v1/orders", params={"created_from": "2026-11-01T08:00:00"}, headers=viewer)
    assert naive.status_code == 400
    assert client.get("/api/v1/orders").status_code == 401
