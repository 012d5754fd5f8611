"""Put simulated meters on real links: a TCP port or a pty pair (the serial path of an optical probe).

On a pty the reader's line settings are visible from the master side (Linux shares the termios of the
pair), so the baud switch of mode C is modelled honestly: when the reader's speed differs from the speed
the meter talks at, both directions turn into garbage, as on a real serial line. TCP has no line speed:
the server records every negotiated rate (``negotiated``) so a test can check the handshake.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import termios
import threading
import time
import tty
from collections.abc import Callable
from datetime import UTC, datetime

from osos.field.meters.iec import IecPortSession, SimMeter

_SPEEDS = {getattr(termios, f"B{r}"): r for r in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)}
REACTION_MIN_S = 0.2  # IEC 62056-21: the meter answers no sooner than 200 ms after a baud switch
REACTION_MAX_S = 1.5  # ... and no later than 1500 ms
SETTLE_S = 0.1  # how long a reader's speed must stand before its input counts as sent at that speed


def _utc_now() -> datetime:
    return datetime.now(UTC)


def garble(data: bytes) -> bytes:
    """What bytes look like when sampled at the wrong speed: framing errors, nothing readable."""
    return bytes((0x80 | ((b * 37 + 11) & 0x7F)) for b in data)


class TcpMeterServer:
    """One TCP port serving a group of meters (a gateway serial port with its bus), one reader at a time."""

    def __init__(
        self,
        meters: list[SimMeter],
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.meters = meters
        self.clock = clock
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.05)
        self.host, self.port = self._sock.getsockname()[:2]
        self.negotiated: list[int] = []
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"meter-tcp-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> TcpMeterServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> TcpMeterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        session = IecPortSession(self.meters, self.clock)
        conn.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            before = len(session.negotiated)
            answers = session.feed(data)
            self.negotiated += session.negotiated[before:]
            try:
                for _baud, payload in answers:
                    conn.sendall(payload)
            except OSError:
                break


class PtyMeterServer:
    """Meters behind a pseudo-terminal; the reader opens :attr:`device` like ``/dev/ttyUSB0``."""

    def __init__(self, meters: list[SimMeter], clock: Callable[[], datetime] = _utc_now) -> None:
        self.meters = meters
        self.clock = clock
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        self.device = os.ttyname(self._slave)
        self.negotiated: list[int] = []
        self.garbled_bytes = 0
        self._last_baud = 300
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"meter-pty-{self.device}", daemon=True)

    @property
    def url(self) -> str:
        return f"serial://{self.device}"

    def start(self) -> PtyMeterServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyMeterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reader_baud(self) -> int | None:
        """The speed the reader configured on its end of the pair."""
        try:
            attrs = termios.tcgetattr(self._master)
        except termios.error:
            return None
        return _SPEEDS.get(attrs[5])

    def _serve(self) -> None:
        session = IecPortSession(self.meters, self.clock)
        seen, changed_at = self.reader_baud(), time.monotonic()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.01)
            current = self.reader_baud()
            if current != seen:
                seen, changed_at = current, time.monotonic()
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                break
            if not data:
                continue
            # Bytes already on the line when the reader switched speed (its ACK before the switch) were sent
            # at the old speed; only a reader that has sat at the wrong speed for a while sends garbage.
            if current != session.baud and time.monotonic() - changed_at > SETTLE_S:
                self.garbled_bytes += len(data)
                data = garble(data)
            before = len(session.negotiated)
            answers = session.feed(data)
            self.negotiated += session.negotiated[before:]
            for baud, payload in answers:
                self._send(baud, payload)

    def _send(self, baud: int, payload: bytes) -> None:
        if baud != self._last_baud or self.reader_baud() != baud:
            # after a switch the meter waits its reaction time, giving the reader time to follow
            time.sleep(REACTION_MIN_S)
            deadline = time.monotonic() + REACTION_MAX_S - REACTION_MIN_S
            while self.reader_baud() != baud and time.monotonic() < deadline:
                time.sleep(0.01)
        self._last_baud = baud
        if self.reader_baud() != baud:
            self.garbled_bytes += len(payload)
            payload = garble(payload)
        with contextlib.suppress(OSError):
            os.write(self._master, payload)
