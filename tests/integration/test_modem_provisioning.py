"""Provisioning (issue 7: "`osos modem add FLAG SERIAL` (and API) creates a modem and prints its credentials once"):
the inventory row and the modem's own broker account together, against the run's real Mosquitto.

covers HES-4, HES-56, HES-60
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from osos.auth import create_user
from osos.cli.main import app
from osos.config import Settings
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import log_records, modems

pytestmark = pytest.mark.integration
USER_PASSWORD = "Provisioning-Test-4711"


def can_connect(broker, username: str, password: str) -> bool:  # type: ignore[no-untyped-def]
    """One real login over TLS: True when the broker answers CONNACK success."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=str(broker.ca))
    done, result = threading.Event(), []
    client.on_connect = lambda c, u, f, rc, p: (result.append(not rc.is_failure), done.set())
    client.on_disconnect = lambda *a: done.set()
    client.connect(broker.host, broker.tls_port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return bool(result and result[0])


@pytest.fixture
def env(mqtt_broker, topic_prefix, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "OSOS_DATA_DIR": str(tmp_path / "data"),
        "OSOS_MQTT_HOST": mqtt_broker.host,
        "OSOS_MQTT_PORT": str(mqtt_broker.tls_port),
        "OSOS_MQTT_CA": str(mqtt_broker.ca),
        "OSOS_TOPIC_ROOT": topic_prefix,
        "OSOS_BROKER_ADMIN_PASSWORD": mqtt_broker.local.admin_password,
    }


def _modem(tmp_path: Path, serial: str) -> dict[str, Any] | None:
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'osos.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(select(modems).where(modems.c.serial == serial)).mappings().first()
            return dict(row) if row else None
    finally:
        engine.dispose()


def test_modem_cli_add_disable_enable_rotate(env, mqtt_broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    added = runner.invoke(app, ["modem", "add", "OSS", "8000000001"], env=env)
    assert added.exit_code == 0, added.output
    password = re.search(r"password \(shown only now\): (\S+)", added.output).group(1)  # type: ignore[union-attr]
    assert "broker username: OSS8000000001" in added.output
    row = _modem(tmp_path, "8000000001")
    assert row is not None
    assert (row["flag"], row["status"], row["topic_style"], row["mqtt_username"]) == \
        ("OSS", "active", "device", "OSS8000000001")
    assert row["provisioned_at"] is not None and row["provisioned_by"].startswith("cli:")
    assert password not in repr(row)  # OSOS does not keep the password
    db_bytes = (tmp_path / "data" / "osos.db").read_bytes() + b"".join(
        p.read_bytes() for p in (tmp_path / "data").glob("osos.db-*"))
    assert password.encode() not in db_bytes
    assert can_connect(mqtt_broker, "OSS8000000001", password)

    again = runner.invoke(app, ["modem", "add", "OSS", "8000000001"], env=env)
    assert again.exit_code == 1 and "already provisioned" in again.output
    bad = runner.invoke(app, ["modem", "add", "OS#", "1"], env=env)
    assert bad.exit_code == 1 and "flag must be 3 letters" in bad.output

    disabled = runner.invoke(app, ["modem", "disable", "OSS", "8000000001"], env=env)
    assert disabled.exit_code == 0, disabled.output
    assert _modem(tmp_path, "8000000001")["status"] == "disabled"  # type: ignore[index]
    assert not can_connect(mqtt_broker, "OSS8000000001", password)
    listed = runner.invoke(app, ["modem", "list"], env=env)
    assert re.search(r"OSS8000000001\s+disabled\s+device", listed.output), listed.output

    enabled = runner.invoke(app, ["modem", "enable", "OSS", "8000000001"], env=env)
    assert enabled.exit_code == 0, enabled.output
    assert can_connect(mqtt_broker, "OSS8000000001", password)

    rotated = runner.invoke(app, ["modem", "rotate-password", "OSS", "8000000001"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = re.search(r"password \(shown only now\): (\S+)", rotated.output).group(1)  # type: ignore[union-attr]
    assert new != password
    assert not can_connect(mqtt_broker, "OSS8000000001", password)
    assert can_connect(mqtt_broker, "OSS8000000001", new)

    legacy = runner.invoke(app, ["modem", "add", "XYZ", "8000000002", "--legacy"], env=env)
    assert legacy.exit_code == 0, legacy.output
    assert _modem(tmp_path, "8000000002")["topic_style"] == "legacy"  # type: ignore[index]

    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'osos.db'}")
    with engine.connect() as conn:
        audit = [r.message for r in conn.execute(select(log_records.c.message)
                                                  .where(log_records.c.category == "security"))]
    engine.dispose()
    assert audit == ["modem OSS8000000001 provisioned", "modem OSS8000000001 disabled",
                     "modem OSS8000000001 enabled", "modem OSS8000000001 broker password rotated",
                     "modem XYZ8000000002 provisioned (legacy topics)"]


def test_modem_cli_without_a_reachable_admin_account_fails_cleanly(env) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, ["modem", "add", "OSS", "8000000003"],
                                env={**env, "OSOS_BROKER_ADMIN_PASSWORD": "wrong"})
    assert result.exit_code == 1
    assert "refused the admin login" in result.output


@pytest.fixture
def api(mqtt_broker, topic_prefix, tmp_path):  # type: ignore[no-untyped-def]
    from osos.web.app import create_app

    settings = Settings(data_dir=tmp_path / "web", topic_root=topic_prefix, mqtt_host=mqtt_broker.host,
                        mqtt_port=mqtt_broker.tls_port, mqtt_tls=True, mqtt_ca=mqtt_broker.ca,
                        broker_admin_password=mqtt_broker.local.admin_password)
    engine = make_engine(settings.db_url)
    migrate(engine)
    with engine.begin() as conn:
        for name, role in (("root", "admin"), ("op", "operator")):
            create_user(conn, name, USER_PASSWORD, role=role, now=utcnow())
    client = TestClient(create_app(settings, engine))

    def login(name: str) -> dict[str, str]:
        token = client.post("/api/v1/auth/token", json={"username": name, "password": USER_PASSWORD}).json()
        return {"Authorization": f"Bearer {token['access_token']}"}

    yield client, login, engine
    engine.dispose()


def test_api_provisions_a_modem_once_with_permission(api, mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    client, login, engine = api
    admin, operator = login("root"), login("op")
    refused = client.post("/api/v1/modems", json={"flag": "OSS", "serial": "8100000001"}, headers=operator)
    assert refused.status_code == 403
    made = client.post("/api/v1/modems", json={"flag": "OSS", "serial": "8100000001"}, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["username"] == "OSS8100000001" and len(body["password"]) >= 32
    assert made.headers["cache-control"] == "no-store"
    assert can_connect(mqtt_broker, body["username"], body["password"])
    listed = client.get("/api/v1/modems", headers=admin).json()
    assert [m["serial"] for m in listed] == ["8100000001"]
    assert "password" not in listed[0]
    assert client.post("/api/v1/modems", json={"flag": "OSS", "serial": "8100000001"},
                       headers=admin).status_code == 409
    assert client.post("/api/v1/modems", json={"flag": "OSS", "serial": "a/+"}, headers=admin).status_code == 422

    off = client.post(f"/api/v1/modems/{body['id']}/disable", headers=admin)
    assert off.json() == {"id": body["id"], "status": "disabled"}
    assert not can_connect(mqtt_broker, body["username"], body["password"])
    assert client.post(f"/api/v1/modems/{body['id']}/enable", headers=operator).status_code == 403
    assert client.post(f"/api/v1/modems/{body['id']}/enable", headers=admin).json()["status"] == "active"
    new = client.post(f"/api/v1/modems/{body['id']}/rotate-password", headers=admin).json()["password"]
    assert can_connect(mqtt_broker, body["username"], new)
    assert not can_connect(mqtt_broker, body["username"], body["password"])
    with engine.connect() as conn:
        row = conn.execute(select(modems)).mappings().one()
    assert (row["status"], row["provisioned_by"]) == ("active", "root")
