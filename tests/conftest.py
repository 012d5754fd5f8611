"""Shared fixtures: the real PostgreSQL and Mosquitto of this machine, one database and one
topic prefix per test run so runs never collide. Under CI (CI=true) a missing service fails."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("OSOS_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = os.environ.get("OSOS_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("OSOS_TEST_MQTT_PORT", "1883"))
RUN_ID = uuid.uuid4().hex[:10]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long soak/fuzz tests in full")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long run: use --run-slow (or the bench/ scripts)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI but is not reachable", pytrace=False)
    pytest.skip(f"{what} not reachable")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """(host, port) of the real Mosquitto."""
    if not _port_open(MQTT_HOST, MQTT_PORT):
        _missing(f"Mosquitto at {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def topic_prefix() -> str:
    """A topic root no other run uses."""
    return f"osostest/{RUN_ID}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    if not _port_open("127.0.0.1", 5432):
        _missing("PostgreSQL at 127.0.0.1:5432")
    name = f"osos_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'osos.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Run a test on both stores: the embedded SQLite and the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'osos.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def _wait_until(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def wait_until():
    """The polling helper for tests that wait on a real broker or database."""
    return _wait_until


@pytest.fixture
def start_headend(pg_url, mqtt_broker, topic_prefix):
    """Start a head-end worker on the real Mosquitto and a fresh PostgreSQL database (own topic root and client
    id); returns (headend, engine). Stopped and disposed after the test."""
    from osos.config import Settings
    from osos.headend.service import HeadEnd
    from osos.store.db import make_engine, migrate

    started: list = []

    def start(order_timeout_s: float = 20.0):
        host, port = mqtt_broker
        settings = Settings(
            mqtt_host=host,
            mqtt_port=port,
            topic_root=topic_prefix,
            database_url=pg_url,
            headend_id=f"he-{uuid.uuid4().hex[:8]}",
            order_timeout_s=order_timeout_s,
        )
        engine = make_engine(pg_url)
        migrate(engine)
        headend = HeadEnd(settings, engine)
        headend.start()
        started.append((headend, engine))
        return headend, engine

    yield start
    for headend, engine in started:
        headend.stop()
        engine.dispose()
