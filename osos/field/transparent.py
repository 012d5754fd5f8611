"""Transparent reading (HES-42): a TCP port of the gateway bound to one of its meter links.

The head-end connects and drives the meter's own protocol itself, byte for byte. For a serial link the port
speaks RFC 2217 (telnet COM-port control, pyserial's ``PortManager``) so the reader's speed and framing changes
reach the real serial line: the head-end opens ``rfc2217://gateway:port`` with pyserial and runs the same
directives it would send to the gateway. For a TCP link (a meter on a network port) the bytes are relayed as
they are. One client at a time; while it is connected the gateway's own reads of that link wait (the lock is
shared), so the two never mix their bytes on one line. The port number can be changed at run time through
the MASS ``configuration`` function (HES-43).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from osos.field.links import LinkSpec, robust_serial_class

log = logging.getLogger(__name__)


class TransparentPort:
    def __init__(
        self,
        spec: LinkSpec,
        port: int,
        lock: threading.Lock,
        host: str = "127.0.0.1",
        before_session: Callable[[], None] = lambda: None,
        idle_timeout_s: float = 60.0,
    ) -> None:
        self.spec = spec
        self.idle_timeout_s = idle_timeout_s  # a silent client must not keep the line from the gateway forever
        self.lock = lock
        self.before_session = before_session
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.1)
        self.host, self.port = self._server.getsockname()[:2]
        self.sessions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"transparent-{self.port}", daemon=True)

    @property
    def protocol(self) -> str:
        return "rfc2217" if self.spec.scheme == "serial" else "raw"

    @property
    def url(self) -> str:
        scheme = "rfc2217" if self.protocol == "rfc2217" else "tcp"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> TransparentPort:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._server.accept()
            except (TimeoutError, OSError):
                continue
            with conn, self.lock:
                self.sessions += 1
                self.before_session()  # the gateway lets go of its own handle on the line
                log.info("transparent session from %s on %s", peer, self.spec.target)
                try:
                    if self.protocol == "rfc2217":
                        self._serial_session(conn)
                    else:
                        self._raw_session(conn)
                except OSError as exc:
                    log.warning("transparent session on %s ended: %s", self.spec.target, exc)

    # ------------------------------------------------------------------ relays
    def _pump(
        self,
        conn: socket.socket,
        read_other: Callable[[], bytes],
        write_other: Callable[[bytes], Any],
        *,
        send_net: Callable[[bytes], Any] | None = None,
        to_net: Callable[[bytes], bytes] = lambda b: b,
        to_line: Callable[[bytes], bytes] = lambda b: b,
    ) -> None:
        """Relay both ways until either side closes (or the port stops)."""
        done = threading.Event()
        send = send_net or conn.sendall

        def line_to_net() -> None:
            while not done.is_set() and not self._stop.is_set():
                try:
                    data = read_other()
                    if data:
                        send(to_net(data))
                except OSError:
                    break
            done.set()

        reader = threading.Thread(target=line_to_net, daemon=True)
        reader.start()
        conn.settimeout(0.1)
        idle_since = time.monotonic()
        while not done.is_set() and not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                if time.monotonic() - idle_since > self.idle_timeout_s:
                    log.info("transparent session on %s idle for %.0f s: closed", self.spec.target,
                             self.idle_timeout_s)
                    break
                continue
            except OSError:
                break
            if not data:
                break
            idle_since = time.monotonic()
            payload = to_line(data)
            if payload:
                write_other(payload)
        done.set()
        reader.join(timeout=2)

    def _raw_session(self, conn: socket.socket) -> None:
        host, port = self.spec.target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as meter:
            meter.settimeout(0.1)

            def read_meter() -> bytes:
                try:
                    data = meter.recv(4096)
                except TimeoutError:
                    return b""
                if not data:
                    raise OSError("meter side closed")
                return data

            self._pump(conn, read_meter, meter.sendall)

    def _serial_session(self, conn: socket.socket) -> None:
        from serial.rfc2217 import PortManager

        port = robust_serial_class()(self.spec.target, baudrate=300, bytesize=7, parity="E", stopbits=1,
                                     timeout=0.05)
        write_lock = threading.Lock()

        class _Net:
            @staticmethod
            def write(data: bytes) -> None:
                with write_lock:
                    conn.sendall(data)

        try:
            manager = PortManager(port, _Net())

            def to_net(data: bytes) -> bytes:
                return b"".join(manager.escape(data))

            def to_line(data: bytes) -> bytes:
                return b"".join(manager.filter(data))  # telnet/RFC 2217 commands are applied to the port here

            def read_line() -> bytes:
                return port.read(port.in_waiting or 1)

            self._pump(conn, read_line, port.write, send_net=_Net.write, to_net=to_net, to_line=to_line)
        finally:
            with contextlib.suppress(OSError):
                port.close()
