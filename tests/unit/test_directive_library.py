"""Generated directives (AMR-7, HES-44..46) run by the real interpreter against simulated meters over TCP:
DLMS (wrapper) and Modbus RTU. Expected values come from the simulators' own state. # covers AMR-7, HES-40"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pytest

from osos.field.directive_library import directives_for
from osos.field.directives import DirectiveError, Interpreter
from osos.field.links import TcpLink
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer
from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer
from osos.field.readings import read_response
from osos.protocols import modbus as M
from osos.protocols.meter_answers import decode_answer

NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)
PASSWORD = b"12345678"


def _run(doc: dict, port: int, params: dict[str, str]):  # type: ignore[no-untyped-def]
    link = TcpLink("127.0.0.1", port)
    link.open()
    try:
        return Interpreter(sleep=lambda s: None).run(doc, link, params)
    finally:
        link.close()


def test_dlms_short_read_reads_every_register_exactly() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    lib = directives_for("osos-sim-dlms")
    with WrapperServer(meter) as srv:
        result = _run(lib["short-read"], srv.port, {"password": PASSWORD.decode()})
    body = read_response(
        meter={"flag": "OSS", "serialNumber": "1"}, directive=lib["short-read"], result=result, read_date=NOW
    )
    assert body["data"]["protocol"] == "dlms"
    regs = meter.registers()  # units of 0.1 Wh (simulated_meter.toml: scaler -1, unit 30 = Wh)
    decoded = {v.name: v for v in decode_answer("dlms", body["data"]["rawHex"], body["data"]["records"]).values}
    for tariff in range(5):
        v = decoded[f"1.0.1.8.{tariff}.255"]
        assert Decimal(v.value) == Decimal(regs[tariff]) / 10 and v.unit == "Wh"
    assert dt.datetime.fromisoformat(decoded["0.0.1.0.0.255"].value) == NOW
    assert body["values"]["1.0.1.8.0.255"]["value"] == decoded["1.0.1.8.0.255"].value


def test_dlms_relay_disconnect_then_connect_changes_the_meter() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    lib = directives_for("osos-sim-dlms")
    with WrapperServer(meter) as srv:
        off = _run(lib["relay-disconnect"], srv.port, {"password": PASSWORD.decode()})
        assert meter.disconnector.control_state == 0  # the simulator's own relay opened
        on = _run(lib["relay-connect"], srv.port, {"password": PASSWORD.decode()})
        assert meter.disconnector.control_state == 1
    for result, expected in ((off, "disconnected"), (on, "connected")):
        values = decode_answer("dlms", result.buffers["data"].hex(), result.records).values
        assert [(v.name, v.value) for v in values] == [("0.0.96.3.10.255", expected)]


def test_dlms_time_set_moves_the_meter_clock() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    lib = directives_for("osos-sim-dlms")
    target = dt.datetime(2026, 3, 10, 15, 45, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    with WrapperServer(meter) as srv:
        result = _run(lib["time-set"], srv.port, {"password": PASSWORD.decode(), "now": target.isoformat()})
    assert meter.local_now() == target  # 12:45 UTC = 15:45 +03:00
    (clock,) = decode_answer("dlms", result.buffers["data"].hex(), result.records).values
    assert dt.datetime.fromisoformat(clock.value) == target


def test_dlms_load_profile_by_range_gives_hourly_rows_scaled_exactly() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    lib = directives_for("osos-sim-dlms")
    start, end = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC), dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.UTC)
    with WrapperServer(meter) as srv:
        result = _run(
            lib["load-profile"],
            srv.port,
            {"password": PASSWORD.decode(), "start": start.isoformat(), "end": end.isoformat()},
        )
    rows = decode_answer("dlms", result.buffers["data"].hex(), result.records).profile
    hours = [start + dt.timedelta(hours=h) for h in range(4)]
    assert [dt.datetime.fromisoformat(r["time"]) for r in rows] == hours
    for row, when in zip(rows, hours, strict=True):
        expected = Decimal(meter.energy.registers(when.astimezone(meter.tz))[0]) / 10
        cell = row["values"]["1.0.1.8.0.255"]
        assert Decimal(cell["value"]) == expected and cell["unit"] == "Wh"


def test_dlms_wrong_password_fails_with_protocol_code() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    with WrapperServer(meter) as srv, pytest.raises(DirectiveError) as err:
        _run(directives_for("osos-sim-dlms")["short-read"], srv.port, {"password": "wrong"})
    assert err.value.fail_code == 7 and "rejected" in err.value.reason


def test_modbus_short_read_over_rtu_matches_the_analyzer_words() -> None:
    regmap = M.load_map("eastron-sdm630")
    sim = SimulatedAnalyzer(regmap, seed=3, unit=1, clock=lambda: NOW)
    lib = directives_for("eastron-sdm630")
    with AnalyzerServer([sim], framer="rtu") as server:
        result = _run(lib["short-read"], server.port, {})
    held = sim.words_at(NOW)
    decoded = {v.name: v for v in decode_answer("modbus", result.buffers["data"].hex(), result.records).values}
    for name in ("voltage_l1_n", "frequency", "active_energy_import"):
        reg = regmap.register(name)
        raw = struct.pack(">HH", held[reg.reference], held[reg.reference + 1])
        assert Decimal(decoded[name].value) == M.float32_to_decimal(raw), name
    assert decoded["active_energy_import"].unit == regmap.register("active_energy_import").unit


class MBusSlave:
    """A wired M-Bus meter written here from EN 13757-2/-3 (not the project's codec): E5 to SND_NKE, then two
    RSP_UD long frames, the first ending in DIF 1F ("more records follow")."""

    def __init__(self, frames: list[bytes]) -> None:
        import socket
        import threading

        self.frames, self.requests = frames, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            sent = 0
            while True:
                req = b""
                while len(req) < 5:
                    chunk = conn.recv(5 - len(req))
                    if not chunk:
                        return
                    req += chunk
                assert req[0] == 0x10 and req[4] == 0x16 and (req[1] + req[2]) & 0xFF == req[3]
                self.requests.append(req[1])
                if req[1] == 0x40:
                    conn.sendall(b"\xe5")
                else:
                    conn.sendall(self.frames[sent])
                    sent += 1

    def close(self) -> None:
        self.sock.close()


def long_frame(records: bytes) -> bytes:
    # C=08 RSP_UD, A=05, CI=72; header id 12345678 (BCD), manufacturer 2C2D (KAM), version 1, medium 07 water,
    # access 55, status 00, signature 0000
    user = bytes.fromhex("080572785634122D2C010755000000") + records
    return bytes([0x68, len(user), len(user), 0x68]) + user + bytes([sum(user) & 0xFF, 0x16])


def test_mbus_req_ud2_follows_more_records_with_a_toggled_fcb() -> None:
    first = long_frame(bytes.fromhex("0C13785634121F"))  # volume 12345.678 m3, more records follow
    second = long_frame(bytes.fromhex("4C1344332211"))  # DIF 4C: storage 1, 11223344 m3 x 10^-3
    slave = MBusSlave([first, second])
    try:
        result = _run(directives_for("generic-mbus")["readout"], slave.port, {"primary": "5"})
    finally:
        slave.close()
    assert slave.requests == [0x40, 0x5B, 0x7B]  # SND_NKE, REQ_UD2 (5B), next telegram with FCB toggled (7B)
    assert result.buffers["data"] == first + second
    values = {
        v.name: (v.value, v.unit) for v in decode_answer("mbus", result.buffers["data"].hex(), result.records).values
    }
    assert values == {"Volume": ("12345.678", "m^3"), "Volume.s1": ("11223.344", "m^3")}


def test_dlms_short_read_under_hls_gmac_recovers_a_stale_invocation_counter() -> None:
    """The gateway's DLMS ops associate with HLS-GMAC (suite 0) from keys it holds; when its invocation counter is
    behind the meter's, it reads the meter's counter through the public client and retries."""
    ek, ak = bytes(range(16)), bytes(range(16, 32))
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD, ek=ek, ak=ak))
    lib = directives_for("osos-sim-dlms")
    params = {"auth": "hls-gmac", "client_sap": "1", "ek": ek.hex(), "ak": ak.hex(), "invocation_counter": "1"}
    with WrapperServer(meter) as srv:
        first = _run(lib["short-read"], srv.port, params)
        after_first = max(meter.client_ic.values())
        second = _run(lib["short-read"], srv.port, params)  # starts at 1 again: behind the meter by now
    assert after_first >= 1 and max(meter.client_ic.values()) > after_first  # the second run jumped ahead
    regs = meter.registers()
    for result in (first, second):
        body = read_response(
            meter={"flag": "OSS", "serialNumber": "1"}, directive=lib["short-read"], result=result, read_date=NOW
        )
        decoded = {v.name: v for v in decode_answer("dlms", body["data"]["rawHex"], body["data"]["records"]).values}
        assert Decimal(decoded["1.0.1.8.0.255"].value) == Decimal(regs[0]) / 10
        assert "ek" not in body["params"] and "ak" not in body["params"]  # keys never go uplink


def test_dlms_hls_without_keys_is_refused_before_touching_the_meter() -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD))
    lib = directives_for("osos-sim-dlms")
    with WrapperServer(meter) as srv, pytest.raises(DirectiveError, match="16-byte ek and ak"):
        _run(lib["short-read"], srv.port, {"auth": "hls-gmac", "client_sap": "1"})
