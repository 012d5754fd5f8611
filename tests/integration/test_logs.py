"""Log categories and retention (HES-59) on both stores: the spec's periods, the purge with a fake clock, the
head-end's periodic purge and `osos logs purge`, modem logs ingested, and GET /api/v1/logs for admins only.

covers HES-59, HES-60
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from typer.testing import CliRunner

from osos.auth import hash_password, record_security_event
from osos.config import Settings
from osos.headend import logs as L
from osos.headend.ingest import Incoming, Ingestor, write_log
from osos.headend.inventory import register_modem
from osos.protocols import mass
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, users
from osos.web.app import create_app

pytestmark = pytest.mark.integration

# HES-59, Çizelge 3 (written here from the spec, not read from osos/data/logs/categories.toml)
SPEC_DAYS = {"communication": 10, "parsing": 15, "database": 3, "order_bottleneck": 10, "scheduler": 10,
             "api_command": 10, "unauthorized_access": 90, "user_functional": 10}
# the category names the code writes today -> the spec category they belong to
STORED = {"communication": "communication", "parsing": "parsing", "database": "database",
          "orders": "order_bottleneck", "security": "unauthorized_access", "user": "user_functional",
          "scheduler": "scheduler", "api": "api_command"}
FAKE_NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # a fake clock: nothing here depends on the wall time


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def test_categories_are_the_specs() -> None:
    cats = L.categories()
    assert {name: c.retention_days for name, c in cats.items() if name in SPEC_DAYS} == SPEC_DAYS
    for stored, spec in STORED.items():
        assert L.category_of(stored).name == spec  # type: ignore[union-attr]
    assert L.category_of("modem").retention_days == 30  # type: ignore[union-attr]  # "others": our choice
    assert L.category_of("something-else") is None


def seed(engine) -> None:  # type: ignore[no-untyped-def]
    """Per stored category: one record a second past its retention, one a second short of it."""
    with engine.begin() as conn:
        for stored, spec in STORED.items():
            days = timedelta(days=SPEC_DAYS[spec])
            for label, at in (("old", FAKE_NOW - days - timedelta(seconds=1)),
                              ("young", FAKE_NOW - days + timedelta(seconds=1))):
                if stored == "security":
                    record_security_event(conn, f"{stored} {label}", now=at)  # the path the web uses
                else:
                    write_log(conn, stored, "warning", f"{stored} {label}", now=at)
        write_log(conn, "modem", "info", "modem old", now=FAKE_NOW - timedelta(days=31))
        write_log(conn, "modem", "info", "modem young", now=FAKE_NOW - timedelta(days=29))
        write_log(conn, "unlisted", "info", "unlisted old", now=FAKE_NOW - timedelta(days=3650))


def messages(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(conn.execute(select(log_records.c.message)).scalars())


def test_purge_deletes_by_category_with_a_fake_clock(engine) -> None:
    seed(engine)
    with engine.begin() as conn:
        deleted = L.purge(conn, FAKE_NOW)
    expected = {spec: 1 for spec in SPEC_DAYS} | {"modem": 1}
    assert deleted == expected
    kept = {f"{s} young" for s in STORED} | {"modem young", "unlisted old"}  # an unlisted category is never purged
    assert messages(engine) == kept
    with engine.begin() as conn:  # a second run at the same time deletes nothing more
        assert sum(L.purge(conn, FAKE_NOW).values()) == 0
    with engine.begin() as conn:  # 90 days later only the unlisted record is left
        L.purge(conn, FAKE_NOW + timedelta(days=90))
    assert messages(engine) == {"unlisted old"}


def test_headend_purges_periodically(engine, db_url, tmp_path, wait_until) -> None:  # type: ignore[no-untyped-def]
    from osos.headend.service import HeadEnd
    from osos.store.db import utcnow

    with engine.begin() as conn:
        write_log(conn, "database", "error", "ancient", now=utcnow() - timedelta(days=4))
        write_log(conn, "database", "error", "fresh", now=utcnow())
    head = HeadEnd(Settings(data_dir=tmp_path / "d", database_url=db_url), engine)
    head.retention_interval_s = 0.2
    head._start_retention()
    try:
        wait_until(lambda: "ancient" not in messages(engine), what="the head-end's purge")
        assert "fresh" in messages(engine)
    finally:
        head._stop.set()
        for t in head._threads:
            t.join(timeout=5)


def test_osos_logs_purge_command(engine, db_url, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from osos.cli.main import app

    seed(engine)
    monkeypatch.setenv("OSOS_DATABASE_URL", db_url)
    res = CliRunner().invoke(app, ["logs", "purge", "--now", FAKE_NOW.isoformat(), "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["unauthorized_access"] == 1
    assert messages(engine) == {f"{s} young" for s in STORED} | {"modem young", "unlisted old"}
    res = CliRunner().invoke(app, ["logs", "purge", "--now", "yesterday", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2


def test_modem_logs_are_ingested(engine) -> None:
    gw = mass.Device("OSS", "GWLOG1")
    with engine.begin() as conn:
        register_modem(conn, gw.flag, gw.serial, by="test", now=FAKE_NOW)
    body = [{"level": "WARN", "message": "RS-485 timeout on port 1", "date": "2027-03-01 11:59:00"},
            {"level": "error", "description": "modem reboot"}, "plain text line"]
    msg = {"device": {"flag": gw.flag, "serialNumber": gw.serial}, "function": "log", "referenceId": "log-1",
           "response": body}
    topics = mass.Topics("mass")
    out = Ingestor(engine, topics).process([Incoming(topics.uplink(gw), json.dumps(msg).encode(), FAKE_NOW)])
    assert [o.status for o in out] == ["stored"]
    with engine.connect() as conn:
        got = conn.execute(select(log_records.c.category, log_records.c.level, log_records.c.message)
                           .where(log_records.c.category == "modem").order_by(log_records.c.id)).all()
    assert [tuple(r) for r in got] == [("modem", "warning", "OSSGWLOG1: RS-485 timeout on port 1"),
                                       ("modem", "error", "OSSGWLOG1: modem reboot"),
                                       ("modem", "info", "OSSGWLOG1: plain text line")]


PASSWORD = "Logs-test-4711"  # test-only credentials in a per-test database


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def api(engine, db_url: str, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        for name, role in (("ada", "admin"), ("oscar", "operator")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=FAKE_NOW))
        t0 = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
        write_log(conn, "parsing", "warning", "bad BCC", now=t0)
        write_log(conn, "communication", "warning", "read failed", now=t0 + timedelta(minutes=1))
        record_security_event(conn, "forbidden: order.relay", now=t0 + timedelta(minutes=2))
        write_log(conn, "database", "error", "deadlock", now=t0 + timedelta(minutes=3))
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=db_url), engine)) as client:
        yield client


def auth(client: TestClient, user: str) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_logs_api_is_for_admins(api) -> None:  # type: ignore[no-untyped-def]
    admin, operator = auth(api, "ada"), auth(api, "oscar")
    assert api.get("/api/v1/logs").status_code == 401
    assert api.get("/api/v1/logs", headers=operator).status_code == 403
    window = {"from": "2026-11-21T07:00:00Z", "to": "2026-11-21T07:04:00Z"}  # the four seeded records only
    res = api.get("/api/v1/logs", params=window, headers=admin).json()
    assert res["total"] == 4
    assert [i["message"] for i in res["items"]] == ["deadlock", "forbidden: order.relay", "read failed", "bad BCC"]
    spec = api.get("/api/v1/logs", params=window | {"category": "unauthorized_access"}, headers=admin).json()
    assert [(i["category"], i["spec_category"]) for i in spec["items"]] == [("security", "unauthorized_access")]
    assert api.get("/api/v1/logs", params=window | {"category": "parsing"}, headers=admin).json()["total"] == 1
    errors = api.get("/api/v1/logs", params=window | {"level": "error"}, headers=admin).json()
    assert [i["message"] for i in errors["items"]] == ["deadlock"]
    page = api.get("/api/v1/logs", params=window | {"limit": 1, "offset": 1}, headers=admin).json()
    assert (page["total"], [i["message"] for i in page["items"]]) == (4, ["forbidden: order.relay"])
    cats = api.get("/api/v1/logs/categories", headers=admin).json()
    assert {c["name"]: c["retention_days"] for c in cats if c["name"] in SPEC_DAYS} == SPEC_DAYS
