"""Transparent mode from the head-end side (HES-42, HES-43): the head-end opens a gateway's transparent socket
through MASS ``configuration`` over the real Mosquitto, then runs an IEC 62056-21 readout and a DLMS association
through it. Expected values come from the simulators' state.

covers HES-42, HES-43, HES-41, AMR-7
"""

from __future__ import annotations

import datetime as dt
import socket
from decimal import Decimal

import pytest

from osos.field import dlms_client as C
from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.headend.transparent import TransparentClient, TransparentError, iec_readout
from osos.protocols import mass

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_headend_opens_the_socket_and_reads_iec_and_dlms_through_it(mqtt_broker, topic_prefix, tmp_path) -> None:
    host = mqtt_broker.host
    creds = mqtt_broker.device(topic_prefix, "OSS", "GWTRANS1")
    iec = SimMeter(MeterModel("30000001", "single-phase", T0, load=ConstantLoad(500), initial_wh=1_000_000),
                   brand("viko"), address="30000001")
    dlms = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=b"12345678"))
    with TcpMeterServer([iec], clock=lambda: NOW) as iec_srv, WrapperServer(dlms) as dlms_srv:
        links = sorted([f"{iec_srv.url}?address=30000001", f"tcp://127.0.0.1:{dlms_srv.port}"])
        configs = [MeterConfig(link=link, flag="VIK" if "address" in link else "OSS",
                               serial="30000001" if "address" in link else "00012345",
                               protocol="iec62056-21" if "address" in link else "dlms") for link in links]
        gw = Gateway(GatewayConfig(flag="OSS", serial="GWTRANS1", data_dir=tmp_path / "gw", topic_root=topic_prefix,
                                   heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds)),
                     configs, clock=lambda: NOW)
        with gw:
            assert gw.connected.wait(10)
            mqtt_broker.headend_role_for(topic_prefix)
            client = TransparentClient(host, mqtt_broker.tls_port, mass.Topics(topic_prefix),
                                       mass.Device("OSS", "GWTRANS1"), username=mqtt_broker.headend_username,
                                       password=mqtt_broker.headend_password, ca=mqtt_broker.ca)
            iec_id = 1 + next(i for i, c in enumerate(configs) if c.protocol == "iec62056-21")
            dlms_id = 1 + next(i for i, c in enumerate(configs) if c.protocol == "dlms")

            iec_port = client.open(iec_id, free_port())
            body = iec_readout("127.0.0.1", iec_port, address="30000001", max_baud=4800)
            assert body["bccOk"] is True
            # 1 000 000 Wh + 500 W for 3 h, printed by the Viko brand in kWh
            assert Decimal(body["values"]["1.8.0"]["value"]) == Decimal(1_000_000 + 500 * 3) / 1000

            dlms_port = client.open(dlms_id, free_port())
            with C.DlmsClient(C.WrapperTransport("127.0.0.1", dlms_port, 32),
                              C.Security("lls", password=b"12345678")) as meter:
                value, unit = meter.read_register("1.0.1.8.0.255")
            assert (value, unit) == (Decimal(dlms.registers()[0]) / 10, "Wh")

            client.close(iec_id)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", iec_port), timeout=2).close()
            with pytest.raises(TransparentError, match="refused: 14"):
                client.configure(99, 7000)  # no such serial port: negative ack 14
