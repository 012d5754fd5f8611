"""Shared fixtures: the real PostgreSQL of this machine and a private Mosquitto per run (the machine's binary,
started like the demo's), one database and one topic prefix per test so tests never collide. Under CI (CI=true) a
missing service fails."""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_URL = os.environ.get("OSOS_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
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


# Gateways in the integration tests connect over TLS by default, so the topics their tests observe stay the bare
# ones the assertions name; tests about plain sessions (the plain/ mount, HES-54) and the MASS reference simulator
# (no TLS option) use the plain listener.
DEVICE_TLS = True


class RunBroker:
    """The test run's private Mosquitto (started by ``osos.headend.broker``, the demo's code path): dynamic
    security with no anonymous access, a plain listener mounted at ``plain/`` and a TLS listener (test CA from
    ``osos.headend.tlsgen``). Tests get accounts through it, never an open broker."""

    def __init__(self, local, admin) -> None:  # type: ignore[no-untyped-def]
        self.local = local
        self.admin = admin
        self.host: str = local.host
        self.plain_port: int = local.plain_port
        self.tls_port: int = local.tls_port
        self.ca = local.ca
        self.headend_username = "osos-headend"
        self.headend_password = secrets.token_urlsafe(24)
        self._tap_password = secrets.token_urlsafe(24)
        self._roots: set[str] = set()

    def headend_role_for(self, root: str) -> None:
        """The head-end's account, with its role covering this topic root (each test has its own root)."""
        if root not in self._roots:
            from osos.protocols import mass

            self.admin.ensure_headend(mass.Topics(root), self.headend_username, self.headend_password)
            self._roots.add(root)

    def device(self, root: str, flag: str, serial: str, legacy: bool = False,  # type: ignore[no-untyped-def]
               client_id: str | None = None):
        """Broker account and role for one device (no inventory row; see the ``provision`` fixture)."""
        from osos.protocols import mass

        return self.admin.add_device(mass.Topics(root), mass.Device(flag, serial), legacy=legacy, replace=True,
                                     client_id=client_id)

    def gateway_kwargs(self, creds, tls: bool = DEVICE_TLS) -> dict:  # type: ignore[no-untyped-def]
        """GatewayConfig broker fields for a device account."""
        return {
            "broker_host": self.host,
            "broker_port": self.tls_port if tls else self.plain_port,
            "broker_username": creds.username,
            "broker_password": creds.password,
            "broker_tls": tls,
            "broker_ca": self.ca if tls else None,
        }

    def client(self, username: str | None, password: str | None, *, tls: bool, client_id: str = "",
               protocol: str = "v5"):  # type: ignore[no-untyped-def]
        """An unconnected paho client with these credentials (connect to ``port_for(tls)``)."""
        import paho.mqtt.client as mqtt

        kwargs: dict = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2, "client_id": client_id,
                        "protocol": mqtt.MQTTv5 if protocol == "v5" else mqtt.MQTTv311}
        client = mqtt.Client(**kwargs)
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set(ca_certs=str(self.ca))
        return client

    def port_for(self, tls: bool) -> int:
        return self.tls_port if tls else self.plain_port

    def headend_client(self, root: str, client_id: str = ""):  # type: ignore[no-untyped-def]
        """A paho client with the head-end's account over TLS, connected (a test standing in for the head-end)."""
        self.headend_role_for(root)
        client = self.client(self.headend_username, self.headend_password, tls=True, client_id=client_id)
        client.connect(self.host, self.tls_port)
        return client

    def tap_client(self, root: str, client_id: str = ""):  # type: ignore[no-untyped-def]
        """A test-only wiretap account that may read everything under this root (uplink and downlink, plain and
        mounted) and publish downlinks: for tests asserting what crosses the broker. Not a role OSOS issues."""
        if ("tap", root) not in self._roots:
            acls = [{"acltype": acltype, "topic": t, "priority": 0, "allow": True}
                    for acltype in ("subscribePattern", "publishClientReceive")
                    for t in (f"{root}/#", f"plain/{root}/#")]
            acls += [{"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True}
                     for t in (f"{root}/server/#", f"plain/{root}/server/#")]
            self.admin.run("createRole", ok_errors=("already exists",), rolename="test-tap")
            for acl in acls:
                self.admin.run("addRoleACL", ok_errors=("already exists",), rolename="test-tap", **acl)
            self.admin.run("createClient", ok_errors=("already exists",), username="test-tap",
                           password=self._tap_password, roles=[{"rolename": "test-tap"}])
            self._roots.add(("tap", root))  # type: ignore[arg-type]
        client = self.client("test-tap", self._tap_password, tls=True, client_id=client_id)
        client.connect(self.host, self.tls_port)
        return client

    @staticmethod
    def headend_filters(root: str) -> list[str]:
        from osos.protocols import mass

        topics = mass.Topics(root)
        return [*topics.uplink_filters, topics.emergency_filter]


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory) -> Iterator[RunBroker]:
    """The run's private Mosquitto with authentication on (HES-4, HES-52); under CI a missing binary fails."""
    from osos.headend.broker import dynsec_plugin, mosquitto_binary, start_mosquitto

    if mosquitto_binary() is None or dynsec_plugin() is None:
        _missing("the mosquitto binary with its dynamic-security plugin")
    local = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), tls=True, persistence=False)
    try:
        with local.admin() as admin:
            yield RunBroker(local, admin)
    finally:
        local.stop()


@pytest.fixture
def provision(mqtt_broker, topic_prefix):  # type: ignore[no-untyped-def]
    """``provision(engine, flag, serial, legacy=False) -> Credentials``: the inventory row and the broker account,
    as ``osos modem add`` makes them."""
    from osos.headend.provisioning import provision_modem
    from osos.protocols import mass
    from osos.store.db import utcnow

    def make(engine, flag: str, serial: str, legacy: bool = False):  # type: ignore[no-untyped-def]
        return provision_modem(engine, mqtt_broker.admin, mass.Topics(topic_prefix), flag, serial, legacy=legacy,
                               by="test", now=utcnow(), replace=True)

    return make


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
    """Start a head-end worker on the run's Mosquitto (its own account, over TLS) and a fresh PostgreSQL database
    (own topic root and client id); returns (headend, engine). Stopped and disposed after the test."""
    from osos.config import Settings
    from osos.headend.service import HeadEnd
    from osos.store.db import make_engine, migrate

    started: list = []

    def start(order_timeout_s: float = 20.0, time_sync_threshold_s: int = 300):
        mqtt_broker.headend_role_for(topic_prefix)
        settings = Settings(
            mqtt_host=mqtt_broker.host,
            mqtt_port=mqtt_broker.tls_port,
            mqtt_username=mqtt_broker.headend_username,
            mqtt_password=mqtt_broker.headend_password,
            mqtt_tls=True,
            mqtt_ca=mqtt_broker.ca,
            device_tls=True,
            topic_root=topic_prefix,
            database_url=pg_url,
            headend_id=f"he-{uuid.uuid4().hex[:8]}",
            order_timeout_s=order_timeout_s,
            time_sync_threshold_s=time_sync_threshold_s,
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


def iec_data_block(lines: list[str]) -> str:
    """An IEC 62056-21 data block with its BCC (XOR of every byte after STX up to and including ETX), built here
    from the standard's definition, independently of the codec under test."""
    from functools import reduce

    body = "".join(line + "\r\n" for line in lines) + "!\r\n\x03"
    return "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))


class FakeDevice:
    """A bare MQTT device written in the tests (not the project's gateway), with its own broker account, to drive
    the head-end exactly: it publishes envelopes and collects what arrives on its downlink."""

    def __init__(self, broker, creds, topics, device, tls: bool = True) -> None:  # type: ignore[no-untyped-def]
        import json
        import queue

        self.topics, self.device = topics, device
        self.inbox: queue.Queue[dict] = queue.Queue()
        self.client = broker.client(creds.username, creds.password, tls=tls,
                                    client_id=f"dev-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.inbox.put(json.loads(m.payload))
        self.client.connect(broker.host, broker.port_for(tls))
        self.client.subscribe(topics.downlink(device), qos=1)
        self.client.loop_start()

    def send(self, function: str, response: object, ref: str | None = None, emergency: bool = False) -> str:
        from osos.protocols import mass

        msg = mass.make(function, self.device, reference_id=ref, response=response)
        topic = self.topics.emergency(self.device) if emergency else self.topics.uplink(self.device)
        self.client.publish(topic, mass.encode(msg), qos=1).wait_for_publish(10)
        return msg["referenceId"]

    def expect(self, function: str, timeout: float = 15.0) -> dict:
        import queue
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg["function"] == function:
                return msg
        raise AssertionError(f"no {function} arrived on {self.topics.downlink(self.device)}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def fake_device(mqtt_broker):
    """``fake_device(creds, topics, mass.Device(...), tls=True)``: a FakeDevice on the run's broker, closed after
    the test."""
    made: list[FakeDevice] = []

    def make(creds, topics, device, tls: bool = True) -> FakeDevice:  # type: ignore[no-untyped-def]
        dev = FakeDevice(mqtt_broker, creds, topics, device, tls=tls)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


@pytest.fixture
def data_block():
    """The IEC 62056-21 data-block builder (:func:`iec_data_block`)."""
    return iec_data_block
