"""README command 1, as a user runs it: `osos demo` with nothing else running, then the public API.

Acceptance (issue 2): within 60 s the API lists >= 10 modems and their meters with register values read in the
last minute; a read order reaches `succeeded` with new values; `osos user create` works against the same data dir
while the demo runs; SIGTERM stops it cleanly.

covers AMR-9, HES-1, HES-9, HES-13, HES-51, HES-63
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except httpx.HTTPError as exc:
            last = exc
            last = None
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def demo(request: pytest.FixtureRequest, tmp_path: Path):
    """The demo with the broker it starts by itself: a private Mosquitto with authentication and TLS (the embedded
    fallback broker is gone: it could not refuse anonymous clients). Indirect parameters: extra demo options."""
    extra = list(getattr(request, "param", []))
    port = _free_port()
    data_dir = tmp_path / "demo"
    log_path = tmp_path / "demo.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finalizer
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "osos.cli.main",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--gateways",
            "10",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        password = _wait(
            lambda: (m := re.search(r"password '([^']+)'", log_path.read_text())) and m.group(1),
            60,
            "the demo's first-login line",
        )
        # the login line comes before the web server listens: wait for it to answer
        _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200, 30, "the web")
        yield {
            "port": port,
            "password": password,
            "data_dir": data_dir,
            "proc": proc,
            "started": started,
            "log": log_path,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def test_demo_serves_a_live_fleet_and_answers_a_read_order(demo) -> None:
    base = f"http://127.0.0.1:{demo['port']}"
    client = httpx.Client(base_url=base, timeout=10)
    token = client.post("/api/v1/auth/token", json={"username": "admin", "password": demo["password"]}).json()[
        "access_token"
    ]
    client.headers["Authorization"] = f"Bearer {token}"

    def fleet_with_fresh_values():
        modems = client.get("/api/v1/modems").json()
        meters = client.get("/api/v1/meters").json()
        if len(modems) < 10 or not meters:
            return None
        now = datetime.now(UTC)
        fresh_modems = set()
        for meter in meters:
            regs = client.get(f"/api/v1/meters/{meter['id']}/registers").json()
            times = [datetime.fromisoformat(r["read_at"].replace("Z", "+00:00")) for r in regs.values()]
            if times and now - max(times) < timedelta(minutes=1):
                fresh_modems.add(meter["modem"]["id"])
        return (modems, meters) if len(fresh_modems) >= 10 else None

    modems, meters = _wait(
        fleet_with_fresh_values,
        60 - (time.monotonic() - demo["started"]) + 5,
        ">= 10 modems with values read in the last minute",
    )
    assert time.monotonic() - demo["started"] < 65
    assert all({"id", "flag", "serial", "modem"} <= set(m) for m in meters)

    meter = meters[0]
    before = client.get(f"/api/v1/meters/{meter['id']}/registers").json()
    time.sleep(1.1)  # read dates have whole seconds: the order's read must fall in a later second than `before`
    created = client.post("/api/v1/orders", json={"kind": "read", "meter": meter["id"]})
    assert created.status_code in (200, 201), created.text
    oid = created.json()["id"]
    order = _wait(
        lambda: (o := client.get(f"/api/v1/orders/{oid}").json())["status"] in ("succeeded", "failed") and o,
        45,
        "the read order's outcome",
    )
    assert order["status"] == "succeeded", order
    after = client.get(f"/api/v1/meters/{meter['id']}/registers").json()
    newest_before = max(r["read_at"] for r in before.values()) if before else ""
    assert max(r["read_at"] for r in after.values()) > newest_before  # new values arrived with the order

    # a second user, created from another process while the demo runs (SQLite in WAL mode)
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "osos.cli.main",
            "user",
            "create",
            "ops1",
            "--role",
            "operator",
            "--password-stdin",
            "--data-dir",
            str(demo["data_dir"]),
        ],
        input="Correct-Horse-Battery-9\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    login = httpx.post(f"{base}/api/v1/auth/token", json={"username": "ops1", "password": "Correct-Horse-Battery-9"})
    assert login.status_code == 200

    demo["proc"].send_signal(signal.SIGTERM)
    assert demo["proc"].wait(30) == 0


def _mqtt_connect(host: str, port: int, username: str | None, password: str | None, tls: bool,
                  ca: str | None = None) -> object:
    """CONNACK reason code (or the exception) of one login."""
    import threading

    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca)  # ca None: the system's trust store
    done, result = threading.Event(), []
    client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect(host, port)
    except OSError as exc:
        return exc
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return result[0] if result else "no answer"


def test_demo_broker_needs_accounts_uses_tls_and_says_where_it_is(demo) -> None:  # covers HES-4, HES-52..55
    import json
    import os
    import queue

    import paho.mqtt.client as mqtt

    data_dir: Path = demo["data_dir"]
    info = json.loads((data_dir / "demo.json").read_text())
    broker = info["broker"]
    assert info["web_url"] == f"http://127.0.0.1:{demo['port']}"
    assert broker["host"] == "127.0.0.1" and broker["plain_port"] != broker["tls_port"]
    assert Path(broker["ca"]).is_file()
    # no secret in it: none of the passwords the demo generated appears in the file
    text = (data_dir / "demo.json").read_text()
    secrets_made = [(data_dir / "broker" / n).read_text().strip() for n in ("admin.password", "headend.password")]
    secrets_made += [json.loads(p.read_text())["password"] for p in (data_dir / "fleet").glob("*/broker-*.json")]
    secrets_made.append(demo["password"])
    assert len(secrets_made) == 13 and not any(s in text for s in secrets_made)
    for key in (data_dir / "broker" / "tls" / "ca.key", data_dir / "broker" / "tls" / "server.key",
                data_dir / "broker" / "admin.password", data_dir / "broker" / "headend.password",
                *(data_dir / "fleet").glob("*/broker-credentials.json")):
        assert os.stat(key).st_mode & 0o777 == 0o600, key

    # anonymous clients are refused on both listeners; without the CA the TLS listener is not trusted
    for port, tls in ((broker["plain_port"], False), (broker["tls_port"], True)):
        rc = _mqtt_connect(broker["host"], port, None, None, tls, broker["ca"])
        assert getattr(rc, "is_failure", False), rc
    import ssl

    assert isinstance(_mqtt_connect(broker["host"], broker["tls_port"], "x", "y", True), ssl.SSLError)

    # the gateways talk over TLS: the head-end's account sees their uplinks unmounted, none under plain/
    got: queue.Queue[str] = queue.Queue()
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                      client_id="e2e-observer")
    sub.username_pw_set("osos-headend", (data_dir / "broker" / "headend.password").read_text().strip())
    sub.tls_set(ca_certs=broker["ca"])
    sub.on_message = lambda c, u, m: got.put(m.topic)
    sub.connect(broker["host"], broker["tls_port"])
    sub.subscribe([("mass/device/+/+/to_server", 0), ("plain/mass/device/+/+/to_server", 0)])
    sub.loop_start()
    try:
        topics = {got.get(timeout=45)}
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and len(topics) < 10:
            with contextlib.suppress(queue.Empty):
                topics.add(got.get(timeout=1))
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert len({t.split("/")[3] for t in topics}) >= 5, topics
    assert all(t.startswith("mass/device/OSS/") for t in topics), topics

    # `osos modem add` against the running demo finds its broker through demo.json and the admin password file
    made = subprocess.run([sys.executable, "-m", "osos.cli.main", "modem", "add", "ABC", "E2E0001", "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("OSOS_")})
    assert made.returncode == 0, made.stderr
    password = re.search(r"password \(shown only now\): (\S+)", made.stdout).group(1)  # type: ignore[union-attr]
    rc = _mqtt_connect(broker["host"], broker["tls_port"], "ABCE2E0001", password, True, broker["ca"])
    assert not rc.is_failure, rc  # type: ignore[attr-defined]


def test_demo_restart_finds_the_same_broker_and_gateway_accounts(demo, tmp_path) -> None:  # covers HES-4
    """Stopped and started again on the same data dir: the broker comes back on the same ports with the same
    accounts, the gateways log in with the credentials they kept (no new provisioning) and report again."""
    import json

    data_dir: Path = demo["data_dir"]
    before = json.loads((data_dir / "demo.json").read_text())
    creds = {p: p.read_bytes() for p in (data_dir / "fleet").glob("*/broker-credentials.json")}
    assert len(creds) == 10
    demo["proc"].send_signal(signal.SIGTERM)
    assert demo["proc"].wait(30) == 0
    restarted_at = datetime.now(UTC)
    with open(tmp_path / "demo2.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "osos.cli.main", "demo", "--port", str(demo["port"]), "--data-dir",
             str(data_dir), "--gateways", "10"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        try:
            base = f"http://127.0.0.1:{demo['port']}"
            _wait(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200, 60, "the web again")
            assert json.loads((data_dir / "demo.json").read_text()) == before  # same ports, same CA path
            assert {p: p.read_bytes() for p in creds} == creds  # the gateways kept their passwords
            client = httpx.Client(base_url=base, timeout=10)
            token = client.post("/api/v1/auth/token",
                                json={"username": "admin", "password": demo["password"]}).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"

            def all_back() -> list | None:
                modems = client.get("/api/v1/modems").json()
                fresh = [m for m in modems if m["last_seen_at"]
                         and datetime.fromisoformat(m["last_seen_at"].replace("Z", "+00:00")) > restarted_at]
                return modems if len(fresh) == 10 else None

            modems = _wait(all_back, 60, "all ten gateways reporting after the restart")
            assert len(modems) == 10  # nobody was provisioned twice
            assert "first login" not in (tmp_path / "demo2.log").read_text()
            broker_log = (data_dir / "broker" / "mosquitto.log").read_text()
            assert "not authorised" not in broker_log.split("Warning: Mosquitto should not be run as root")[-1]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0


@pytest.mark.parametrize("demo", [["--no-tls"]], indirect=True)
def test_demo_without_tls_still_needs_accounts(demo) -> None:  # covers HES-4, HES-54
    """`--no-tls`: one plain listener without mount point, no CA; gateways still log in with their own accounts."""
    import json

    data_dir: Path = demo["data_dir"]
    broker = json.loads((data_dir / "demo.json").read_text())["broker"]
    assert broker["tls_port"] is None and broker["ca"] is None and broker["plain_mount_point"] is None
    assert "mount_point" not in (data_dir / "broker" / "mosquitto.conf").read_text()
    rc = _mqtt_connect(broker["host"], broker["plain_port"], None, None, False)
    assert getattr(rc, "is_failure", False), rc
    base = f"http://127.0.0.1:{demo['port']}"
    client = httpx.Client(base_url=base, timeout=10)
    token = client.post("/api/v1/auth/token", json={"username": "admin", "password": demo["password"]}).json()
    client.headers["Authorization"] = f"Bearer {token['access_token']}"
    modems = _wait(lambda: (m := client.get("/api/v1/modems").json()) and sum(1 for x in m if x["last_seen_at"]) == 10
                   and m, 60, "ten gateways reporting")
    assert len(modems) == 10
