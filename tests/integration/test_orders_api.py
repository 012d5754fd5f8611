"""POST /api/v1/orders for the new kinds (HES-11, HES-35, HES-63, AMR-5): relay, time-set and load-profile, for a
meter or a whole modem, with role checks (viewers never order; relay and time-set need operator or admin) and
clear 400s for bad requests. The dispatcher's MASS request is checked from claim_next + directive_request.

covers HES-11, HES-12, HES-35, HES-60, HES-63, AMR-5
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from osos.auth import hash_password
from osos.config import Settings
from osos.headend.orders import claim_next, directive_request, finish
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, meters, modems, orders, users
from osos.web.app import create_app

pytestmark = pytest.mark.integration

PASSWORD = "Orders-test-4711"  # test-only credentials in a per-test database
NOW = datetime.now(UTC).replace(microsecond=0)


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def api(db_url: str, tmp_path) -> Iterator[tuple[TestClient, object, dict[str, int]]]:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        modem = conn.execute(insert(modems).values(flag="OSS", serial="GWAPI01", registered_at=NOW,
                                                   topic_style="device", transport="tls")).inserted_primary_key[0]
        meter = conn.execute(insert(meters).values(flag="LGZ", serial="70000009", modem_id=modem, protocol="dlms",
                                                   first_seen_at=NOW)).inserted_primary_key[0]
        for name, role in (("ada", "admin"), ("oscar", "operator"), ("vera", "viewer")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=NOW))
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=db_url), engine)) as client:
        yield client, engine, {"modem": modem, "meter": meter}
    engine.dispose()


def auth(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_relay_time_set_and_load_profile_orders(api) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    viewer, operator = auth(client, "vera"), auth(client, "oscar")
    relay = {"kind": "relay", "meter": ids["meter"], "state": "disconnect"}
    assert client.post("/api/v1/orders", json=relay, headers=viewer).status_code == 403
    res = client.post("/api/v1/orders", json=relay, headers=operator)
    assert res.status_code == 201
    order = client.get(f"/api/v1/orders/{res.json()['id']}", headers=viewer).json()
    assert (order["kind"], order["request"], order["meter"]) == ("relay", {"state": "disconnect"}, ids["meter"])

    lp = {"kind": "load-profile", "modem": ids["modem"], "start": "2026-03-10T06:00:00+03:00",
          "end": "2026-03-10T09:00:00+03:00"}
    res = client.post("/api/v1/orders", json=lp, headers=operator)
    assert res.status_code == 201
    assert client.get(f"/api/v1/orders/{res.json()['id']}", headers=operator).json()["modem"] == ids["modem"]
    assert client.post("/api/v1/orders", json={"kind": "time-set", "meter": ids["meter"]},
                       headers=auth(client, "ada")).status_code == 201

    # what the dispatcher sends for each, in creation order (same priority); one at a time, since a modem takes
    # one order at a time (issue 8 item 2): each is answered before the next is claimed
    sent = []
    with engine.begin() as conn:
        while (claimed := claim_next(conn, timeout_s=30)) is not None:
            sent.append(directive_request(claimed["kind"], claimed["request"]))
            assert claim_next(conn, timeout_s=30) is None  # the modem is busy
            finish(conn, claimed["reference_id"], succeeded=True, modem_id=ids["modem"])
    assert sent == [
        {"directive": "relay-disconnect", "packetClass": "history"},
        {"directive": "load-profile", "packetClass": "loadProfile1",
         "params": {"start": "2026-03-10T06:00:00+03:00", "end": "2026-03-10T09:00:00+03:00"}},
        {"directive": "time-set", "packetClass": "history"},
    ]


@pytest.mark.parametrize(("body", "detail"), [
    ({"kind": "relay", "state": "toggle"}, None),  # not connect/disconnect: schema refusal (422)
    ({"kind": "relay"}, "state connect or disconnect"),
    ({"kind": "load-profile", "start": "yesterday", "end": "2026-03-10T09:00:00"}, "not an ISO 8601"),
    ({"kind": "load-profile", "start": "2026-03-10T09:00:00", "end": "2026-03-10T06:00:00"}, "before end"),
    ({"kind": "time-set", "directive": "readout"}, "only be given for a read"),
    ({"kind": "explode"}, None),  # not an order kind: schema refusal (422)
])
def test_bad_orders_are_refused_with_a_reason(api, body: dict, detail: str | None) -> None:  # type: ignore[no-untyped-def]
    client, _engine, ids = api
    res = client.post("/api/v1/orders", json={**body, "meter": ids["meter"]}, headers=auth(client, "oscar"))
    if detail is None:
        assert res.status_code == 422
    else:
        assert res.status_code == 400 and detail in res.json()["detail"]


def test_meter_and_modem_together_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    client, _engine, ids = api
    res = client.post("/api/v1/orders", json={"kind": "read", "meter": ids["meter"], "modem": ids["modem"]},
                      headers=auth(client, "oscar"))
    assert res.status_code == 400 and res.json()["detail"] == "give exactly one of meter or modem"


# ---------------------------------------------------------------- an order carries only what its kind permits


def security_log(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(log_records.c.message).where(log_records.c.category == "security")
                                 .order_by(log_records.c.id)).scalars())


@pytest.mark.parametrize("body", [
    # the escalations: a clock set and a disconnect passed off as reads
    {"kind": "read", "directive": "time-set", "params": {"time": "00:00:00", "date": "30-01-01"}},
    {"kind": "read", "directive": "relay-disconnect"},
    {"kind": "read", "directive": "relay-connect"},
    {"kind": "load-profile", "directive": "time-set", "start": "2026-03-10T06:00:00", "end": "2026-03-10T07:00:00"},
])
def test_read_orders_cannot_carry_other_actions(api, body: dict) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    body = {**body, "meter": ids["meter"]}
    assert client.post("/api/v1/orders", json=body, headers=auth(client, "vera")).status_code == 403
    res = client.post("/api/v1/orders", json=body, headers=auth(client, "oscar"))
    assert res.status_code == 400
    assert "read" in res.json()["detail"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 0


def test_a_read_directive_and_its_range_are_accepted(api) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    res = client.post("/api/v1/orders", json={"kind": "read", "meter": ids["meter"], "directive": "load-profile-2",
                                              "params": {"start": "2026-03-10T06:00:00+03:00"}},
                      headers=auth(client, "oscar"))
    assert res.status_code == 201
    with engine.begin() as conn:
        claimed = claim_next(conn, timeout_s=30)
    assert directive_request(claimed["kind"], claimed["request"]) == {
        "directive": "load-profile-2", "packetClass": "shortRead", "params": {"start": "2026-03-10T06:00:00+03:00"}}


@pytest.mark.parametrize("params", [{"password": "00000000"}, {"address": "99999999"}, {"ek": "00" * 16},
                                    {"client_sap": "1"}, {"Password": "x"}])
def test_meter_secrets_never_come_from_an_order(api, params: dict) -> None:  # type: ignore[no-untyped-def]
    client, engine, ids = api
    for kind, extra in (("read", {}), ("time-set", {}), ("relay", {"state": "disconnect"})):
        res = client.post("/api/v1/orders", json={"kind": kind, "meter": ids["meter"], "params": params, **extra},
                          headers=auth(client, "ada"))
        assert res.status_code == 400, kind
        assert f"params may not set {next(iter(params))}" in res.json()["detail"]
    assert len(security_log(engine)) == 3  # each attempt is in the security log (HES-59)


def test_relay_needs_a_tls_session(api) -> None:  # type: ignore[no-untyped-def]
    """HES-54: relay orders are refused at creation when the modem's last session was not TLS."""
    client, engine, ids = api
    relay = {"kind": "relay", "meter": ids["meter"], "state": "disconnect"}
    for transport, seen in (("plain", "its last session was plain"), (None, "not been heard over any session")):
        with engine.begin() as conn:
            conn.execute(update(modems).where(modems.c.id == ids["modem"]).values(transport=transport))
        res = client.post("/api/v1/orders", json=relay, headers=auth(client, "oscar"))
        assert res.status_code == 400
        assert "needs a TLS session" in res.json()["detail"] and seen in res.json()["detail"]
    # a read is fine over either session
    assert client.post("/api/v1/orders", json={"kind": "read", "meter": ids["meter"]},
                       headers=auth(client, "oscar")).status_code == 201
