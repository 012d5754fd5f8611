"""Interop: a DLMS client that is not ours (Gurux, GPLv2, a test-only dependency in the `test`
extra, never imported by osos/) reads our simulated meter over TCP with the wrapper and LLS
(covers HES-40, HES-61, HES-66 interoperability tests, AMR-5)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from typing import Any

import pytest

gurux = pytest.importorskip("gurux_dlms", reason="gurux-dlms (test extra) not installed")

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType  # noqa: E402
from gurux_dlms.objects import (  # noqa: E402
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter  # noqa: E402
from osos.field.meters.dlms_server import HdlcTcpServer, WrapperServer  # noqa: E402

TR = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
PASSWORD = b"Lls-test-pw-7"
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


class GuruxSession:
    """Drive GXDLMSClient (which only builds and parses bytes) over a plain TCP socket."""

    def __init__(self, host: str, port: int, interface: Any, client: Any = None) -> None:
        self.client = client or GXDLMSClient(True, 32, 1, Authentication.LOW, PASSWORD, interface)
        self.sock = socket.create_connection((host, port), timeout=10)

    def _complete(self, reply: Any) -> None:
        buf = GXByteBuffer()
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("meter closed the connection")
            buf.set(chunk)
            if self.client.getData(buf, reply, GXReplyData()):
                return

    def run(self, requests: Any) -> Any:
        if isinstance(requests, bytes | bytearray):
            requests = [requests]
        reply = GXReplyData()
        for req in requests:
            self.sock.sendall(bytes(req))
            self._complete(reply)
            while reply.isMoreData():
                self.sock.sendall(bytes(self.client.receiverReady(reply)))
                self._complete(reply)
        return reply

    def associate(self) -> None:
        if self.client.interfaceType == InterfaceType.HDLC:
            self.client.parseUAResponse(self.run(self.client.snrmRequest()).data)
        self.client.parseAareResponse(self.run(self.client.aarqRequest()).data)
        if self.client.getIsAuthenticationRequired():  # HLS pass 3/4
            for req in self.client.getApplicationAssociationRequest():
                self.client.parseApplicationAssociationResponse(self.run(req).data)

    def read(self, obj: Any, attr: int) -> Any:
        reply = self.run(self.client.read(obj, attr))
        self.client.updateValue(obj, attr, reply.value)
        return reply.value

    def close(self) -> None:
        try:
            self.run(self.client.releaseRequest())
        finally:
            self.sock.close()


@pytest.fixture
def meter() -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD, ek=EK, ak=AK))


@pytest.fixture
def gurux_wrapper(meter: SimulatedDlmsMeter) -> Iterator[GuruxSession]:
    with WrapperServer(meter) as srv:
        s = GuruxSession(srv.host, srv.port, InterfaceType.WRAPPER)
        s.associate()
        yield s
        s.close()


def _as_datetime(value: Any) -> dt.datetime:
    return value.value if hasattr(value, "value") else value


def test_gurux_reads_clock_register_identity(gurux_wrapper: GuruxSession, meter: SimulatedDlmsMeter) -> None:
    clock = GXDLMSClock("0.0.1.0.0.255")
    gurux_wrapper.read(clock, 2)
    assert _as_datetime(clock.time) == NOW.astimezone(TR)

    reg = GXDLMSRegister("1.0.1.8.0.255")
    gurux_wrapper.read(reg, 3)
    gurux_wrapper.read(reg, 2)
    assert reg.scaler == pytest.approx(0.1)  # Gurux exposes the scaler as 10^scaler
    assert int(reg.unit) == 30  # Wh
    raw = meter.registers()[0]
    assert int(round(reg.value * 10)) == raw  # Gurux applies the scaler itself

    ldn = GXDLMSData("0.0.42.0.0.255")
    gurux_wrapper.read(ldn, 2)
    assert bytes(ldn.value) == b"OSS0000000012345"


def test_gurux_reads_load_profile_by_range(gurux_wrapper: GuruxSession, meter: SimulatedDlmsMeter) -> None:
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    gurux_wrapper.read(pg, 3)  # capture objects
    assert [c[0].logicalName for c in pg.captureObjects] == ["0.0.1.0.0.255", "0.0.96.10.1.255", "1.0.1.8.0.255"]
    start = dt.datetime(2026, 11, 21, 10, tzinfo=TR)
    end = dt.datetime(2026, 11, 21, 13, tzinfo=TR)
    reply = gurux_wrapper.run(gurux_wrapper.client.readRowsByRange(pg, start, end))
    gurux_wrapper.client.updateValue(pg, 2, reply.value)
    rows = pg.buffer
    assert [_as_datetime(r[0]) for r in rows] == [dt.datetime(2026, 11, 21, h, tzinfo=TR) for h in (10, 11, 12, 13)]
    assert [int(r[2]) for r in rows] == [meter.energy.registers(_as_datetime(r[0]))[0] for r in rows]

    whole = GXDLMSProfileGeneric("1.0.99.1.0.255")
    whole.captureObjects = pg.captureObjects
    gurux_wrapper.read(whole, 2)  # 169 rows: Gurux follows our block transfer
    assert len(whole.buffer) == 7 * 24 + 1  # hourly rows + the power-cut entry


def test_gurux_remote_disconnect(gurux_wrapper: GuruxSession, meter: SimulatedDlmsMeter) -> None:
    dc = GXDLMSDisconnectControl("0.0.96.3.10.255")
    gurux_wrapper.run(dc.remoteDisconnect(gurux_wrapper.client))
    assert meter.disconnector.control_state == 0
    gurux_wrapper.read(dc, 2)
    assert dc.outputState is False


def test_gurux_read_list(gurux_wrapper: GuruxSession, meter: SimulatedDlmsMeter) -> None:
    regs = [GXDLMSRegister(f"1.0.1.8.{t}.255") for t in range(5)]
    for r in regs:
        gurux_wrapper.read(r, 3)
    batches = gurux_wrapper.client.readList([(r, 2) for r in regs])  # one list of messages per batch
    assert len(batches) == 1
    reply = gurux_wrapper.run(batches[0])
    gurux_wrapper.client.updateValues([(r, 2) for r in regs], reply.value)
    assert [int(round(r.value * 10)) for r in regs] == meter.registers()


def test_gurux_reads_the_object_list(gurux_wrapper: GuruxSession, meter: SimulatedDlmsMeter) -> None:
    reply = gurux_wrapper.run(gurux_wrapper.client.getObjectsRequest())
    objects = gurux_wrapper.client.parseObjects(reply.data, True)
    found = {(int(o.objectType), o.logicalName) for o in objects}
    assert (8, "0.0.1.0.0.255") in found
    assert (70, "0.0.96.3.10.255") in found
    assert (7, "1.0.99.1.0.255") in found
    assert len(objects) == len(meter.objects)


def test_gurux_hls_gmac_with_ciphering(meter: SimulatedDlmsMeter) -> None:
    from gurux_dlms.enums import Security
    from gurux_dlms.secure import GXDLMSSecureClient

    client = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER)
    client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    client.ciphering.systemTitle = b"GRX00001"
    client.ciphering.blockCipherKey = EK
    client.ciphering.authenticationKey = AK
    with WrapperServer(meter) as srv:
        s = GuruxSession(srv.host, srv.port, InterfaceType.WRAPPER, client)
        s.associate()
        clock = GXDLMSClock("0.0.1.0.0.255")
        s.read(clock, 2)
        assert _as_datetime(clock.time) == NOW.astimezone(TR)
        reg = GXDLMSRegister("1.0.1.8.0.255")
        s.read(reg, 3)
        s.read(reg, 2)
        assert int(round(reg.value * 10)) == meter.registers()[0]
        s.close()
    assert meter.client_ic[b"GRX00001"] >= 3  # the meter tracked Gurux's invocation counter


def test_gurux_over_hdlc(meter: SimulatedDlmsMeter) -> None:
    with HdlcTcpServer(meter) as srv:
        s = GuruxSession(srv.host, srv.port, InterfaceType.HDLC)
        s.associate()
        clock = GXDLMSClock("0.0.1.0.0.255")
        s.read(clock, 2)
        assert _as_datetime(clock.time) == NOW.astimezone(TR)
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        s.read(pg, 3)
        s.read(pg, 2)  # long answer: HDLC segments and DLMS blocks together
        assert len(pg.buffer) == 7 * 24 + 1  # hourly rows + the power-cut entry
        s.run(s.client.releaseRequest())
        s.run(s.client.disconnectRequest())
        s.sock.close()
