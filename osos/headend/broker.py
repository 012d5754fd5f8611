"""A broker for the zero-setup demo: a private Mosquitto on a free loopback port when the binary is installed,
otherwise an embedded amqtt broker (MQTT 3.1.1 only, so clients then speak 3.1.1).

Production never uses this: it points OSOS at its own Mosquitto/EMQX/VerneMQ with TLS and ACLs (HES-52..55).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class LocalBroker:
    host: str
    port: int
    kind: str  # "mosquitto" | "amqtt"
    protocol: str  # "v5" | "v311": what clients should speak to it
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _broker: Any = None
    _extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._loop is not None and self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(timeout=5)
            except Exception:  # shutting down anyway
                log.debug("amqtt shutdown raised", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)


def start_mosquitto(data_dir: Path, port: int | None = None, binary: str | None = None) -> LocalBroker:
    exe = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                "# written by osos demo: loopback only, for the demo fleet",
                f"listener {port} 127.0.0.1",
                "allow_anonymous true",
                "persistence false",
                "max_queued_messages 200000",
                "max_inflight_messages 0",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "",
            ]
        )
    )
    log_file = open(data_dir / "mosquitto.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT)
    if not wait_port("127.0.0.1", port):
        proc.kill()
        raise RuntimeError(f"mosquitto did not start on port {port}; see {data_dir / 'mosquitto.log'}")
    return LocalBroker("127.0.0.1", port, "mosquitto", "v5", _proc=proc)


def start_amqtt(port: int | None = None) -> LocalBroker:
    from amqtt.broker import Broker

    port = port or free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        broker = Broker(config, loop=loop)
        holder["broker"] = broker
        try:
            loop.run_until_complete(broker.start())
        except Exception as exc:  # reported to the caller below
            holder["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="osos-amqtt", daemon=True)
    thread.start()
    # broker.start() returns once its listener is bound, so no probe connection is needed (amqtt logs those
    # as errors)
    if not started.wait(10) or "error" in holder:
        raise RuntimeError(f"embedded broker failed to start: {holder.get('error', 'timed out')}")
    return LocalBroker("127.0.0.1", port, "amqtt", "v311", _thread=thread, _loop=loop, _broker=holder["broker"])


def start_local_broker(data_dir: Path, port: int | None = None, prefer: str = "auto") -> LocalBroker:
    """Mosquitto when installed (MQTT 5, shared subscriptions), else the embedded amqtt."""
    if prefer in ("auto", "mosquitto") and (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        return start_mosquitto(data_dir, port)
    if prefer == "mosquitto":
        raise RuntimeError("mosquitto is not installed")
    return start_amqtt(port)
