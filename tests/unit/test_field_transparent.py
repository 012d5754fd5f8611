"""Transparent reading (HES-42): the head-end drives the meter itself through a gateway's TCP port."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from osos.field.directives import Interpreter, standard_directives
from osos.field.links import LinkSpec
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import PtyMeterServer, TcpMeterServer
from osos.field.transparent import TransparentPort
from osos.protocols import iec62056_21 as iec

T0 = datetime(2026, 2, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
READOUT = standard_directives()["readout"]


def sim(brand_key: str, kind: str, serial: str) -> SimMeter:
    return SimMeter(MeterModel(serial, kind, T0, load=ConstantLoad(500)), brand(brand_key))


def test_raw_relay_to_a_tcp_meter() -> None:
    meter = sim("viko", "three-phase", "60000001")
    lock = threading.Lock()
    with TcpMeterServer([meter], clock=lambda: NOW) as server:
        bridge = TransparentPort(LinkSpec.parse(server.url), 0, lock).start()
        try:
            assert bridge.protocol == "raw" and bridge.url.startswith("tcp://")
            link = LinkSpec.parse(bridge.url).open()
            try:
                result = Interpreter().run(READOUT, link, {})
                assert lock.locked()  # the gateway's own reads of this line wait meanwhile
            finally:
                link.close()
        finally:
            bridge.stop()
    block = iec.parse_data_block(result.buffers["data"])
    assert block.lines[0].values[0].value == "60000001"
    assert server.negotiated == [4800]


def test_rfc2217_carries_the_speed_switch_to_a_serial_line() -> None:  # covers HES-42, AMR-1
    meter = sim("elektromed", "single-phase", "60000002")
    released: list[bool] = []
    with PtyMeterServer([meter], clock=lambda: NOW) as server:
        spec = LinkSpec.parse(server.url)
        bridge = TransparentPort(spec, 0, threading.Lock(), before_session=lambda: released.append(True)).start()
        try:
            assert bridge.protocol == "rfc2217"
            link = LinkSpec.parse(bridge.url).open()
            try:
                result = Interpreter().run(READOUT, link, {})
            finally:
                link.close()
        finally:
            bridge.stop()
    assert released == [True]
    # the meter saw the reader's line move to 9600 Bd through RFC 2217, and nothing was garbled
    assert server.negotiated == [9600] and server.garbled_bytes == 0
    assert iec.parse_data_block(result.buffers["data"]).bcc_ok


def test_idle_client_is_dropped() -> None:
    meter = sim("makel", "kombi", "60000003")
    lock = threading.Lock()
    with TcpMeterServer([meter], clock=lambda: NOW) as server:
        bridge = TransparentPort(LinkSpec.parse(server.url), 0, lock, idle_timeout_s=0.3).start()
        try:
            with socket.create_connection((bridge.host, bridge.port)):
                deadline = time.monotonic() + 2
                while not lock.locked() and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert lock.locked()
                deadline = time.monotonic() + 3
                while lock.locked() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not lock.locked()  # released without the client doing anything
        finally:
            bridge.stop()
