"""The private Mosquitto that ``osos demo`` and the test suite start: authentication on, one account per device.

What it runs (HES-4, HES-52..55):

* Mosquitto 2 with the dynamic-security plugin (see ``osos.headend.provisioning`` for why), ``allow_anonymous
  false``: every client needs an account; the initial dynsec file holds only the admin account.
* With TLS (the default): a TLS listener (CA and server certificate from ``osos.headend.tlsgen``) and, beside it,
  a plain listener with ``mount_point plain/`` so the head-end sees which transport a device used (HES-54).
  Without TLS: one plain listener without a mount point (``Settings.device_tls`` False).
* Persistence on, a high ``max_queued_messages`` (the head-end's persistent session survives a restart without
  losing a backlog), a log file in the data dir. Ports are remembered in ``broker.json`` and reused when free,
  so a restarted demo comes back where its gateways expect it.

There is no embedded fallback broker any more: it could not refuse anonymous clients or enforce per-device ACLs.
Production never uses this module; it points OSOS at its own broker (docs/security.md).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from osos.headend.provisioning import DynSecAdmin, write_initial_config
from osos.headend.tlsgen import ensure_server_tls

log = logging.getLogger(__name__)

ADMIN_USERNAME = "osos-admin"
DYNSEC_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
INSTALL_HINT = "install Mosquitto 2 (Debian/Ubuntu: apt-get install mosquitto; it includes the dynamic-security plugin)"


class BrokerError(RuntimeError):
    """The local Mosquitto could not be started or configured (missing binary or plugin, port, config)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mosquitto binds: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_port(host: str, port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def dynsec_plugin() -> str | None:
    env = os.environ.get("OSOS_MOSQUITTO_DYNSEC")
    if env:
        return env
    for candidate in (*DYNSEC_PLUGIN_CANDIDATES, *glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")):
        if Path(candidate).exists():
            return candidate
    return None


def read_or_create_secret(path: Path) -> str:
    """A generated password kept in a 0600 file: created on first use, read afterwards."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


@dataclass
class LocalBroker:
    host: str
    plain_port: int
    tls_port: int | None
    ca: Path | None
    admin_username: str
    admin_password: str
    data_dir: Path
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    protocol: str = "v5"
    kind: str = "mosquitto"

    @property
    def tls(self) -> bool:
        return self.tls_port is not None

    @property
    def port(self) -> int:
        """Where the head-end and the admin connect: the TLS listener when there is one (no mount point)."""
        return self.tls_port if self.tls_port is not None else self.plain_port

    def admin(self, timeout_s: float = 10.0) -> DynSecAdmin:
        return DynSecAdmin(self.host, self.port, self.admin_username, self.admin_password, ca=self.ca,
                           tls=self.tls, timeout_s=timeout_s)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def _pick_port(previous: int | None, host: str) -> int:
    if previous and port_free(previous, host):
        return previous
    return free_port(host)


def start_mosquitto(
    data_dir: Path,
    *,
    tls: bool = True,
    host: str = "127.0.0.1",
    plain_port: int | None = None,
    tls_port: int | None = None,
    persistence: bool = True,
    max_queued_messages: int = 200_000,
    binary: str | None = None,
) -> LocalBroker:
    """Start (or restart on the same ports and state) a private Mosquitto that keeps everything in ``data_dir``."""
    exe = binary or mosquitto_binary()
    if exe is None:
        raise BrokerError(f"mosquitto is not installed: {INSTALL_HINT}")
    plugin = dynsec_plugin()
    if plugin is None:
        raise BrokerError(f"the Mosquitto dynamic-security plugin was not found: {INSTALL_HINT}")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    state_path = data_dir / "broker.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    plain_port = plain_port or _pick_port(state.get("plain_port"), host)
    if tls:
        tls_port = tls_port or _pick_port(state.get("tls_port"), host)
        while tls_port == plain_port:
            tls_port = free_port(host)
    else:
        tls_port = None
    state_path.write_text(json.dumps({"host": host, "plain_port": plain_port, "tls_port": tls_port}) + "\n")

    dynsec_file = data_dir / "dynamic-security.json"
    admin_file = data_dir / "admin.password"
    if dynsec_file.exists() and not admin_file.exists():
        raise BrokerError(f"{dynsec_file} exists but {admin_file} is missing: the broker cannot be administered")
    admin_password = read_or_create_secret(admin_file)
    if not dynsec_file.exists():
        write_initial_config(dynsec_file, ADMIN_USERNAME, admin_password)

    lines = [
        "# written by OSOS (osos/headend/broker.py); rewritten at every start",
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec_file}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        f"max_queued_messages {max_queued_messages}",
        "max_inflight_messages 0",
        f"log_dest file {data_dir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",  # never drop to a user that cannot read the 0600 files
        "",
        f"listener {plain_port} {host}",
    ]
    ca = None
    if tls and tls_port is not None:
        files = ensure_server_tls(data_dir / "tls", hosts=(host, "localhost") if host != "localhost" else (host,))
        ca = files.ca_cert
        lines += [
            f"mount_point {'plain/'}",  # HES-54: plain devices' topics carry the mark the head-end checks
            "",
            f"listener {tls_port} {host}",
            f"cafile {files.ca_cert}",
            f"certfile {files.server_cert}",
            f"keyfile {files.server_key}",  # no tls_version line: Mosquitto's default allows TLS 1.2 and 1.3 only
        ]
    conf = data_dir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    out = open(data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    broker = LocalBroker(host, plain_port, tls_port, ca, ADMIN_USERNAME, admin_password, data_dir, proc, out)
    for port in (plain_port, tls_port):
        if port is not None and not wait_port(host, port):
            broker.stop()
            raise BrokerError(f"mosquitto did not start on port {port}; see {data_dir / 'mosquitto.log'}")
    return broker
