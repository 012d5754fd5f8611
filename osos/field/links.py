"""The reader's end of a meter link (HES-38, HES-42): TCP socket or serial port (pyserial; a pty too).

The directive interpreter only sees :class:`Link`, so it runs the same over an optical probe on
``/dev/ttyUSB0`` (the S1 set-up, AMR-8), a transparent TCP port of a modem, or a simulated meter.
Link URLs: ``tcp://host:port``, ``serial:///dev/ttyUSB0``, ``rfc2217://host:port`` (a gateway's transparent
serial port, line settings carried by RFC 2217); an optional ``?address=...`` selects a meter on a shared bus
(the device address of the sign-on).
"""

from __future__ import annotations

import contextlib
import socket
import termios
import time
from dataclasses import dataclass
from functools import cache
from typing import Protocol
from urllib.parse import parse_qs, urlsplit


@cache
def robust_serial_class() -> type:
    """pyserial's Serial, made tolerant of ptys (the simulated optical probe). A pty ignores 7E1 (it keeps CS8
    without parity), and Linux then answers EINVAL to a tcsetattr that changes nothing else: when the line already
    runs at the requested speed that error is harmless and ignored. A pty has no modem lines either. On a real
    USB-serial adapter neither fallback is ever taken."""
    import serial

    class RobustSerial(serial.Serial):  # type: ignore[misc, name-defined]
        def _reconfigure_port(self, force_update: bool = False) -> None:
            try:
                super()._reconfigure_port(force_update=force_update)
            except termios.error:
                wanted = getattr(termios, f"B{self._baudrate}", None)
                if wanted is None or self.fd is None or termios.tcgetattr(self.fd)[5] != wanted:
                    raise

        def _update_dtr_state(self) -> None:
            with contextlib.suppress(OSError):
                super()._update_dtr_state()

        def _update_rts_state(self) -> None:
            with contextlib.suppress(OSError):
                super()._update_rts_state()

        def _update_break_state(self) -> None:
            with contextlib.suppress(OSError):
                super()._update_break_state()

        def _line(self, name: str) -> bool:
            try:
                return bool(getattr(serial.Serial, name).fget(self))
            except OSError:
                return False

        @property
        def cts(self) -> bool:
            return self._line("cts")

        @property
        def dsr(self) -> bool:
            return self._line("dsr")

        @property
        def ri(self) -> bool:
            return self._line("ri")

        @property
        def cd(self) -> bool:
            return self._line("cd")

    return RobustSerial


class LinkError(OSError):
    """The link could not be opened, or broke while in use."""


@dataclass(frozen=True)
class LinkSpec:
    """A parsed link URL."""

    scheme: str  # "tcp" or "serial"
    target: str  # host:port or device path
    address: str = ""

    @classmethod
    def parse(cls, url: str) -> LinkSpec:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        address = query.get("address", [""])[0]
        if parts.scheme == "tcp":
            if not parts.hostname or not parts.port:
                raise LinkError(f"tcp link needs host and port: {url!r}")
            return cls("tcp", f"{parts.hostname}:{parts.port}", address)
        if parts.scheme in ("serial", "pty"):
            if not parts.path:
                raise LinkError(f"serial link needs a device path: {url!r}")
            return cls("serial", parts.path, address)
        if parts.scheme == "rfc2217":
            if not parts.hostname or not parts.port:
                raise LinkError(f"rfc2217 link needs host and port: {url!r}")
            return cls("serial", f"rfc2217://{parts.hostname}:{parts.port}", address)
        raise LinkError(f"unknown link scheme in {url!r} (use tcp://, serial:// or rfc2217://)")

    def open(self) -> Link:
        link: Link
        if self.scheme == "tcp":
            host, port = self.target.rsplit(":", 1)
            link = TcpLink(host, int(port))
        else:
            link = SerialLink(self.target)
        link.open()
        return link


class Link(Protocol):
    """A byte pipe with serial line settings (which a TCP link only records)."""

    bytes_in: int
    bytes_out: int

    def open(self) -> None: ...

    def close(self) -> None: ...

    def configure(self, baud: int, bits: int = 7, parity: str = "E", stop: int = 1) -> None: ...

    def write(self, data: bytes) -> None: ...

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` when nothing arrived within ``timeout_s``."""
        ...


class TcpLink:
    """A transparent TCP port (a modem's serial-over-socket, HES-42) or a simulated meter's port."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = 5.0) -> None:
        self.host, self.port, self.connect_timeout_s = host, port, connect_timeout_s
        self._sock: socket.socket | None = None
        self.settings: tuple[int, int, str, int] = (300, 7, "E", 1)
        self.bytes_in = self.bytes_out = 0

    def open(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise LinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def configure(self, baud: int, bits: int = 7, parity: str = "E", stop: int = 1) -> None:
        self.settings = (baud, bits, parity, stop)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise LinkError("link is not open")
        return self._sock

    def write(self, data: bytes) -> None:
        try:
            self._socket().sendall(data)
        except OSError as exc:
            raise LinkError(f"write failed: {exc}") from None
        self.bytes_out += len(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        sock = self._socket()
        sock.settimeout(max(timeout_s, 0.001))
        try:
            data = sock.recv(max_bytes)
        except TimeoutError:
            return b""
        except OSError as exc:
            raise LinkError(f"read failed: {exc}") from None
        if not data:
            raise LinkError("connection closed by the meter side")
        self.bytes_in += len(data)
        return data


class SerialLink:
    """A serial device through pyserial: a USB optical probe (FT232) or one end of a pty pair."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._port = None
        self.bytes_in = self.bytes_out = 0

    def open(self) -> None:
        import serial

        try:
            if "://" in self.device:  # rfc2217://host:port: a gateway's transparent serial port (HES-42)
                self._port = serial.serial_for_url(
                    self.device, baudrate=300, bytesize=7, parity="E", stopbits=1, timeout=0.05
                )
            else:
                self._port = robust_serial_class()(
                    self.device, baudrate=300, bytesize=7, parity="E", stopbits=1, timeout=0.05
                )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {self.device}: {exc}") from None

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def configure(self, baud: int, bits: int = 7, parity: str = "E", stop: int = 1) -> None:
        port = self._serial()
        port.flush()  # the last bytes leave at the old speed before the switch
        settings = {"baudrate": baud, "bytesize": bits, "parity": parity, "stopbits": stop}
        try:
            port.apply_settings(settings)
        except (OSError, ValueError, termios.error) as exc:
            raise LinkError(f"cannot set {baud} Bd on {self.device}: {exc}") from None

    def _serial(self):  # type: ignore[no-untyped-def]
        if self._port is None:
            raise LinkError("link is not open")
        return self._port

    def write(self, data: bytes) -> None:
        try:
            self._serial().write(data)
        except (OSError, termios.error) as exc:
            raise LinkError(f"write failed: {exc}") from None
        self.bytes_out += len(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        port = self._serial()
        deadline = time.monotonic() + timeout_s
        while True:
            try:  # the port keeps its 0.05 s timeout; the loop makes up the caller's longer wait
                data = port.read(max(1, min(max_bytes, port.in_waiting or 1)))
            except (OSError, termios.error) as exc:
                raise LinkError(f"read failed: {exc}") from None
            if data or time.monotonic() >= deadline:
                self.bytes_in += len(data)
                return data
