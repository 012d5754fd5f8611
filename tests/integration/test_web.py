"""The web layer against migrated SQLite and the real PostgreSQL: auth, roles, inventory, search, registers,
raw vs parsed, orders, UI pages, language switch, CSRF and error pages.

covers AMR-9, HES-13, HES-14, HES-15, HES-51, HES-56, HES-59, HES-60
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import Engine, func, insert, select, update

from osos.auth import hash_password, issue_token
from osos.config import Settings
from osos.headend.orders import claim_next, finish
from osos.protocols.obis import describe
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, meters, modems, raw_messages, readings, register_latest, users
from osos.web.app import create_app
from osos.web.security import write_rejections

PASSWORD = "Test-pass-4711-ok"  # test-only credentials, created per test database
NOW = datetime.now(UTC).replace(microsecond=0)
READ_AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

# An IEC 62056-21 data block as a modem forwards it (AMR-2: values keep their leading zeros and three decimals).
IEC_BLOCK = "\x02F.F(00)\r\n0.9.1(093000)\r\n1.8.0(015214.234*kWh)\r\n1.8.1(010000.100*kWh)\r\n!\r\n\x03\x07"
RAW_JSON = json.dumps(
    {"device": {"flag": "ABC", "serialNumber": "MDM0001"}, "function": "read", "referenceId": "r-1",
     "response": {"meters": [{"flag": "MKL", "serialNumber": "12345678", "data": IEC_BLOCK}]}},
    separators=(",", ":"), ensure_ascii=False,
)
RAW_BINARY = bytes([0x68, 0x1F, 0x1F, 0x68, 0x08, 0x00, 0x72, 0x00, 0x16])  # not text: shown as hex


@dataclass
class Web:
    client: TestClient
    engine: Engine
    settings: Settings
    ids: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, username: str, password: str = PASSWORD) -> str:
        if username not in self.tokens:
            res = self.client.post("/api/v1/auth/token", json={"username": username, "password": password})
            assert res.status_code == 200, res.text
            self.tokens[username] = res.json()["access_token"]
        return self.tokens[username]

    def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def security_records(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(log_records).where(log_records.c.category == "security")
            ).scalar_one()


def seed(engine: Engine) -> dict[str, int]:
    """Two modems (one online, one silent for an hour), three meters, two raw messages with readings."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        ids["modem_on"] = conn.execute(insert(modems).values(
            flag="ABC", serial="MDM0001", brand="Acme", model="M1", device_type="MM", comm_type="4G", signal=21,
            registered_at=NOW - timedelta(days=3), last_seen_at=NOW - timedelta(seconds=30),
            last_heartbeat_at=NOW - timedelta(seconds=60), topic_style="device",
        )).inserted_primary_key[0]
        ids["modem_off"] = conn.execute(insert(modems).values(
            flag="XYZ", serial="MDM0002", device_type="HU", comm_type="NB-IoT",
            registered_at=NOW - timedelta(days=3), last_heartbeat_at=NOW - timedelta(hours=1), topic_style="device",
        )).inserted_primary_key[0]
        ids["m1"] = conn.execute(insert(meters).values(
            flag="MKL", serial="12345678", modem_id=ids["modem_on"], brand="Makel", kind="single-phase",
            protocol="iec62056-21", installation_no="4000123", subscriber_name="Ayşe Yılmaz",
            first_seen_at=NOW - timedelta(days=2), last_read_at=READ_AT,
        )).inserted_primary_key[0]
        ids["m2"] = conn.execute(insert(meters).values(
            flag="VIK", serial="87654321", modem_id=ids["modem_on"], brand="Viko", kind="three-phase",
            installation_no="4000456", subscriber_name="Mehmet Öztürk", first_seen_at=NOW - timedelta(days=2),
        )).inserted_primary_key[0]
        ids["m3"] = conn.execute(insert(meters).values(
            flag="ELM", serial="55550001", modem_id=None, kind="kombi", installation_no="7000001",
            subscriber_name="İlker Işık", first_seen_at=NOW - timedelta(days=1),
        )).inserted_primary_key[0]
        ids["raw_json"] = conn.execute(insert(raw_messages).values(
            dedup_key="ABCMDM0001|read|r-1|0", received_at=READ_AT, topic="mass/device/ABC/MDM0001/to_server",
            device_flag="ABC", device_serial="MDM0001", function="read", reference_id="r-1",
            payload=RAW_JSON.encode(), status="ok",
        )).inserted_primary_key[0]
        ids["raw_bin"] = conn.execute(insert(raw_messages).values(
            dedup_key="ABCMDM0001|read|r-2|0", received_at=READ_AT + timedelta(minutes=5),
            topic="mass/device/ABC/MDM0001/to_server", device_flag="ABC", device_serial="MDM0001",
            function="read", reference_id="r-2", payload=RAW_BINARY, status="ok",
        )).inserted_primary_key[0]
        for obis, value, unit in (("1.8.0", "015214.234", "kWh"), ("1.8.1", "010000.100", "kWh")):
            conn.execute(insert(readings).values(raw_id=ids["raw_json"], meter_id=ids["m1"], obis=obis, value=value,
                                                 unit=unit, read_at=READ_AT))
            conn.execute(insert(register_latest).values(meter_id=ids["m1"], obis=obis, value=value, unit=unit,
                                                        read_at=READ_AT, raw_id=ids["raw_json"]))
        # the same raw message also carried meter 2's value: it must not show up as meter 1's parsed data
        conn.execute(insert(readings).values(raw_id=ids["raw_json"], meter_id=ids["m2"], obis="1.8.0",
                                             value="000042.000", unit="kWh", read_at=READ_AT))
        conn.execute(insert(readings).values(raw_id=ids["raw_bin"], meter_id=ids["m1"], obis="0.9.1",
                                             value="093500", unit=None, read_at=READ_AT + timedelta(minutes=5)))
        # scrypt is deliberately slow: hash the shared test password once per run (create_user is tested in
        # test_web_cli.py and tests/unit/test_auth.py)
        for name, role in (("ada", "admin"), ("oscar", "operator"), ("vera", "viewer")):
            conn.execute(insert(users).values(username=name, password_hash=password_hash(), role=role,
                                              disabled=False, created_at=NOW))
    return ids


def flush_rejections(web: Web) -> list[tuple[str, str, int]]:
    """Write the counted rejections now, as the app does periodically and at shutdown; (kind, client, count)."""
    rows = web.client.app.state.rejections.flush(everything=True)
    write_rejections(web.engine, rows, now=datetime.now(UTC), logger=web.client.app.state.logger)
    return [(r.kind, r.client, r.count) for r in rows]


@cache
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def web(db_url: str, tmp_path) -> Iterator[Web]:
    # "now" of this test, not of the collection: the online flag is judged against the wall clock, and a suite
    # that takes more than 4 minutes to reach this file would otherwise see a 60 s old heartbeat as 5 minutes old
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)
    engine = make_engine(db_url)
    migrate(engine)
    ids = seed(engine)
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    with TestClient(create_app(settings, engine), follow_redirects=False) as client:
        yield Web(client, engine, settings, ids)
    engine.dispose()


# ------------------------------------------------------------------------------------------------ API


def test_health_needs_no_auth_and_token_flow(web: Web) -> None:
    assert web.client.get("/healthz").json() == {"status": "ok"}
    res = web.client.post("/api/v1/auth/token", json={"username": "vera", "password": PASSWORD})
    assert res.status_code == 200
    body = res.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == web.settings.token_ttl_s
    assert web.client.get("/api/v1/modems", headers={"Authorization": f"Bearer {body['access_token']}"}).status_code \
        == 200
    # the OpenAPI description is served and lists the contract's paths
    paths = web.client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/meters", "/api/v1/meters/{meter_id}/registers", "/api/v1/orders"} <= set(paths)
    docs = web.client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text and "https://" not in docs.text  # everything from our own server
    assert web.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_bad_credentials_and_tokens_are_refused_and_logged(web: Web) -> None:
    before = web.security_records()
    for creds in ({"username": "vera", "password": "wrong-password-123"}, {"username": "nobody", "password": "x"}):
        res = web.client.post("/api/v1/auth/token", json=creds)
        assert res.status_code == 401
        assert res.json() == {"detail": "invalid username or password"}
    assert web.security_records() == before + 2  # HES-59: unauthorized access records
    with web.engine.connect() as conn:
        messages = [r.message for r in conn.execute(select(log_records.c.message).order_by(log_records.c.id))]
    assert messages[-2:] == ["failed login", "failed login"]

    assert web.client.get("/api/v1/meters").status_code == 401  # no token at all
    assert web.client.get("/api/v1/meters", headers={"Authorization": "Bearer not.a-token"}).status_code == 401
    key = web.settings.secret_key()
    expired, _ = issue_token(key, "vera", "viewer", uid=1, gen=0, ttl_s=60, now=NOW - timedelta(hours=1))
    res = web.client.get("/api/v1/meters", headers={"Authorization": f"Bearer {expired}"})
    assert res.status_code == 401 and res.json()["detail"] == "token expired"
    forged, _ = issue_token(b"some-other-key", "ada", "admin", uid=1, gen=0, ttl_s=600, now=NOW)
    assert web.client.get("/api/v1/meters", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # signed, but no such user
    ghost, _ = issue_token(key, "ghost", "admin", uid=999_999, gen=0, ttl_s=600, now=datetime.now(UTC))
    assert web.client.get("/api/v1/meters", headers={"Authorization": f"Bearer {ghost}"}).status_code == 401
    # two failed logins (one row each), the first of four rejected tokens at once; the other three are counted
    # in memory and written as one row when the window ends or the app stops (HES-59 without a storage flood)
    assert web.security_records() == before + 3
    assert flush_rejections(web) == [("rejected token", "testclient", 3)]
    assert web.security_records() == before + 4


def test_role_changes_and_disabling_apply_to_issued_tokens(web: Web) -> None:
    """The token names a user; the user's current row decides (HES-60): demotion and disabling act at once."""
    operator = web.auth("oscar")
    body = {"kind": "read", "meter": web.ids["m1"]}
    with web.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "oscar").values(role="viewer"))
    assert web.client.post("/api/v1/orders", json=body, headers=operator).status_code == 403
    assert web.client.get("/api/v1/meters", headers=operator).status_code == 200
    with web.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "oscar").values(disabled=True))
    res = web.client.get("/api/v1/meters", headers=operator)
    assert res.status_code == 401 and res.json() == {"detail": "user unknown or disabled"}
    assert web.client.post("/api/v1/auth/token", json={"username": "oscar", "password": PASSWORD}).status_code == 401


def test_repeated_failed_logins_are_throttled(web: Web) -> None:
    """HES-6: after 5 failures in 15 minutes for one user from one client, even the right password gets 429."""
    wrong = {"username": "oscar", "password": "Wrong-password-42"}
    for _ in range(5):
        assert web.client.post("/api/v1/auth/token", json=wrong).status_code == 401
    right = {"username": "oscar", "password": PASSWORD}
    res = web.client.post("/api/v1/auth/token", json=right)
    assert res.status_code == 429 and res.json() == {"detail": "too many failed logins; try again later"}
    assert res.headers["retry-after"] == "900"
    assert web.client.post("/api/v1/auth/token", json={"username": "vera", "password": PASSWORD}).status_code == 200
    with TestClient(web.client.app, client=("192.0.2.7", 50000)) as elsewhere:  # same user, another client
        assert elsewhere.post("/api/v1/auth/token", json=right).status_code == 200
    form = web.client.get("/login")  # the form is throttled the same way
    page = web.client.post("/login", data={**right, "csrf_token": _csrf_from(form.text)})
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    flush_rejections(web)
    with web.engine.connect() as conn:
        messages = [r.message for r in conn.execute(select(log_records.c.message).order_by(log_records.c.id))]
    assert messages.count("failed login") == 5
    # HES-59: each refusal is recorded; the second came after the first one's count was flushed (the second
    # TestClient's shutdown), so it was again the first of its window and written at once
    assert messages.count("1 throttled login from testclient") == 2
    with web.engine.begin() as conn:  # the failures age out of the 15-minute window
        conn.execute(update(log_records).values(at=NOW - timedelta(minutes=16)))
    assert web.client.post("/api/v1/auth/token", json=right).status_code == 200


def test_modems_list_with_counts_and_online_flag(web: Web) -> None:
    res = web.client.get("/api/v1/modems", headers=web.auth("vera"))
    assert res.status_code == 200
    by_serial = {m["serial"]: m for m in res.json()}
    on, off = by_serial["MDM0001"], by_serial["MDM0002"]
    assert (on["flag"], on["brand"], on["device_type"], on["comm_type"]) == ("ABC", "Acme", "MM", "4G")
    assert on["signal"] == 21
    assert on["meters"] == 2 and off["meters"] == 0
    assert on["online"] is True  # heartbeat 60 s ago: within 5 minutes
    assert off["online"] is False  # heartbeat an hour ago
    assert datetime.fromisoformat(on["last_heartbeat_at"]) == NOW - timedelta(seconds=60)
    one = web.client.get(f"/api/v1/modems/{web.ids['modem_on']}", headers=web.auth("vera"))
    assert one.status_code == 200
    detail = one.json()
    assert (detail["serial"], detail["meters"], detail["online"]) == ("MDM0001", 2, True)
    assert detail["topic_style"] == "device"
    assert datetime.fromisoformat(detail["registered_at"]) == NOW - timedelta(days=3)
    missing = web.client.get("/api/v1/modems/999999", headers=web.auth("vera"))
    assert missing.status_code == 404 and missing.json() == {"detail": "modem 999999 does not exist"}


def _serials(web: Web, headers: dict[str, str], q: str) -> set[str]:
    res = web.client.get("/api/v1/meters", params={"q": q}, headers=headers)
    assert res.status_code == 200
    return {m["serial"] for m in res.json()}


def test_meter_list_and_search(web: Web) -> None:
    headers = web.auth("vera")
    items = web.client.get("/api/v1/meters", headers=headers).json()
    assert [m["serial"] for m in items] == ["55550001", "12345678", "87654321"]  # ordered by flag, serial
    m1 = next(m for m in items if m["serial"] == "12345678")
    assert m1["modem"] == {"id": web.ids["modem_on"], "flag": "ABC", "serial": "MDM0001"}
    assert (m1["kind"], m1["brand"], m1["installation_no"], m1["subscriber_name"]) == (
        "single-phase", "Makel", "4000123", "Ayşe Yılmaz")
    assert datetime.fromisoformat(m1["last_read_at"]) == READ_AT
    assert next(m for m in items if m["serial"] == "55550001")["modem"] is None

    assert _serials(web, headers, "3456") == {"12345678"}  # part of a serial
    assert _serials(web, headers, "MKL1234") == {"12345678"}  # flag + serial
    assert _serials(web, headers, "4000456") == {"87654321"}  # installation number
    assert _serials(web, headers, "4000") == {"12345678", "87654321"}
    assert _serials(web, headers, "yılmaz") == {"12345678"}  # subscriber name
    assert _serials(web, headers, "YILMAZ") == {"12345678"}  # upper-case I for ı
    assert _serials(web, headers, "ozturk") == {"87654321"}  # typed without Turkish letters
    assert _serials(web, headers, "ÖZTÜRK") == {"87654321"}
    assert _serials(web, headers, "ilker isik") == {"55550001"}  # İ and I both fold to i
    assert _serials(web, headers, "%") == set()  # LIKE wildcards are searched literally
    assert _serials(web, headers, "_") == set()
    assert _serials(web, headers, "nobody") == set()
    for bad in ("a\x00b", "\x1b[2J"):  # control characters never reach SQL (PostgreSQL refuses NUL in text)
        assert web.client.get("/api/v1/meters", params={"q": bad}, headers=headers).status_code == 422
        assert web.client.get("/api/v1/modems", params={"q": bad}, headers=headers).status_code == 422
    assert web.client.post("/api/v1/auth/token", json={"username": "ve\x00ra", "password": "x"}).status_code == 422
    res = web.client.get("/api/v1/meters", params={"modem": web.ids["modem_on"]}, headers=headers)
    assert {m["serial"] for m in res.json()} == {"12345678", "87654321"}

    one = web.client.get(f"/api/v1/meters/{web.ids['m2']}", headers=headers)
    assert one.status_code == 200 and one.json()["subscriber_name"] == "Mehmet Öztürk"
    for huge in ("2147483648", "99999999999999999999", "0", "-1"):  # beyond INTEGER: refused, not a 500 on PG
        assert web.client.get(f"/api/v1/meters/{huge}", headers=headers).status_code == 422
    assert web.client.get("/api/v1/meters", params={"modem": 2**40}, headers=headers).status_code == 422
    missing = web.client.get("/api/v1/meters/999999", headers=headers)
    assert missing.status_code == 404 and missing.json() == {"detail": "meter 999999 does not exist"}


def test_search_never_fails_on_odd_text(web: Web) -> None:
    """Any printable text (quotes, backslashes, LIKE wildcards, Turkish and other scripts) is searched, not run."""
    headers = web.auth("vera")
    alphabet = st.characters(blacklist_categories=("Cc", "Cs"))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(alphabet=alphabet, min_size=1, max_size=30))
    def search(q: str) -> None:
        res = web.client.get("/api/v1/meters", params={"q": q}, headers=headers)
        assert res.status_code == 200, (q, res.text)
        assert isinstance(res.json(), list)
        if q.strip() in ("%", "_", "%%", "__"):  # wildcards alone match nothing: they are searched literally
            assert res.json() == []

    search()


def test_registers_keep_digits_exactly(web: Web) -> None:
    res = web.client.get(f"/api/v1/meters/{web.ids['m1']}/registers", headers=web.auth("vera"))
    assert res.status_code == 200
    regs = res.json()
    assert set(regs) == {"1.8.0", "1.8.1"}
    assert regs["1.8.0"]["value"] == "015214.234"  # a string: leading zero and three decimals kept (AMR-2)
    assert regs["1.8.1"]["value"] == "010000.100"
    assert regs["1.8.0"]["unit"] == "kWh"
    assert datetime.fromisoformat(regs["1.8.0"]["read_at"]) == READ_AT
    assert '"015214.234"' in res.text  # also on the wire, not re-formatted through a float
    assert web.client.get(f"/api/v1/meters/{web.ids['m3']}/registers", headers=web.auth("vera")).json() == {}


def test_raw_messages_with_parsed_values(web: Web) -> None:
    res = web.client.get(f"/api/v1/meters/{web.ids['m1']}/raw", params={"limit": 10}, headers=web.auth("vera"))
    assert res.status_code == 200
    raw = res.json()
    assert [r["id"] for r in raw] == [web.ids["raw_bin"], web.ids["raw_json"]]  # newest first
    binary, text = raw
    assert binary["encoding"] == "hex" and bytes.fromhex(binary["payload"]) == RAW_BINARY
    assert binary["size"] == len(RAW_BINARY)
    assert [(p["obis"], p["value"]) for p in binary["parsed"]] == [("0.9.1", "093500")]
    assert text["encoding"] == "utf-8" and text["payload"].encode() == RAW_JSON.encode()  # byte for byte (HES-5)
    # only meter 1's values, although the message also carried meter 2's 1.8.0
    assert [(p["obis"], p["value"], p["unit"]) for p in text["parsed"]] == [
        ("1.8.0", "015214.234", "kWh"), ("1.8.1", "010000.100", "kWh")]
    assert binary["readable"] is None and text["readable"] is None  # binary stays hex; plain text needs no aid
    limited = web.client.get(f"/api/v1/meters/{web.ids['m1']}/raw", params={"limit": 1}, headers=web.auth("vera"))
    assert [r["id"] for r in limited.json()] == [web.ids["raw_bin"]]
    m2 = web.client.get(f"/api/v1/meters/{web.ids['m2']}/raw", headers=web.auth("vera")).json()
    assert [(r["id"], [p["value"] for p in r["parsed"]]) for r in m2] == [(web.ids["raw_json"], ["000042.000"])]


def test_text_frame_with_control_bytes_gets_a_readable_view(web: Web) -> None:
    """An IEC 62056-21 block forwarded transparently: STX/ETX/BCC make it non-text, but it is readable."""
    bcc = 0
    for byte in IEC_BLOCK[1:-1].encode():  # BCC = XOR from after STX up to and including ETX (IEC 62056-21)
        bcc ^= byte
    frame = IEC_BLOCK[:-1].encode() + bytes([bcc])
    with web.engine.begin() as conn:
        raw_id = conn.execute(insert(raw_messages).values(
            dedup_key="ELM55550001|transparent|t-1|0", received_at=NOW, topic="mass/device/ABC/MDM0001/to_server",
            device_flag="ABC", device_serial="MDM0001", function="transparent", payload=frame, status="ok",
        )).inserted_primary_key[0]
        conn.execute(insert(readings).values(raw_id=raw_id, meter_id=web.ids["m3"], obis="1.8.0", value="015214.234",
                                             unit="kWh", read_at=NOW))
    raw = web.client.get(f"/api/v1/meters/{web.ids['m3']}/raw", headers=web.auth("vera")).json()
    assert len(raw) == 1 and raw[0]["encoding"] == "hex" and bytes.fromhex(raw[0]["payload"]) == frame
    ascii_names = {0x02: "<STX>", 0x03: "<ETX>"}  # ISO 646 / ASCII control character names
    expected = "".join(ascii_names.get(ord(c), c) for c in IEC_BLOCK[:-1])
    assert 32 <= bcc < 127  # this block's BCC happens to be printable ('>'), so it shows as itself
    expected += chr(bcc)
    assert raw[0]["readable"] == expected
    assert ui_login(web, "vera").status_code == 303
    page = web.client.get(f"/meters/{web.ids['m3']}").text
    assert "&lt;STX&gt;F.F(00)" in page and "1.8.0(015214.234*kWh)" in page  # the readable view ...
    assert frame.hex() in page  # ... and the exact bytes in hex


def test_orders_roles_and_status(web: Web) -> None:
    before = web.security_records()
    body = {"kind": "read", "meter": web.ids["m1"]}
    res = web.client.post("/api/v1/orders", json=body, headers=web.auth("vera"))
    assert res.status_code == 403  # viewers read, they do not order (HES-60)
    assert web.security_records() == before + 1

    operator = web.auth("oscar")
    res = web.client.post("/api/v1/orders", json=body, headers=operator)
    assert res.status_code == 201
    order_id = res.json()["id"]
    assert res.json() == {"id": order_id, "status": "pending", "existing": False}
    again = web.client.post("/api/v1/orders", json=body, headers=web.auth("ada"))  # admin may order too
    # same open work: the same order, with 200 instead of 201 since nothing new was queued (HES-12, issue 8)
    assert again.status_code == 200 and again.json() == {"id": order_id, "status": "pending", "existing": True}

    status = web.client.get(f"/api/v1/orders/{order_id}", headers=web.auth("vera")).json()
    assert (status["id"], status["kind"], status["status"], status["meter"]) == (order_id, "read", "pending",
                                                                                web.ids["m1"])
    assert status["finished_at"] is None and status["result"] is None and status["error"] is None
    assert status["created_by"] == "oscar"

    # a dispatcher claims and finishes it; the API shows the outcome
    with web.engine.begin() as conn:
        claimed = claim_next(conn, timeout_s=30)
        assert claimed is not None and claimed["id"] == order_id
    assert web.client.get(f"/api/v1/orders/{order_id}", headers=operator).json()["status"] == "running"
    with web.engine.begin() as conn:
        finish(conn, claimed["reference_id"], succeeded=True, result={"values": 2})
    done = web.client.get(f"/api/v1/orders/{order_id}", headers=operator).json()
    assert done["status"] == "succeeded" and done["result"] == {"values": 2} and done["finished_at"] is not None

    bad = web.client.post("/api/v1/orders", json={"kind": "read", "meter": 999999}, headers=operator)
    assert bad.status_code == 400 and bad.json() == {"detail": "meter 999999 does not exist"}
    no_modem = web.client.post("/api/v1/orders", json={"kind": "read", "meter": web.ids["m3"]}, headers=operator)
    assert no_modem.status_code == 400 and "has no modem" in no_modem.json()["detail"]
    kind = web.client.post("/api/v1/orders", json={"kind": "explode", "meter": web.ids["m1"]}, headers=operator)
    assert kind.status_code == 422  # OrderCreate.kind is one of the order kinds (issue 7)
    assert web.client.get("/api/v1/orders/999999", headers=operator).status_code == 404
    assert web.client.post("/api/v1/orders", json={"meter": "x"}, headers=operator).status_code == 422
    assert web.client.post("/api/v1/orders", json={"kind": "read", "meter": 2**40}, headers=operator).status_code == 422
    assert web.client.get(f"/api/v1/orders/{2**40}", headers=operator).status_code == 422


# ------------------------------------------------------------------------------------------------ UI


def _csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


def ui_login(web: Web, username: str, password: str = PASSWORD, next_path: str = "/meters") -> Any:
    form = web.client.get("/login")
    assert form.status_code == 200
    return web.client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": _csrf_from(form.text), "next": next_path})


def test_ui_login_session_cookie_and_logout(web: Web) -> None:
    res = web.client.get("/meters?q=4000")
    assert res.status_code == 303 and res.headers["location"] == "/login?next=%2Fmeters%3Fq%3D4000"

    bad = ui_login(web, "vera", "Wrong-password-1")
    assert bad.status_code == 401 and "Wrong user name or password." in bad.text
    no_csrf = web.client.post("/login", data={"username": "vera", "password": PASSWORD, "csrf_token": "forged"})
    assert no_csrf.status_code == 400 and "osos_session" not in no_csrf.headers.get("set-cookie", "")

    ok = ui_login(web, "vera", next_path="/meters?q=4000")
    assert ok.status_code == 303 and ok.headers["location"] == "/meters?q=4000"
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("osos_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert ui_login(web, "vera", next_path="//evil.example/").headers["location"] == "/meters"  # no open redirect

    page = web.client.get("/meters")
    assert page.status_code == 200 and "vera" in page.text
    logout_csrf = _csrf_from(page.text)
    assert web.client.post("/logout", data={"csrf_token": "nope"}).status_code == 403
    out = web.client.post("/logout", data={"csrf_token": logout_csrf})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    web.client.cookies.clear()
    assert web.client.get("/meters").status_code == 303


def test_ui_pages_search_meter_page_and_language(web: Web) -> None:
    assert ui_login(web, "vera").status_code == 303
    modems_page = web.client.get("/modems")
    assert modems_page.status_code == 200 and "ABCMDM0001" in modems_page.text and "online" in modems_page.text
    modem_page = web.client.get(f"/modems/{web.ids['modem_on']}")
    assert modem_page.status_code == 200 and "Meters behind this modem (2)" in modem_page.text
    assert "12345678" in modem_page.text and "87654321" in modem_page.text and "55550001" not in modem_page.text
    assert web.client.get("/modems/999999").status_code == 404

    for q, present, absent in (("yilmaz", "12345678", "87654321"), ("4000456", "87654321", "12345678"),
                               ("3456", "12345678", "55550001")):
        page = web.client.get("/meters", params={"q": q})
        assert page.status_code == 200
        assert present in page.text and absent not in page.text, q

    page = web.client.get(f"/meters/{web.ids['m1']}")
    assert page.status_code == 200
    html = page.text
    assert "015214.234" in html and "010000.100" in html  # the OBIS grid, digits as read
    assert describe("1.8.0", "en")[0] in html  # names from the OBIS table next to the codes
    assert "Raw and parsed data" in html and "Raw (as received)" in html and "Parsed" in html
    assert RAW_BINARY.hex() in html  # the binary message shown as hex ...
    assert str(escape(RAW_JSON)) in html  # ... and the JSON message as text, whole (HTML-escaped)
    assert 'id="read-now"' not in html and "may view this meter but not start a reading" in html  # viewer
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no CDN, no plug-in: all assets are ours
    assert not re.search(r"<script>|<script [^>]*>[^<]", html) and "style=" not in html  # nothing inline ...
    csp = page.headers["content-security-policy"]  # ... so the strict policy holds
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "000042.000" not in html  # meter 2's value from the shared message is not shown as meter 1's
    fragment = web.client.get(f"/meters/{web.ids['m1']}/fragments/data")
    assert fragment.status_code == 200 and "015214.234" in fragment.text and "<html" not in fragment.text

    switch = web.client.get("/lang/tr", params={"next": f"/meters/{web.ids['m1']}"})
    assert switch.status_code == 303 and switch.headers["location"] == f"/meters/{web.ids['m1']}"
    tr = web.client.get(f"/meters/{web.ids['m1']}")
    assert '<html lang="tr">' in tr.text
    for text in ("Sayaçlar", "Modemler", "Ham ve çözümlenmiş veri", "Son endeks değerleri", "Çıkış yap",
                 "monofaze elektrik"):
        assert text in tr.text, text
    assert "Raw and parsed data" not in tr.text
    assert describe("1.8.0", "tr")[0] in tr.text  # register names in Turkish too
    assert web.client.get("/lang/de").status_code == 404
    web.client.get("/lang/en")
    assert "Raw and parsed data" in web.client.get(f"/meters/{web.ids['m1']}").text

    orders_page = web.client.get("/orders")
    assert orders_page.status_code == 200 and "No orders yet." in orders_page.text


def test_ui_lists_say_when_they_are_cut(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("osos.web.ui.routes.PAGE_ROWS", 2)  # three meters in the seed
    assert ui_login(web, "vera").status_code == 303
    cut = web.client.get("/meters").text
    assert "Only the first 2 rows are shown" in cut and cut.count('<a href="/meters/') == 2
    assert "Only the first" not in web.client.get("/meters", params={"q": "4000456"}).text


def test_ui_read_now_posts_order_with_csrf(web: Web) -> None:
    assert ui_login(web, "oscar").status_code == 303
    page = web.client.get(f"/meters/{web.ids['m1']}")
    assert 'id="read-now"' in page.text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)
    body = {"kind": "read", "meter": web.ids["m1"]}
    assert web.client.post("/api/v1/orders", json=body).status_code == 403  # cookie without CSRF header
    assert web.client.post("/api/v1/orders", json=body, headers={"X-CSRF-Token": "0" * 40}).status_code == 403
    res = web.client.post("/api/v1/orders", json=body, headers={"X-CSRF-Token": token})
    assert res.status_code == 201 and res.json()["status"] == "pending"
    order = web.client.get(f"/api/v1/orders/{res.json()['id']}").json()  # polling with the cookie
    assert order["status"] == "pending" and order["created_by"] == "oscar"
    assert order["source"] == "ui"  # the web UI's session, not a bearer token (issue 8)
    listing = web.client.get("/orders").text
    assert "MKL12345678" in listing and "pending" in listing


def test_ui_error_pages_are_clear_and_traceless(web: Web) -> None:
    assert ui_login(web, "vera").status_code == 303
    missing = web.client.get("/meters/999999")
    assert missing.status_code == 404 and "Not found." in missing.text and "meter 999999 does not exist" in missing.text
    wrong = web.client.get("/meters/not-a-number")
    assert wrong.status_code == 400 and "<html" in wrong.text
    assert web.client.get("/meters/99999999999999999999").status_code == 400  # not a 500 from PostgreSQL
    nowhere = web.client.get("/no/such/page")
    assert nowhere.status_code == 404 and "<html" in nowhere.text
    for res in (missing, wrong, nowhere):
        assert "Traceback" not in res.text


def test_internal_error_shows_no_stack_trace(tmp_path) -> None:
    """An unmigrated database makes every query fail: the answer is a short error, never a trace."""
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    settings = Settings(data_dir=tmp_path / "data")
    token, _ = issue_token(settings.secret_key(), "ada", "admin", uid=1, gen=0, ttl_s=600, now=datetime.now(UTC))
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        api = client.get("/api/v1/meters", headers={"Authorization": f"Bearer {token}"})
        assert api.status_code == 500 and api.json() == {"detail": "internal error; it has been logged"}
        client.cookies.set("osos_session", token)
        page = client.get("/meters")
        assert page.status_code == 500 and "<html" in page.text
        assert "Traceback" not in page.text and "OperationalError" not in page.text
    engine.dispose()
