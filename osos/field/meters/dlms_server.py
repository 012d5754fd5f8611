"""Network front of the simulated DLMS meter: the IEC 62056-47 wrapper over TCP, and raw HDLC
(IEC 62056-46) over TCP or any byte stream, so one meter answers both ways (HES-40, HES-42).

Each connection (or HDLC link) gets its own :class:`MeterSession`; the meter object is shared.
Servers bind to loopback by default and stop with :meth:`close`.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

from osos.field.meters.dlms_meter import SimulatedDlmsMeter
from osos.protocols import dlms as D
from osos.protocols import dlms_hdlc as H

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


def send_push(meter: SimulatedDlmsMeter, host: str, port: int, *, reason: str = "scheduled", ciphered: bool = False,
              destination_wport: int = 102, timeout: float = 5.0) -> None:
    """Open a TCP connection to a listener and send one DataNotification in a wrapper frame
    (source wPort 1 = the management logical device)."""
    apdu = meter.push_apdu(reason, ciphered)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(D.wrap(apdu, METER_WPORT, destination_wport))


class AlarmPush:
    """Push a DataNotification to a listener whenever the meter logs an event (HES-11: alarms
    pushed by meters). Sending happens on a worker thread so the meter never blocks on the network;
    failures are counted in ``failed`` (a real meter would retry on its push schedule)."""

    def __init__(self, meter: SimulatedDlmsMeter, host: str, port: int, *, ciphered: bool = False) -> None:
        import queue

        self.meter, self.host, self.port, self.ciphered = meter, host, port, ciphered
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dlms-push", daemon=True)
        self._thread.start()
        meter.event_hooks.append(self._q.put)

    def _run(self) -> None:
        while True:
            reason = self._q.get()
            if reason is None:
                return
            try:
                send_push(self.meter, self.host, self.port, reason=reason, ciphered=self.ciphered)
                self.sent += 1
            except OSError:
                self.failed += 1

    def close(self) -> None:
        if self._q.put in self.meter.event_hooks:
            self.meter.event_hooks.remove(self._q.put)
        self._q.put(None)
        self._thread.join(timeout=5)


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


# --------------------------------------------------------------------------------------------
# HDLC (IEC 62056-46)


class HdlcLink:
    """Server side of one HDLC link: connection management, sequence numbers, segmentation.

    Sans-I/O: :meth:`on_frame` takes one received frame and returns the frames to send. Window 1
    (each I-frame is answered before the next), as most meters negotiate."""

    def __init__(self, meter: SimulatedDlmsMeter, logical: int = 1, max_info: int = 128) -> None:
        self.meter = meter
        self.logical = logical
        self.server = (logical, 1)
        self.max_info = max_info
        self.client: tuple[int, int] | None = None
        self.session: Any = None
        self.vs = 0  # send sequence number
        self.vr = 0  # receive sequence number (next expected N(S))
        self.rx = bytearray()
        self.tx: list[bytes] = []  # pending response segments

    def on_frame(self, raw: bytes) -> list[bytes]:
        try:
            f = H.parse_frame(raw)
        except D.DLMSError:
            return []  # a corrupted frame is ignored; the client times out and repeats
        shift = {1: 0, 2: 7, 4: 14}[f.destination_size]
        if f.destination >> shift != self.logical:
            return []  # another logical device (or a broadcast we do not serve)
        self.server = (f.destination, f.destination_size)  # answer in the address form we were called with
        client = (f.source, f.source_size)
        kind = f.kind
        if kind == "SNRM":
            try:
                params = H.parse_negotiation(f.information)
            except D.DLMSError:
                return [H.u_frame(client, self.server, H.FRMR).to_bytes()]
            self.max_info = min(self.max_info, params.get(0x06, self.max_info))  # client's max receive
            self.client = client
            self.session = self.meter.new_session(f.source)
            self.vs = self.vr = 0
            self.rx.clear()
            self.tx.clear()
            return [H.u_frame(client, self.server, H.UA, H.negotiation(self.max_info, self.max_info)).to_bytes()]
        if self.client is None or client != self.client:
            return [H.u_frame(client, self.server, H.DM).to_bytes()]
        if kind == "DISC":
            self.client = None
            self.session = None
            return [H.u_frame(client, self.server, H.UA).to_bytes()]
        if kind == "RR":
            if self.tx and f.nr == self.vs:
                return [self._next_segment()]
            return [H.rr_frame(client, self.server, self.vr).to_bytes()]
        if kind == "I":
            if f.ns != self.vr:  # repeated or lost frame: ask again for the one we expect
                return [H.rr_frame(client, self.server, self.vr).to_bytes()]
            self.vr = (self.vr + 1) % 8
            self.rx += f.information
            if f.segmented:
                return [H.rr_frame(client, self.server, self.vr).to_bytes()]
            data = bytes(self.rx)
            self.rx.clear()
            if data[:3] != H.LLC_REQUEST:
                return [H.rr_frame(client, self.server, self.vr).to_bytes()]
            reply = self.session.handle(data[3:])
            if reply is None:
                return [H.rr_frame(client, self.server, self.vr).to_bytes()]
            payload = H.LLC_RESPONSE + reply
            self.tx = [payload[i : i + self.max_info] for i in range(0, len(payload), self.max_info)]
            return [self._next_segment()]
        return [H.u_frame(client, self.server, H.FRMR).to_bytes()]

    def _next_segment(self) -> bytes:
        assert self.client is not None
        chunk = self.tx.pop(0)
        frame = H.i_frame(self.client, self.server, self.vs, self.vr, chunk, segmented=bool(self.tx))
        self.vs = (self.vs + 1) % 8
        return frame.to_bytes()


def serve_hdlc_stream(meter: SimulatedDlmsMeter, read: Callable[[], bytes], write: Callable[[bytes], None],
                      logical: int = 1) -> None:
    """Run one HDLC link over any byte stream (a TCP socket, a pty, a serial port) until EOF."""
    link = HdlcLink(meter, logical)
    reader = H.FrameReader()
    while True:
        chunk = read()
        if not chunk:
            return
        for frame in reader.feed(chunk):
            for out in link.on_frame(frame):
                write(out)


class _HdlcHandler(socketserver.BaseRequestHandler):
    server: _HdlcTCPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            serve_hdlc_stream(self.server.meter, lambda: sock.recv(4096), sock.sendall)
        except OSError:
            return


class _HdlcTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], meter: SimulatedDlmsMeter) -> None:
        self.meter = meter
        super().__init__(addr, _HdlcHandler)


class HdlcTcpServer(WrapperServer):
    """Serve ``meter`` as raw HDLC over TCP (what a transparent modem socket carries, HES-42)."""

    def __init__(self, meter: SimulatedDlmsMeter, host: str = "127.0.0.1", port: int = 0) -> None:
        self._srv = _HdlcTCPServer((host, port), meter)  # type: ignore[assignment]
        self.host, self.port = self._srv.server_address[:2]
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), name="dlms-hdlc",
                                        daemon=True)
