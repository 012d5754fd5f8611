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
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from osos.headend import orders
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


def test_reference_simulator_registers_beats_and_answers_a_read(
    mqtt_broker, start_headend, provision, tmp_path, wait_until
) -> None:
    src, venv = _simulator_checkout(tmp_path)
    headend, engine = start_headend(order_timeout_s=30)
    serial = "SIM" + uuid.uuid4().hex[:10].upper()
    # the simulator sends MQTT_USERNAME/MQTT_PASSWORD (simulator.py, Config) but has no TLS option: it gets its own
    # account, marked legacy because it speaks on the shared MASS topics, and uses the plain (mounted) listener
    creds = provision(engine, "XYZ", serial, legacy=True)
    env = {
        **os.environ,
        "DEVICE_FLAG": "XYZ",
        "DEVICE_SERIAL": serial,
        "MQTT_BROKER": mqtt_broker.host,
        "MQTT_PORT": str(mqtt_broker.plain_port),
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
        if sys.exc_info()[0] is not None:
            print(log_path.read_text(errors="replace")[-3000:])
