"""Network front of the simulated DLMS meter: the IEC 62056-47 wrapper over TCP, and raw HDLC
(IEC 62056-46) over TCP or any byte stream, so one meter answers both ways (HES-40, HES-42).

Each connection (or HDLC link) gets its own :class:`MeterSession`; the meter object is shared.
Servers bind to loopback by default and stop with :meth:`close`.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any

from osos.field.meters.dlms_meter import SimulatedDlmsMeter
from osos.protocols import dlms as D

METER_WPORT = 1  # management logical device


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _WrapperHandler(socketserver.BaseRequestHandler):
    server: _WrapperTCPServer

    def handle(self) -> None:
        sessions: dict[int, Any] = {}
        sock: socket.socket = self.request
        while True:
            header = _read_exact(sock, D.WRAPPER_HEADER)
            if header is None:
                return
            try:
                src, dst, length = D.parse_wrapper_header(header)
            except D.DLMSError:
                return  # not a wrapper stream: drop the connection
            body = _read_exact(sock, length)
            if body is None:
                return
            if dst != METER_WPORT:
                continue  # no such logical device: silently discarded (IEC 62056-47)
            session = sessions.get(src)
            if session is None:
                session = sessions[src] = self.server.meter.new_session(src)
            reply = session.handle(body)
            if reply is not None:
                sock.sendall(D.wrap(reply, METER_WPORT, src))


class _WrapperTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], meter: SimulatedDlmsMeter) -> None:
        self.meter = meter
        super().__init__(addr, _WrapperHandler)


class WrapperServer:
    """Serve ``meter`` over TCP with the wrapper; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, meter: SimulatedDlmsMeter, host: str = "127.0.0.1", port: int = 0) -> None:
        self._srv = _WrapperTCPServer((host, port), meter)
        self.host, self.port = self._srv.server_address[:2]
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), name="dlms-wrapper",
                                        daemon=True)

    def start(self) -> WrapperServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> WrapperServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
