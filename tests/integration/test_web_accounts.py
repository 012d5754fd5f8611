"""Accounts at the trust boundary (issue 7): client address only from trusted proxies, server-side logout and token
generations, user administration over the API with audit, request body limit, counted security rejections.

The throttling and body-limit tests run the app under real uvicorn exactly as ``osos serve`` does
(``osos.cli.server._run_web``), because that is where X-Forwarded-For used to be trusted and where bodies stream.

covers HES-6, HES-14, HES-56, HES-59, HES-60
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from osos.auth import create_user, hash_password
from osos.cli.server import _run_web
from osos.config import Settings, parse_networks
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, revoked_tokens, users
from osos.web.app import create_app

ADMIN_PW = "Quartz-lantern-ferry-81"
OPER_PW = "Walnut-tundra-mural-62"
VIEW_PW = "Cobalt-thistle-saddle-35"
NOW = datetime.now(UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: Any, username: str, password: str, **kw: Any) -> httpx.Response:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password}, **kw)


def token_of(client: Any, username: str, password: str) -> str:
    res = login(client, username, password)
    assert res.status_code == 200, res.text
    return str(res.json()["access_token"])


def seed_users(engine: Engine) -> dict[str, int]:
    with engine.begin() as conn:
        return {name: create_user(conn, name, pw, role, now=NOW) for name, pw, role in
                (("ada", ADMIN_PW, "admin"), ("oscar", OPER_PW, "operator"), ("vera", VIEW_PW, "viewer"))}


def security_rows(engine: Engine, message_like: str = "%") -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(log_records).where(
            log_records.c.category == "security", log_records.c.message.like(message_like)).order_by(log_records.c.id)))


def user_log(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r.detail, message=r.message) for r in conn.execute(
            select(log_records).where(log_records.c.category == "user").order_by(log_records.c.id))]


@dataclass
class App:
    client: TestClient
    engine: Engine
    ids: dict[str, int]


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[App]:
    engine = make_engine(db_url)
    migrate(engine)
    ids = seed_users(engine)
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    with TestClient(create_app(settings, engine), follow_redirects=False) as client:
        yield App(client, engine, ids)
    engine.dispose()


# ------------------------------------------------------------------------------------ real uvicorn (osos serve)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """The app under uvicorn in a thread, configured by ``_run_web`` like ``osos serve``."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=_run_web, args=(app, "127.0.0.1", self.port, self.stop), daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture
def served_sqlite(tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    engine = make_engine(settings.db_url)
    migrate(engine)
    seed_users(engine)
    yield settings, engine
    engine.dispose()


def test_forwarded_for_does_not_bypass_login_throttling(served_sqlite: tuple[Settings, Engine]) -> None:
    """No trusted proxy: five failures under five forged X-Forwarded-For addresses are one client's failures."""
    settings, engine = served_sqlite
    with Served(create_app(settings, engine)) as http:
        for i in range(5):
            res = login(http, "oscar", "Wrong-password-42", headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
            assert res.status_code == 401
        res = login(http, "oscar", OPER_PW, headers={"X-Forwarded-For": "203.0.113.99"})
        assert res.status_code == 429
    clients = {r.detail["client"] for r in security_rows(engine, "failed login")}
    assert clients == {"127.0.0.1"}  # the TCP peer, not any of the forged addresses


def test_forwarded_for_decides_behind_a_trusted_proxy(served_sqlite: tuple[Settings, Engine]) -> None:
    """The peer (127.0.0.1) is configured as a proxy: the address it forwards is the client; an address the
    client prepended itself is ignored (the chain is read from the proxy's end)."""
    settings, engine = served_sqlite
    settings = Settings(data_dir=settings.data_dir, trusted_proxies=parse_networks("10.9.0.0/16, 127.0.0.1"))
    with Served(create_app(settings, engine)) as http:
        for _ in range(5):
            # the client sent "X-Forwarded-For: 198.51.100.1", the proxy appended the real address
            res = login(http, "oscar", "Wrong-password-42", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.5"})
            assert res.status_code == 401
        assert login(http, "oscar", OPER_PW, headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
        # another client behind the same proxy (and a second trusted proxy hop) is not throttled
        res = login(http, "oscar", OPER_PW, headers={"X-Forwarded-For": "203.0.113.6, 10.9.4.4"})
        assert res.status_code == 200
    clients = {r.detail["client"] for r in security_rows(engine, "failed login")}
    assert clients == {"203.0.113.5"}


class CountBytes:
    """Outermost ASGI wrapper: counts the body bytes the server handed to the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


FIFTY_MB = 50 * 1024 * 1024


def big_json_chunks(sent: list[int], chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A 50 MB JSON document, streamed: ``{"username": "aaaa...", "password": "x"}``."""
    head, tail = b'{"username": "', b'", "password": "x"}'
    yield head
    sent[0] += len(head)
    left = FIFTY_MB - len(head) - len(tail)
    while left > 0:
        n = min(chunk, left)
        left -= n
        sent[0] += n
        yield b"a" * n
    yield tail


def test_oversized_bodies_are_refused_before_being_read(served_sqlite: tuple[Settings, Engine]) -> None:
    settings, engine = served_sqlite
    assert settings.max_body_bytes == 1024 * 1024  # default 1 MiB
    counter = CountBytes(create_app(settings, engine))
    with Served(counter) as http:
        # declared length: refused from the header, not one body byte read
        sent = [0]
        res = http.post("/api/v1/auth/token", content=big_json_chunks(sent),
                        headers={"Content-Type": "application/json", "Content-Length": str(FIFTY_MB)})
        assert res.status_code == 413 and res.json() == {"detail": "request body larger than 1048576 bytes"}
        assert counter.received == 0

        # chunked (no length): counted while it streams, stopped at the limit
        counter.received = 0
        sent = [0]
        res = http.post("/api/v1/auth/token", content=big_json_chunks(sent),
                        headers={"Content-Type": "application/json"})
        assert res.status_code == 413
        assert 1024 * 1024 < counter.received <= 1024 * 1024 + 256 * 1024, counter.received
        assert counter.received < FIFTY_MB // 10

        # UI forms too, and a body under the limit still works
        res = http.post("/login", content=b"username=" + b"a" * (2 * 1024 * 1024),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert res.status_code == 413
        assert login(http, "vera", VIEW_PW).status_code == 200


def test_body_limit_is_configurable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'osos.db'}")
    migrate(engine)
    settings = Settings(data_dir=tmp_path / "data", max_body_bytes=100)
    with TestClient(create_app(settings, engine)) as client:
        res = client.post("/api/v1/auth/token", json={"username": "x" * 60, "password": "y" * 60})
        assert res.status_code == 413
        assert client.post("/api/v1/auth/token", json={"username": "x", "password": "y"}).status_code == 401
    engine.dispose()


# --------------------------------------------------------------------------------------------- tokens, logout


def test_logout_revokes_the_token_server_side(app: App) -> None:
    token = token_of(app.client, "vera", VIEW_PW)
    assert app.client.get("/api/v1/meters", headers=bearer(token)).status_code == 200
    assert app.client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 204
    res = app.client.get("/api/v1/meters", headers=bearer(token))
    assert res.status_code == 401 and res.json() == {"detail": "token revoked; log in again"}
    assert app.client.post("/api/v1/auth/logout", headers=bearer(token)).status_code == 401
    with app.engine.connect() as conn:
        rows = conn.execute(select(revoked_tokens)).all()
    assert len(rows) == 1 and rows[0].user_id == app.ids["vera"]
    other = token_of(app.client, "vera", VIEW_PW)  # a new login works
    assert app.client.get("/api/v1/meters", headers=bearer(other)).status_code == 200


def test_ui_logout_revokes_the_session_token(app: App) -> None:
    form = app.client.get("/login")
    csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    res = app.client.post("/login", data={"username": "oscar", "password": OPER_PW, "csrf_token": csrf})
    assert res.status_code == 303
    session = app.client.cookies.get("osos_session")
    assert session
    page = app.client.get("/meters")
    csrf_session = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert app.client.post("/logout", data={"csrf_token": csrf_session}).status_code == 303
    # a copy of the cookie (stolen, or kept by a shared browser) is dead, as a bearer token too
    assert app.client.get("/api/v1/meters", headers=bearer(session)).status_code == 401
    app.client.cookies.set("osos_session", session)
    assert app.client.get("/meters").status_code == 303  # back to the login page


def test_password_change_disable_and_delete_end_tokens(app: App) -> None:
    admin = bearer(token_of(app.client, "ada", ADMIN_PW))
    oscar = token_of(app.client, "oscar", OPER_PW)
    res = app.client.post(f"/api/v1/users/{app.ids['oscar']}/password", json={"password": "Meadow-pebble-violet-9"},
                          headers=admin)
    assert res.status_code == 200 and res.json() == {"password": None}
    res = app.client.get("/api/v1/meters", headers=bearer(oscar))
    assert res.status_code == 401 and res.json() == {"detail": "token no longer valid; log in again"}
    assert login(app.client, "oscar", OPER_PW).status_code == 401
    oscar = token_of(app.client, "oscar", "Meadow-pebble-violet-9")

    assert app.client.patch(f"/api/v1/users/{app.ids['oscar']}", json={"disabled": True}, headers=admin).json()[
        "disabled"] is True
    assert app.client.get("/api/v1/meters", headers=bearer(oscar)).status_code == 401
    assert app.client.patch(f"/api/v1/users/{app.ids['oscar']}", json={"disabled": False}, headers=admin).status_code \
        == 200
    assert app.client.get("/api/v1/meters", headers=bearer(oscar)).status_code == 401  # enabling revives nothing
    assert app.client.get("/api/v1/meters", headers=bearer(token_of(app.client, "oscar", "Meadow-pebble-violet-9"))) \
        .status_code == 200


def test_a_deleted_users_token_never_works_for_a_new_user_of_that_name(app: App) -> None:
    admin = bearer(token_of(app.client, "ada", ADMIN_PW))
    res = app.client.post("/api/v1/users", headers=admin,
                          json={"username": "temp", "role": "admin", "password": "Ferry-quartz-lamp-44"})
    assert res.status_code == 201
    old_id = res.json()["id"]
    old = token_of(app.client, "temp", "Ferry-quartz-lamp-44")
    assert app.client.delete(f"/api/v1/users/{old_id}", headers=admin).status_code == 204
    assert app.client.get("/api/v1/meters", headers=bearer(old)).status_code == 401
    res = app.client.post("/api/v1/users", headers=admin,
                          json={"username": "temp", "role": "admin", "password": "Orbit-candle-rain-73"})
    assert res.status_code == 201
    if app.engine.dialect.name == "sqlite":
        assert res.json()["id"] == old_id  # SQLite hands the deleted row's id out again: name AND id match
    res = app.client.get("/api/v1/meters", headers=bearer(old))
    assert res.status_code == 401
    assert app.client.get("/api/v1/users", headers=bearer(old)).status_code == 401


# ---------------------------------------------------------------------------------------------- users API


def test_users_api_manages_accounts_with_audit(app: App) -> None:
    admin = bearer(token_of(app.client, "ada", ADMIN_PW))
    listed = app.client.get("/api/v1/users", headers=admin).json()
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("ada", "admin", False), ("oscar", "operator", False), ("vera", "viewer", False)]
    assert all("password_hash" not in u and "token_generation" not in u for u in listed)

    res = app.client.post("/api/v1/users", json={"username": "nina", "role": "operator"}, headers=admin)
    assert res.status_code == 201
    generated = res.json()["password"]
    assert len(generated) >= 24
    nina = res.json()["id"]
    assert login(app.client, "nina", generated).status_code == 200

    res = app.client.patch(f"/api/v1/users/{nina}", json={"role": "viewer"}, headers=admin)
    assert res.status_code == 200 and res.json()["role"] == "viewer"
    res = app.client.post(f"/api/v1/users/{nina}/password", json={}, headers=admin)
    new_password = res.json()["password"]
    assert res.status_code == 200 and new_password and new_password != generated
    assert login(app.client, "nina", new_password).status_code == 200
    assert app.client.delete(f"/api/v1/users/{nina}", headers=admin).status_code == 204
    assert app.client.delete(f"/api/v1/users/{nina}", headers=admin).status_code == 404

    # refused input: weak password, duplicate name, unknown role
    weak = app.client.post("/api/v1/users", json={"username": "pat", "role": "viewer", "password": "Summer2026!!"},
                           headers=admin)
    assert weak.status_code == 400 and "common password" in weak.json()["detail"]
    assert app.client.post("/api/v1/users", json={"username": "vera", "role": "viewer"}, headers=admin).status_code \
        == 409
    assert app.client.post("/api/v1/users", json={"username": "pat", "role": "root"}, headers=admin).status_code == 422

    log = user_log(app.engine)
    changes = [(e["actor"], e["target"], e["change"]) for e in log]
    assert changes == [
        ("system", "ada", "created"), ("system", "oscar", "created"), ("system", "vera", "created"),
        ("ada", "nina", "created"), ("ada", "nina", "set role"), ("ada", "nina", "reset password"),
        ("ada", "nina", "deleted"),
    ]
    assert log[4]["from"] == "operator" and log[4]["to"] == "viewer"
    for entry in log:  # never a password or its hash
        text = repr(entry)
        assert generated not in text and new_password not in text and "scrypt$" not in text


def test_the_last_enabled_admin_stays(app: App) -> None:
    admin = bearer(token_of(app.client, "ada", ADMIN_PW))
    ada = app.ids["ada"]
    for method, url, body in (("PATCH", f"/api/v1/users/{ada}", {"disabled": True}),
                              ("PATCH", f"/api/v1/users/{ada}", {"role": "operator"}),
                              ("DELETE", f"/api/v1/users/{ada}", None)):
        res = app.client.request(method, url, json=body, headers=admin)
        assert res.status_code == 409, (method, body)
        assert "last enabled admin" in res.json()["detail"]
    # with a second admin, the first may go; a disabled admin does not count
    app.client.patch(f"/api/v1/users/{app.ids['oscar']}", json={"role": "admin"}, headers=admin)
    app.client.patch(f"/api/v1/users/{app.ids['oscar']}", json={"disabled": True}, headers=admin)
    assert app.client.patch(f"/api/v1/users/{ada}", json={"role": "viewer"}, headers=admin).status_code == 409
    app.client.patch(f"/api/v1/users/{app.ids['oscar']}", json={"disabled": False}, headers=admin)
    assert app.client.patch(f"/api/v1/users/{ada}", json={"role": "viewer"}, headers=admin).status_code == 200
    with app.engine.connect() as conn:
        roles = dict(conn.execute(select(users.c.username, users.c.role)).all())
    assert roles == {"ada": "viewer", "oscar": "admin", "vera": "viewer"}


def test_users_api_needs_user_manage(app: App) -> None:
    for name, pw in (("vera", VIEW_PW), ("oscar", OPER_PW)):
        h = bearer(token_of(app.client, name, pw))
        assert app.client.get("/api/v1/users", headers=h).status_code == 403
        assert app.client.post("/api/v1/users", json={"username": "x", "role": "admin"}, headers=h).status_code == 403
        assert app.client.patch(f"/api/v1/users/{app.ids['ada']}", json={"disabled": True}, headers=h).status_code \
            == 403
        assert app.client.delete(f"/api/v1/users/{app.ids['ada']}", headers=h).status_code == 403
        assert app.client.post(f"/api/v1/users/{app.ids[name]}/password", json={}, headers=h).status_code == 403
    assert app.client.get("/api/v1/users").status_code == 401
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 3
    assert [e["change"] for e in user_log(app.engine)] == ["created"] * 3  # nothing changed


# ------------------------------------------------------------------------------- counted security rejections


def test_bogus_tokens_are_counted_not_written_one_by_one(db_url: str, tmp_path: Path) -> None:
    """HES-59 without a storage flood: 1,000 bogus bearer tokens from one client make a handful of security rows
    whose counts add up to 1,000; failed logins stay one row each."""
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(users.insert().values(username="vera", password_hash=hash_password(VIEW_PW), role="viewer",
                                           disabled=False, created_at=NOW))
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url)
    with TestClient(create_app(settings, engine)) as client:
        for i in range(1000):
            res = client.get("/api/v1/meters", headers=bearer(f"bogus.{i}"))
            assert res.status_code == 401
        during = security_rows(engine)
        assert len(during) <= 2
        for _ in range(3):
            assert login(client, "vera", "Wrong-password-42").status_code == 401
        with TestClient(client.app, client=("192.0.2.9", 4000)) as other:
            for _ in range(10):
                assert other.get("/api/v1/meters", headers=bearer("x.y")).status_code == 401
    # the app has stopped: every count is written
    rows = security_rows(engine, "%rejected token%")
    by_client: dict[str, int] = {}
    for r in rows:
        by_client[r.detail["client"]] = by_client.get(r.detail["client"], 0) + r.detail["count"]
        assert r.message == f"{r.detail['count']} rejected token{'s' if r.detail['count'] != 1 else ''} from " \
                            f"{r.detail['client']}"
        assert set(r.detail["reasons"]) <= {"invalid token signature", "malformed token"}
    assert by_client == {"testclient": 1000, "192.0.2.9": 10}
    assert len(rows) <= 6
    assert len(security_rows(engine, "failed login")) == 3
    engine.dispose()
