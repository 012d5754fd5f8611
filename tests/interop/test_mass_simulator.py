"""Interoperability with a device no one here wrote: the public MASS v0.2 reference simulator
(github erdem-aydemir/mass-simulator), run unmodified in its own virtualenv with its own pinned requirements,
pointed at a real Mosquitto with authentication on (the simulator logs in with its own account, as a device marked
legacy); the head-end runs on the real PostgreSQL.

Its code is never part of this repository: the test reads it from a local git mirror named by
OSOS_MASS_SIMULATOR_GIT (default: where the project's fetch tool puts it) and skips when there is none.
See docs/protocol.md, "Interoperability".

covers HES-48, HES-49, HES-61, HES-66
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from osos.config import Settings
from osos.headend import orders
from osos.headend.broker import LocalBroker, start_mosquitto
from osos.headend.provisioning import provision_modem
from osos.headend.service import HeadEnd
from osos.protocols import mass
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import heartbeats, meters, modems, register_latest

pytestmark = pytest.mark.integration

MIRROR = Path(os.environ.get("OSOS_MASS_SIMULATOR_GIT", "/work/.mirror/erdem-aydemir+mass-simulator/repo"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "osos-interop"


def _git_show(path: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(MIRROR), "show", f"HEAD:{path}"], check=True, capture_output=True
    ).stdout


def _simulator_checkout(tmp: Path) -> tuple[Path, Path]:
    """Export simulator.py and requirements.txt, and a venv with exactly its pins (cached by their hash)."""
    if not (MIRROR / "HEAD").exists():
        pytest.skip(f"no mass-simulator mirror at {MIRROR} (set OSOS_MASS_SIMULATOR_GIT)")
    src = tmp / "mass-simulator"
    src.mkdir()
    (src / "simulator.py").write_bytes(_git_show("simulator.py"))
    reqs = _git_show("requirements.txt")
    (src / "requirements.txt").write_bytes(reqs)
    venv = CACHE / ("venv-" + hashlib.sha256(reqs).hexdigest()[:12])
    if not (venv / "ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(src / "requirements.txt")], check=True)
        (venv / "ok").write_text("ok")
    return src, venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def plain_broker(mqtt_broker, tmp_path) -> Iterator[LocalBroker]:
    """A broker as ``osos demo --no-tls`` runs it (one plain listener, no mount point, authentication on): the
    reference simulator cannot do TLS, and the head-end on this branch does not read the mounted plain/ topics
    of the shared test broker yet. ``mqtt_broker`` is requested for its CI rule (no mosquitto = failure)."""
    local = start_mosquitto(tmp_path / "plain-broker", tls=False, persistence=False)
    try:
        yield local
    finally:
        local.stop()


def test_reference_simulator_registers_beats_and_answers_a_read(
    plain_broker, pg_url, topic_prefix, tmp_path, wait_until
) -> None:
    src, venv = _simulator_checkout(tmp_path)
    topics = mass.Topics(topic_prefix)
    headend_password = secrets.token_urlsafe(16)
    serial = "SIM" + uuid.uuid4().hex[:10].upper()
    engine = make_engine(pg_url)
    migrate(engine)
    with plain_broker.admin() as admin:
        admin.ensure_headend(topics, "osos-headend", headend_password)
        # the simulator sends MQTT_USERNAME/MQTT_PASSWORD (simulator.py, Config): it gets its own account, marked
        # legacy because it speaks on the shared MASS topics
        creds = provision_modem(engine, admin, topics, "XYZ", serial, legacy=True, by="interop-test", now=utcnow())
    settings = Settings(mqtt_host=plain_broker.host, mqtt_port=plain_broker.plain_port, topic_root=topic_prefix,
                        database_url=pg_url, headend_id=f"he-{uuid.uuid4().hex[:8]}", order_timeout_s=30,
                        mqtt_username="osos-headend", mqtt_password=headend_password, device_tls=False)
    headend = HeadEnd(settings, engine)
    headend.start()
    env = {
        **os.environ,
        "DEVICE_FLAG": "XYZ",
        "DEVICE_SERIAL": serial,
        "MQTT_BROKER": plain_broker.host,
        "MQTT_PORT": str(plain_broker.plain_port),
        "MQTT_USERNAME": creds.username,
        "MQTT_PASSWORD": creds.password,
        "TOPIC_TO_SERVER": headend.topics.legacy_uplink,
        "TOPIC_FROM_SERVER": headend.topics.legacy_downlink,
        "HEARTBEAT_INTERVAL": "1",
        "API_PORT": str(_free_port()),
    }
    log_path = tmp_path / "simulator.log"
    with open(log_path, "wb") as log:
        sim = subprocess.Popen(
            [str(venv / "bin" / "python"), "simulator.py"], cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def modem():
            with engine.connect() as conn:
                return conn.execute(select(modems).where(modems.c.serial == serial)).mappings().first()

        m = wait_until(modem, 60, "the simulator's identification", 0.2)
        wait_until(lambda: (modem() or {}).get("brand"), 30, "identification details", 0.2)
        m = modem()
        assert (m["flag"], m["brand"], m["model"], m["topic_style"]) == ("XYZ", "SimulatorBrand", "SimV1.0", "legacy")

        def beats() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).select_from(heartbeats).where(heartbeats.c.modem_id == m["id"])
                    ).scalar_one()
                )

        wait_until(lambda: beats() >= 2, 30, "two heartbeats", 0.2)

        with engine.begin() as conn:
            oid = orders.create_order(conn, "read", modem_id=m["id"], created_by="interop-test")
        headend.wake_dispatcher()

        def outcome():
            with engine.connect() as conn:
                o = orders.get_order(conn, oid)
            return o if o["status"] in ("succeeded", "failed") else None

        order = wait_until(outcome, 40, "the read answer", 0.2)
        assert order["status"] == "succeeded", order
        # the simulator's fixed readout: "/LGZ5\2ZMG405000b.P07" and bare lines without units
        assert order["result"]["meter"] == {"flag": "LGZ", "serial": "23660088"}
        with engine.connect() as conn:
            meter = conn.execute(select(meters).where(meters.c.serial == "23660088")).mappings().one()
            latest = {
                r.obis: (r.value, r.unit)
                for r in conn.execute(select(register_latest).where(register_latest.c.meter_id == meter["id"]))
            }
        assert meter["modem_id"] == m["id"]
        assert latest["1.8.0"] == ("0000004891.722", None)
        assert latest["0.9.2"] == ("2021-06-22", None)
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        headend.stop()
        engine.dispose()
        if sys.exc_info()[0] is not None:
            print(log_path.read_text(errors="replace")[-3000:])
