"""The directive interpreter against simulated meters over a real TCP socket and a real pty (HES-41..46)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from osos.field import directives as d
from osos.field.links import LinkError, LinkSpec
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import PtyMeterServer, TcpMeterServer
from osos.field.readings import bcc_ok, read_response
from osos.protocols import iec62056_21 as iec

TR = timezone(timedelta(hours=3))
T0 = datetime(2026, 6, 1, 0, 0, tzinfo=TR).astimezone(UTC)
NOW = T0 + timedelta(hours=3)
STD = d.standard_directives()
PASSWORD = "Pw7-0001"  # each simulated meter's own P1 password, configured explicitly (no built-in default)


def sim(brand_key: str, kind: str, serial: str, address: str = "") -> SimMeter:
    model = MeterModel(serial, kind, T0, load=ConstantLoad(2000), initial_wh=1_000_000)
    return SimMeter(model, brand(brand_key), address=address, password=PASSWORD)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[TcpMeterServer, SimMeter]]:
    meter = sim("makel", "kombi", "70000001")
    with TcpMeterServer([meter], clock=lambda: NOW) as server:
        yield server, meter


@pytest.fixture
def pty_pair() -> Iterator[tuple[PtyMeterServer, SimMeter]]:
    if not hasattr(os, "openpty"):
        pytest.skip("no pty on this platform")
    meter = sim("elektromed", "single-phase", "70000002")
    with PtyMeterServer([meter], clock=lambda: NOW) as server:
        yield server, meter


def run(server, name: str, **params):  # type: ignore[no-untyped-def]
    link = LinkSpec.parse(server.url).open()
    try:
        return d.Interpreter().run(STD[name], link, params)
    finally:
        link.close()


# ---------------------------------------------------------------- standard set over TCP
def test_readout_over_tcp(tcp_pair) -> None:  # covers AMR-1, HES-44
    server, meter = tcp_pair
    result = run(server, "readout", max_baud=9600)
    assert result.buffers["ident"] == b"/MKL6K700.M\r\n"
    assert result.params["baud"] == "9600" and result.params["baud_char"] == "5"  # capped by max_baud
    assert server.negotiated == [9600]
    block = iec.parse_data_block(result.buffers["data"])
    assert block.bcc_ok
    values = {line.address: line.values[0] for line in block.lines}
    total = 1_000_000 + 3 * 2000  # 3 hours at 2 kW
    assert values["1.8.0"] == iec.DataValue(f"{total // 1000:06d}.{total % 1000:03d}", "kWh")
    assert values["5.8.0"].unit == "kvarh"
    assert result.bytes_out > 0 and result.bytes_in == len(result.buffers["ident"]) + len(result.buffers["data"])


def test_meter_speed_is_used_when_the_cap_is_higher(tcp_pair) -> None:
    server, _ = tcp_pair
    result = run(server, "readout", max_baud=38400)
    assert result.params["baud"] == "19200"  # Makel announces '6'


def test_short_read_and_read_answer(tcp_pair) -> None:  # covers HES-36, HES-47
    server, meter = tcp_pair
    result = run(server, "short-read", password=PASSWORD)
    assert result.params["meter_serial"] == "70000001"
    body = read_response(meter={"flag": "MKL", "serialNumber": "70000001"}, directive=STD["short-read"],
                         result=result, read_date=NOW)
    assert body["packetClass"] == "shortRead" and body["bccOk"] is True
    assert body["data"]["id"] == "/MKL6K700.M"
    assert set(body["values"]) == {"0.9.2", "0.9.1", "1.8.0", "1.8.1", "1.8.2", "1.8.3", "F.F.0"}
    assert body["values"]["0.9.1"]["value"] == "03:00:00"
    assert body["params"] == {"baud": "19200", "baud_char": "6", "flag": "MKL", "ident": "K700.M",
                              "meter_serial": "70000001"}  # what the run captured, never the password
    assert body["data"]["rawData"].encode("latin-1") == result.buffers["data"]


def test_wrong_password_fails_at_the_auth_step(tcp_pair) -> None:
    server, _ = tcp_pair
    with pytest.raises(d.DirectiveError) as err:
        run(server, "short-read", password="nope")
    assert err.value.fail_code == d.FAIL_MISMATCH
    assert STD["short-read"]["steps"][err.value.step]["into"] == "auth"


def test_load_profile_by_range_and_time_set(tcp_pair) -> None:  # covers AMR-5, HES-35
    server, meter = tcp_pair
    result = run(server, "load-profile", password=PASSWORD, start="2606010100", end="2606010200")
    profile = iec.parse_load_profile(result.buffers["data"])
    # kombi: 15-minute periods; 01:00..02:00 inclusive = 5 rows of 2 kW * 15 min = 0.500 kWh
    assert [t for t, _ in profile.entries()] == [datetime(2026, 6, 1, 1, 0) + timedelta(minutes=15 * i)
                                                 for i in range(5)]
    assert {row[0].value for _, row in profile.entries()} == {"0.500"}
    result = run(server, "time-set", password=PASSWORD, time="12:30:00", date="26-06-02")
    assert meter.model.meter_time().replace(tzinfo=None) == datetime(2026, 6, 2, 12, 30)
    body = read_response(meter={"flag": "MKL", "serialNumber": "70000001"}, directive=STD["time-set"],
                         result=result, read_date=NOW)
    assert body["values"]["0.9.1"]["value"] == "12:30:00" and body["values"]["0.9.2"]["value"] == "26-06-02"


def test_several_meters_on_one_port_by_address() -> None:  # covers HES-38
    a = sim("viko", "single-phase", "80000001", address="80000001")
    b = sim("elektromed", "three-phase", "80000002", address="80000002")
    with TcpMeterServer([a, b], clock=lambda: NOW) as server:
        link = LinkSpec.parse(server.url).open()
        try:
            seen = {}
            for serial in ("80000002", "80000001"):
                result = d.Interpreter().run(STD["readout"], link, {"address": serial})
                block = iec.parse_data_block(result.buffers["data"])
                seen[serial] = (result.params["flag"], block.lines[0].values[0].value)
        finally:
            link.close()
    assert seen == {"80000001": ("VIK", "80000001"), "80000002": ("ELM", "80000002")}
    assert server.negotiated == [9600, 4800]


# ---------------------------------------------------------------- serial path over a pty
def test_readout_over_pty(pty_pair) -> None:  # covers AMR-1, AMR-8
    server, meter = pty_pair
    result = run(server, "readout")
    assert result.buffers["ident"] == b"/ELM5M510.2251\r\n"
    assert server.negotiated == [9600] and server.garbled_bytes == 0
    assert bcc_ok(result.buffers["data"])
    assert iec.parse_data_block(result.buffers["data"]).lines[0].values[0].value == "70000002"


def test_wrong_speed_on_a_serial_line_gives_garbage(pty_pair) -> None:  # covers AMR-1
    server, _ = pty_pair
    wrong = copy.deepcopy(STD["readout"])
    # acknowledge 9600 Bd but keep listening at 4800 Bd
    wrong["steps"][5] = {"op": "serial", "baud": 4800, "bits": 7, "parity": "E", "stop": 1}
    wrong["steps"][6]["timeout_ms"] = 2500  # the meter answers within its 1.5 s reaction time
    link = LinkSpec.parse(server.url).open()
    try:
        with pytest.raises(d.DirectiveError) as err:
            d.Interpreter().run(wrong, link, {})
    finally:
        link.close()
    assert err.value.step == 6 and err.value.fail_code == d.FAIL_TIMEOUT  # no ETX ever arrives
    assert "bytes received" in err.value.reason and "0 bytes" not in err.value.reason  # but garbage did
    assert server.garbled_bytes > 0


# ---------------------------------------------------------------- interpreter rules
class FakeLink:
    """A scripted link for rules that need no meter: answers are queued per write."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.written: list[bytes] = []
        self.settings: list[tuple[int, int, str, int]] = []
        self.bytes_in = self.bytes_out = 0
        self._pending = b""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def configure(self, baud: int, bits: int = 7, parity: str = "E", stop: int = 1) -> None:
        self.settings.append((baud, bits, parity, stop))

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.bytes_out += len(data)
        if self.answers:
            self._pending += self.answers.pop(0)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        out, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        self.bytes_in += len(out)
        return out


def directive(*steps: dict, **extra) -> dict:  # type: ignore[type-arg]
    return {"name": "t", "steps": list(steps), **extra}


def test_parameters_hex_bcc_capture_and_set() -> None:
    link = FakeLink([b"SERIAL=12AB;\r\n"])
    doc = directive(
        {"op": "set", "param": "cmd", "value": "R1"},
        {"op": "send", "text": "\x01${cmd}\x02${reg}()\x03", "bcc": True},
        {"op": "expect", "until": "\n", "into": "ans"},
        {"op": "capture", "from": "ans", "regex": "SERIAL=(\\w+);", "param": "serial"},
        {"op": "send", "hex": "06${code}"},
        params={"reg": "1.8.0", "code": "3035"},
    )
    result = d.Interpreter(sleep=lambda s: None).run(doc, link, {})
    frame = b"\x01R1\x021.8.0()\x03"
    assert link.written[0] == frame + bytes([iec.bcc(frame)])
    assert link.written[1] == b"\x0605"
    assert result.params["serial"] == "12AB"


def test_missing_parameter_and_timeout_and_mismatch_fail_with_codes() -> None:
    with pytest.raises(d.DirectiveError) as err:
        d.Interpreter().run(directive({"op": "send", "text": "${nope}"}), FakeLink([]), {})
    assert err.value.fail_code == d.FAIL_INVALID and err.value.step == 0
    with pytest.raises(d.DirectiveError) as err:
        d.Interpreter().run(directive({"op": "expect", "count": 3, "timeout_ms": 50}), FakeLink([]), {})
    assert err.value.fail_code == d.FAIL_TIMEOUT
    doc = directive({"op": "send", "text": "x"}, {"op": "expect", "count": 2, "match": "^OK$"})
    with pytest.raises(d.DirectiveError) as err:
        d.Interpreter().run(doc, FakeLink([b"NO"]), {})
    assert err.value.fail_code == d.FAIL_MISMATCH and err.value.step == 1


def test_finally_steps_run_after_a_failure() -> None:
    link = FakeLink([])
    doc = directive({"op": "expect", "count": 1, "timeout_ms": 10},
                    **{"finally": [{"op": "send", "text": "\x01B0\x03", "bcc": True}]})
    with pytest.raises(d.DirectiveError):
        d.Interpreter().run(doc, link, {})
    assert link.written == [b"\x01B0\x03q"]  # B0 ETX xor = 0x71


def test_wait_uses_the_injected_sleep() -> None:
    slept: list[float] = []
    d.Interpreter(sleep=slept.append).run(directive({"op": "wait", "ms": "${ms}"}), FakeLink([]), {"ms": 250})
    assert slept == [0.25]


@pytest.mark.parametrize(
    "doc",
    [
        {"steps": [{"op": "wait", "ms": 1}]},  # no name
        {"name": "x", "steps": []},  # no step
        {"name": "x", "steps": [{"op": "jump"}]},  # unknown op
        {"name": "x", "steps": [{"op": "send"}]},  # neither text nor hex
        {"name": "x", "steps": [{"op": "send", "text": "a", "hex": "00"}]},  # both
        {"name": "x", "steps": [{"op": "expect", "timeout_ms": 5}]},  # no end condition
        {"name": "x", "steps": [{"op": "serial", "baud": "fast"}]},
        {"name": "x", "steps": [{"op": "capture", "from": "a", "regex": "("}]},  # bad regex
        {"name": "x", "steps": [{"op": "send", "hex": "0G"}]},
        "not an object",
    ],
)
def test_schema_rejects_bad_directives(doc) -> None:  # covers HES-44
    with pytest.raises(d.DirectiveError):
        d.validate(doc)


def test_standard_set_is_valid_and_complete() -> None:  # covers HES-45
    assert set(STD) == {"readout", "short-read", "load-profile", "load-profile-2", "time-set", "break"}


def test_link_urls() -> None:
    assert LinkSpec.parse("tcp://10.0.0.5:7000?address=123") == LinkSpec("tcp", "10.0.0.5:7000", "123")
    assert LinkSpec.parse("serial:///dev/ttyUSB0") == LinkSpec("serial", "/dev/ttyUSB0", "")
    for bad in ("udp://x:1", "tcp://nohost", "serial://"):
        with pytest.raises(LinkError):
            LinkSpec.parse(bad)
    with pytest.raises(LinkError):
        LinkSpec.parse("serial:///dev/does-not-exist-osos").open()


def test_gateway_discovers_meters_given_only_by_link(tmp_path) -> None:  # covers AMR-7, HES-9
    from osos.field.gateway import Gateway, GatewayConfig, MeterConfig

    meter = sim("viko", "three-phase", "81234567", address="81234567")
    with TcpMeterServer([meter], clock=lambda: NOW) as server:
        config = MeterConfig(link=f"{server.url}?address=81234567")
        gw = Gateway(GatewayConfig(flag="OSS", serial="1", data_dir=tmp_path), [config])
        try:
            gw.discover()
        finally:
            gw.stop()
    assert (config.flag, config.serial, config.model) == ("VIK", "81234567", "VEM-T31")


@pytest.mark.parametrize("name", ["readout", "short-read", "load-profile", "load-profile-2", "time-set"])
def test_head_end_accepts_what_the_gateway_sends(tcp_pair, name) -> None:  # covers HES-6, HES-47
    from osos.headend.interpret import interpret
    from osos.protocols import mass

    server, meter = tcp_pair
    result = run(server, name, password=PASSWORD, time="03:00:00", date="26-06-01", start="", end="")
    body = read_response(meter={"flag": "MKL", "serialNumber": "70000001"}, directive=STD[name], result=result,
                         read_date=NOW)
    device = mass.Device("OSS", "0000000001")
    topics = mass.Topics()
    verdict = interpret(mass.encode(mass.make("read", device, response=body)), topics.uplink(device), topics, NOW)
    assert verdict.status == "ok", verdict.error
    assert (verdict.reading.flag, verdict.reading.serial) == ("MKL", "70000001")


def test_unreachable_unidentified_meter_is_left_out_until_known(tmp_path) -> None:
    from osos.field.gateway import Gateway, GatewayConfig, MeterConfig

    known = MeterConfig(link="tcp://127.0.0.1:9?address=1", flag="ELM", serial="1")
    unknown = MeterConfig(link="tcp://127.0.0.1:9?address=2")  # port 9: nobody listens
    gw = Gateway(GatewayConfig(flag="OSS", serial="1", data_dir=tmp_path), [known, unknown])
    try:
        assert [m["serialNumber"] for m in gw.identification()["meters"]] == ["1"]
        assert gw._identified(unknown) is False and gw._identified(known) is True
    finally:
        gw.stop()
