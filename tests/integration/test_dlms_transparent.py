"""DLMS through a gateway's transparent port (HES-42): the head-end's DLMS client drives the
simulated meter byte for byte through the gateway, over a TCP relay and over RFC 2217 to a serial
line (a pseudo-terminal), using the field engineer's TransparentPort (covers HES-40, HES-42)."""

from __future__ import annotations

import datetime as dt
import os
import threading
import tty

from osos.field import dlms_client as C
from osos.field.links import LinkSpec
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import HdlcTcpServer, serve_hdlc_stream
from osos.field.transparent import TransparentPort
from osos.protocols import dlms as D

TR = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
PASSWORD = b"Lls-test-pw-7"


def _meter() -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))


def test_dlms_hdlc_through_a_raw_tcp_relay() -> None:
    meter = _meter()
    with HdlcTcpServer(meter) as srv:
        bridge = TransparentPort(LinkSpec.parse(f"tcp://{srv.host}:{srv.port}"), 0, threading.Lock()).start()
        try:
            t = C.HdlcTransport.tcp(bridge.host, bridge.port, 32)
            with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
                assert c.read_clock() == NOW.astimezone(TR)
                assert len(c.read_profile("1.0.99.1.0.255")) == 7 * 24 + 1
            assert bridge.sessions == 1
        finally:
            bridge.stop()


def test_dlms_hdlc_through_rfc2217_to_a_serial_line() -> None:
    import serial

    meter = _meter()
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)

    def meter_read() -> bytes:
        try:
            return os.read(master, 4096)
        except OSError:
            return b""

    line = threading.Thread(target=serve_hdlc_stream, args=(meter, meter_read, lambda b: os.write(master, b)),
                            daemon=True)
    line.start()
    bridge = TransparentPort(LinkSpec.parse(f"serial://{os.ttyname(slave)}"), 0, threading.Lock()).start()
    try:
        port = serial.serial_for_url(f"rfc2217://{bridge.host}:{bridge.port}?timeout=10", baudrate=9600,
                                     bytesize=8, parity="N", stopbits=1, timeout=5)
        t = C.HdlcTransport(lambda n: port.read(port.in_waiting or 1), port.write, 32, closer=port.close)
        with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
            assert c.read_clock() == NOW.astimezone(TR)
            value, unit = c.read_register("1.0.1.8.0.255")
            assert unit == "Wh" and value == D.scaled(meter.registers()[0], -1)
    finally:
        bridge.stop()
        os.close(slave)
        os.close(master)
        line.join(timeout=5)
