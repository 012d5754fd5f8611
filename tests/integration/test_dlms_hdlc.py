"""The same simulated meter over HDLC: raw HDLC on TCP (a transparent modem socket) and on a
pseudo-terminal (a serial line), with segmentation both ways (covers HES-40, HES-42, AMR-5)."""

from __future__ import annotations

import datetime as dt
import os
import select
import threading
from collections.abc import Iterator

import pytest

from osos.field import dlms_client as C
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import HdlcTcpServer, serve_hdlc_stream

TR = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
PASSWORD = b"Lls-test-pw-7"
EK = bytes(range(16))
AK = bytes(range(16, 32))


@pytest.fixture
def meter() -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD, ek=EK, ak=AK))


@pytest.fixture
def hdlc_server(meter: SimulatedDlmsMeter) -> Iterator[HdlcTcpServer]:
    with HdlcTcpServer(meter) as srv:
        yield srv


def test_lls_over_hdlc_tcp(hdlc_server: HdlcTcpServer) -> None:
    t = C.HdlcTransport.tcp(hdlc_server.host, hdlc_server.port, 32)
    with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
        assert c.read_clock() == NOW.astimezone(TR)
        rows = c.read_profile("1.0.99.1.0.255")
        ranged = c.read_profile("1.0.99.1.0.255", dt.datetime(2026, 11, 21, 10, tzinfo=TR),
                                dt.datetime(2026, 11, 21, 12, tzinfo=TR))
        c.disconnect()
        assert c.disconnect_state() == (False, 0)
    assert len(rows) == 7 * 24 + 1  # hourly rows + the power-cut entry
    assert [r[0].hour for r in ranged] == [10, 11, 12]
    assert not t.connected  # DISC sent and acknowledged on close


def test_small_frames_segment_requests_and_answers(hdlc_server: HdlcTcpServer) -> None:
    # 32-byte information fields: the AARQ is segmented by the client, every answer by the meter
    t = C.HdlcTransport.tcp(hdlc_server.host, hdlc_server.port, 1, max_info=32)
    with C.DlmsClient(t, C.Security("hls-gmac", ek=EK, ak=AK)) as c:
        assert t.max_info == 32
        assert c.read_clock() == NOW.astimezone(TR)
        assert len(c.read_profile("1.0.99.1.0.255")) == 7 * 24 + 1  # hourly rows + the power-cut entry


def test_same_meter_answers_wrapper_and_hdlc(meter: SimulatedDlmsMeter, hdlc_server: HdlcTcpServer) -> None:
    from osos.field.meters.dlms_server import WrapperServer

    with WrapperServer(meter) as w:
        with C.DlmsClient(C.WrapperTransport(w.host, w.port, 32), C.Security("lls", password=PASSWORD)) as c:
            c.disconnect()
        t = C.HdlcTransport.tcp(hdlc_server.host, hdlc_server.port, 32)
        with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
            assert c.disconnect_state() == (False, 0)  # one meter, two front ends


def test_hdlc_over_a_pseudo_terminal(meter: SimulatedDlmsMeter) -> None:
    meter_fd, client_fd = os.openpty()
    import tty

    tty.setraw(meter_fd)
    tty.setraw(client_fd)

    def meter_read() -> bytes:
        try:
            return os.read(meter_fd, 4096)
        except OSError:
            return b""

    def meter_write(data: bytes) -> None:
        os.write(meter_fd, data)

    thread = threading.Thread(target=serve_hdlc_stream, args=(meter, meter_read, meter_write), daemon=True)
    thread.start()

    def client_read(n: int) -> bytes:
        ready, _, _ = select.select([client_fd], [], [], 5.0)
        return os.read(client_fd, n) if ready else b""

    def client_write(data: bytes) -> None:
        os.write(client_fd, data)

    t = C.HdlcTransport(client_read, client_write, 32, server_physical=17)  # 2-byte server address
    try:
        with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
            assert c.read_clock() == NOW.astimezone(TR)
            value, unit = c.read_register("1.0.1.8.0.255")
            assert unit == "Wh" and value > 0
    finally:
        os.close(client_fd)
        os.close(meter_fd)
        thread.join(timeout=5)
    assert not thread.is_alive()
