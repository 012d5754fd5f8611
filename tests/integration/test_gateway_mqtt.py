"""The gateway agent end to end against the real Mosquitto (HES-22, HES-26, HES-34, HES-38, HES-41..49, AMR-6)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from osos.field.gateway import (
    FAIL_BAD_DIRECTIVE,
    FAIL_UNKNOWN_DIRECTIVE,
    FAIL_UNKNOWN_METER,
    FAIL_UNSUPPORTED,
    Gateway,
    GatewayConfig,
    MeterConfig,
)
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer
from osos.protocols import mass

pytestmark = pytest.mark.integration

T0 = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)


@dataclass
class Received:
    topic: str
    body: dict[str, Any]
    props: dict[str, str]


class Listener:
    """A paho subscriber with the head-end's account on the test's topic root, recording uplinks in arrival order."""

    def __init__(self, broker: Any, root: str) -> None:
        self.items: queue.Queue[Received] = queue.Queue()
        self.seen: list[Received] = []
        self.client = broker.headend_client(root)  # the head-end's account: it sees every uplink
        self.client.on_message = self._on_message
        for topic in broker.headend_filters(root):
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        body = json.loads(msg.payload)
        if "request" in body:
            return  # our own downlink requests echo back on the shared root; only uplink matters here
        props = dict(getattr(msg.properties, "UserProperty", []) or []) if msg.properties else {}
        self.items.put(Received(msg.topic, body, props))

    def wait_for(self, pred: Callable[[Received], bool], timeout: float = 10.0) -> Received:
        for item in self.seen:
            if pred(item):
                return item
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.items.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            self.seen.append(item)
            if pred(item):
                return item
        raise AssertionError(f"no matching message within {timeout} s; saw {[r.body['function'] for r in self.seen]}")

    def uplink(self, ref: str) -> list[Received]:
        return [r for r in self.seen if r.body["referenceId"] == ref]

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sim(brand_key: str, kind: str, serial: str) -> SimMeter:
    model = MeterModel(serial, kind, T0, load=ConstantLoad(1000), initial_wh=2_000_000)
    return SimMeter(model, brand(brand_key), address=serial)


def meter_config(server: TcpMeterServer, m: SimMeter) -> MeterConfig:
    return MeterConfig(link=f"{server.url}?address={m.address}", flag=m.brand.flag, serial=m.serial,
                       brand=m.brand.name, model=m.brand.models[m.kind], kind=m.kind, password=m.password,
                       max_baud=m.brand.max_baud, date_format=m.brand.date_format)


@pytest.fixture
def bus() -> Iterator[tuple[TcpMeterServer, list[SimMeter]]]:
    meters = [sim("elektromed", "three-phase", "10000001"), sim("makel", "kombi", "10000002")]
    clock = [T0 + timedelta(hours=2)]
    with TcpMeterServer(meters, clock=lambda: clock[0]) as server:
        yield server, meters


def make_gateway(tmp_path, mqtt_broker, topic_prefix, configs, **kw) -> Gateway:  # type: ignore[no-untyped-def]
    creds = mqtt_broker.device(topic_prefix, "OSS", "0000000001")
    config = GatewayConfig(flag="OSS", serial="0000000001", data_dir=tmp_path / "gw", topic_root=topic_prefix,
                           heartbeat_interval_s=3600, **mqtt_broker.gateway_kwargs(creds), **kw)
    return Gateway(config, configs, clock=lambda: T0 + timedelta(hours=2))


def request(gw: Gateway, function: str, ref: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return gw.topics.downlink(gw.device), mass.make(function, gw.device, reference_id=ref, request=body)


def test_identification_reads_and_directives_over_mqtt5(tmp_path, mqtt_broker, topic_prefix, bus) -> None:
    server, meters = bus
    listener = Listener(mqtt_broker, topic_prefix)
    gw = make_gateway(tmp_path, mqtt_broker, topic_prefix, [meter_config(server, m) for m in meters])
    try:
        gw.start()
        # HES-22/26/48: joins with its identification, the meters behind it included
        ident = listener.wait_for(lambda r: r.body["function"] == "identification")
        assert ident.topic == f"{topic_prefix}/device/OSS/0000000001/to_server"
        body = ident.body["response"]
        for key in ("brand", "model", "protocolVersion", "firmware", "manufactureDate", "imei", "deviceType",
                    "communicationType", "ip", "signal", "deviceDate", "timezone", "serialPorts", "ioInterfaces",
                    "mqttPrefix", "meters"):
            assert key in body
        assert body["mqttPrefix"] == topic_prefix and body["timezone"] == "+03:00"
        assert [(m["flag"], m["serialNumber"], m["kind"], m["frame"]) for m in body["meters"]] == [
            ("ELM", "10000001", "three-phase", "7E1"), ("MKL", "10000002", "kombi", "7E1")]
        assert ident.props == {"device.flag": "OSS", "device.serialNumber": "0000000001",
                               "function": "identification", "referenceId": ident.body["referenceId"]}
        mass.decode(json.dumps(ident.body).encode())  # the lead's envelope schema accepts it

        # HES-41/47: a read of every meter behind the gateway -> ack first, then one answer per meter
        listener.publish(*request(gw, "read", "ref-all", {"directive": "readout"}))
        listener.wait_for(lambda r: r.body["referenceId"] == "ref-all" and r.body["function"] == "read"
                          and r.body["response"]["meter"]["serialNumber"] == "10000002")
        answers = listener.uplink("ref-all")
        assert [a.body["function"] for a in answers] == ["ack", "read", "read"]
        assert "response" not in answers[0].body  # a positive ack carries no failCode
        first, second = (a.body["response"] for a in answers[1:])
        assert first["meter"] == {"flag": "ELM", "serialNumber": "10000001"}
        assert first["packetClass"] == "longRead" and first["bccOk"] is True
        assert first["data"]["id"] == "/ELM5T510.2251"
        assert first["data"]["rawData"].startswith("\x02") and first["data"]["rawData"][-2] == "\x03"
        assert first["values"]["1.8.0"] == {"value": "002002.000", "unit": "kWh"}  # 2 MWh + 2 h at 1 kW
        assert second["values"]["5.8.0"]["unit"] == "kvarh"
        assert first["readDate"] == "2026-07-01 08:00:00" and first["timezone"] == "+00:00"

        # one meter only, by serial, with an explicit packet class
        listener.publish(*request(gw, "read", "ref-one", {"directive": "short-read", "packetClass": "shortRead",
                                                           "meter": {"flag": "MKL", "serialNumber": "10000002"}}))
        one = listener.wait_for(lambda r: r.body["referenceId"] == "ref-one" and r.body["function"] == "read")
        assert one.body["response"]["values"]["1.8.0"]["value"] == "002002.000"
        assert len([a for a in listener.uplink("ref-one") if a.body["function"] == "read"]) == 1

        # refusals are negative acks with failCode / failDescrition
        for ref, req, code in (
            ("ref-bad1", {"directive": "no-such"}, FAIL_UNKNOWN_DIRECTIVE),
            ("ref-bad2", {"directive": "readout", "meter": {"serialNumber": "99"}}, FAIL_UNKNOWN_METER),
            ("ref-bad3", {"directive": {"name": "x", "steps": [{"op": "jump"}]}}, FAIL_BAD_DIRECTIVE),
        ):
            listener.publish(*request(gw, "read", ref, req))
            nack = listener.wait_for(lambda r, ref=ref: r.body["referenceId"] == ref)
            assert nack.body["function"] == "ack" and nack.body["messageStatus"] == "fail"
            assert nack.body["response"]["failCode"] == code and nack.body["response"]["failDescrition"]
        listener.publish(*request(gw, "relay", "ref-relay", {"relay": "relay-1", "state": "off"}))
        assert listener.wait_for(lambda r: r.body["referenceId"] == "ref-relay").body["response"]["failCode"] == \
            FAIL_UNSUPPORTED

        # HES-44..46: the directive library is managed at run time
        custom = {"name": "clock-only", "packetClass": "shortRead", "output": {"id": "ident", "rawData": "data",
                  "kind": "messages"},
                  "steps": [{"op": "serial", "baud": 300}, {"op": "send", "text": "/?${address}!\r\n"},
                            {"op": "expect", "until": "\n", "into": "ident"},
                            {"op": "baud_from_ident", "max": 9600},
                            {"op": "send", "text": "\u00060${baud_char}1\r\n"}, {"op": "serial", "baud": "${baud}"},
                            {"op": "expect", "etx_bcc": True, "into": "p0"},
                            {"op": "send", "text": "\u0001P1\u0002(${password})\u0003", "bcc": True},
                            {"op": "expect", "etx_bcc": True, "match": "^\u0006$"},
                            {"op": "send", "text": "\u0001R1\u00020.9.1()\u0003", "bcc": True},
                            {"op": "expect", "etx_bcc": True, "into": "data"}],
                  "finally": [{"op": "send", "text": "\u0001B0\u0003", "bcc": True}]}
        listener.publish(*request(gw, "directive", "ref-add", {"operation": "add", "directive": custom}))
        added = listener.wait_for(lambda r: r.body["referenceId"] == "ref-add" and r.body["function"] == "directive")
        assert added.body["response"] == {"operation": "add", "name": "clock-only", "result": "ok"}
        listener.publish(*request(gw, "directive", "ref-list", {"operation": "list"}))
        listed = listener.wait_for(lambda r: r.body["referenceId"] == "ref-list" and r.body["function"] == "directive")
        names = {e["name"]: e["standard"] for e in listed.body["response"]["directives"]}
        assert names == {"break": True, "load-profile": True, "load-profile-2": True, "readout": True,
                         "short-read": True, "time-set": True, "clock-only": False}
        listener.publish(*request(gw, "read", "ref-custom", {"directive": "clock-only",
                                                             "meter": {"serialNumber": "10000001"}}))
        clock = listener.wait_for(lambda r: r.body["referenceId"] == "ref-custom" and r.body["function"] == "read")
        assert clock.body["response"]["values"] == {"0.9.1": {"value": "11:00:00", "unit": None}}  # UTC+3
        assert json.loads((tmp_path / "gw" / "directives.json").read_text())[0]["name"] == "clock-only"
        listener.publish(*request(gw, "directive", "ref-rm", {"operation": "remove", "name": "clock-only"}))
        listener.wait_for(lambda r: r.body["referenceId"] == "ref-rm" and r.body["function"] == "directive")
        listener.publish(*request(gw, "read", "ref-gone", {"directive": "clock-only"}))
        assert listener.wait_for(lambda r: r.body["referenceId"] == "ref-gone").body["response"]["failCode"] == \
            FAIL_UNKNOWN_DIRECTIVE
    finally:
        gw.stop()
        listener.close()


def test_push_reads_alarms_and_failures_on_mqtt311(tmp_path, mqtt_broker, topic_prefix, bus) -> None:
    server, meters = bus
    listener = Listener(mqtt_broker, topic_prefix)
    configs = [meter_config(server, m) for m in meters]
    configs.append(MeterConfig(link="tcp://127.0.0.1:9?address=1", flag="VIK", serial="10000003"))  # nobody there
    gw = make_gateway(tmp_path, mqtt_broker, topic_prefix, configs, mqtt_protocol="v311", read_interval_s=0.5)
    try:
        gw.start()
        push = listener.wait_for(lambda r: r.body["function"] == "read" and r.body.get("response", {}).get("push"))
        assert push.props == {}  # MQTT 3.1.1: the JSON header alone carries the routing
        assert push.body["response"]["packetClass"] == "shortRead"
        fail = listener.wait_for(lambda r: r.body["function"] == "read" and r.body.get("messageStatus") == "fail")
        assert fail.body["response"]["meter"] == {"flag": "VIK", "serialNumber": "10000003"}
        assert fail.body["response"]["failCode"] == 1 and "step" in fail.body["response"]

        # AMR-6 / HES-24: a top cover opening is pushed as an alarm on the emergency topic
        with meters[1].lock:
            meters[1].model.open_top_cover(meters[1].model.now)
        alarm = listener.wait_for(lambda r: r.body["function"] == "alarm")
        assert alarm.topic == f"{topic_prefix}/device/OSS/0000000001/emergency"
        (entry,) = alarm.body["response"]
        assert (entry["type"], entry["incidentCode"], entry["meter"]["serialNumber"]) == ("topCoverOpen", 6,
                                                                                          "10000002")
        refs = {r.body["referenceId"] for r in listener.seen if r.body["function"] == "read"
                and r.body["response"].get("push")}
        assert len(refs) >= 2  # every push has its own fresh referenceId
    finally:
        gw.stop()
        listener.close()


def test_transparent_port_and_its_configuration(tmp_path, mqtt_broker, topic_prefix, bus) -> None:
    # covers HES-42 (transparent reading through the gateway), HES-43 (its port changed through MASS)
    import socket

    from osos.field.directives import Interpreter, standard_directives
    from osos.field.links import LinkSpec
    from osos.protocols import iec62056_21 as iec

    server, meters = bus
    listener = Listener(mqtt_broker, topic_prefix)
    gw = make_gateway(tmp_path, mqtt_broker, topic_prefix, [meter_config(server, m) for m in meters],
                      transparent_base_port=0)

    def read_through(port: int, address: str) -> str:
        link = LinkSpec.parse(f"tcp://127.0.0.1:{port}").open()
        try:
            result = Interpreter().run(standard_directives()["readout"], link, {"address": address})
        finally:
            link.close()
        return iec.parse_data_block(result.buffers["data"]).lines[0].values[0].value

    try:
        gw.start()
        ident = listener.wait_for(lambda r: r.body["function"] == "identification")
        (port_entry,) = ident.body["response"]["serialPorts"]  # both meters share one bus
        assert port_entry["transparentProtocol"] == "raw" and port_entry["transparentPort"] > 0
        assert read_through(port_entry["transparentPort"], "10000002") == "10000002"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            new_port = s.getsockname()[1]
        listener.publish(*request(gw, "configuration", "ref-cfg", {"serialPorts": [
            {"id": 1, "transparentPort": new_port}]}))
        answer = listener.wait_for(lambda r: r.body["referenceId"] == "ref-cfg"
                                   and r.body["function"] == "configuration")
        assert answer.body["response"]["serialPorts"][0]["transparentPort"] == new_port
        assert read_through(new_port, "10000001") == "10000001"
        listener.publish(*request(gw, "configuration", "ref-bad", {"serialPorts": [{"id": 7,
                                                                                     "transparentPort": 1}]}))
        assert listener.wait_for(lambda r: r.body["referenceId"] == "ref-bad").body["messageStatus"] == "fail"
    finally:
        gw.stop()
        listener.close()


def test_last_will_raises_a_power_loss_alarm(tmp_path, mqtt_broker, topic_prefix) -> None:  # covers HES-24
    import socket

    listener = Listener(mqtt_broker, topic_prefix)
    gw = make_gateway(tmp_path, mqtt_broker, topic_prefix, [])
    try:
        gw.start()
        listener.wait_for(lambda r: r.body["function"] == "identification")
        # the line drops without an MQTT DISCONNECT; under load paho may be between sockets (a TLS reconnect):
        # then wait for the live one
        deadline = time.monotonic() + 15
        while True:
            try:
                gw._client.socket().shutdown(socket.SHUT_RDWR)
                break
            except (OSError, AttributeError):
                if time.monotonic() > deadline:
                    raise
                gw.connected.wait(1)
                time.sleep(0.1)
        alarm = listener.wait_for(lambda r: r.body["function"] == "alarm", timeout=15)
        assert alarm.topic == f"{topic_prefix}/device/OSS/0000000001/emergency"
        assert alarm.body["response"][0]["type"] == "powerLoss"
        # the gateway comes back by itself and says so with a new identification
        listener.wait_for(lambda r: r.body["function"] == "identification"
                          and r.body["referenceId"] != listener.seen[0].body["referenceId"], timeout=15)
    finally:
        gw.stop()
        listener.close()
