"""The Modbus client reads the simulated analyzer over real TCP sockets, Modbus TCP and RTU over TCP
(covers HES-31, HES-32, HES-33, HES-38, HES-40, HES-42).

Expected values are computed here from the words the simulator holds, with ``struct`` (float32, ABCD) and
two's complement with the least significant word first and the manual's value weights (EM21), not with
the decoder under test.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from osos.field.links import TcpLink
from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer
from osos.field.modbus_client import ModbusClientError, ModbusExceptionResponse, PymodbusReader, open_client, read_map
from osos.protocols import modbus as M

T = datetime(2026, 11, 21, 18, 30, tzinfo=UTC)
FRAMERS = [("socket", "tcp"), ("rtu", "rtu+tcp")]


def fixed() -> datetime:
    return T


def shortest_float32(raw: bytes) -> Decimal:
    """Independent float32 -> decimal: the fewest significant digits that pack back to the same bytes."""
    value = struct.unpack(">f", raw)[0]
    for digits in range(1, 10):
        if struct.pack(">f", float(f"{value:.{digits}g}")) == raw:
            return Decimal(f"{value:.{digits}g}")
    raise AssertionError("no float32 needs more than 9 digits")


@pytest.fixture
def sdm630() -> M.RegisterMap:
    return M.load_map("eastron-sdm630")


@pytest.fixture
def em21() -> M.RegisterMap:
    return M.load_map("carlo-gavazzi-em21")


@pytest.fixture(params=FRAMERS, ids=["modbus-tcp", "rtu-over-tcp"])
def framer(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


def serve(analyzers: list[SimulatedAnalyzer], framer: str) -> AnalyzerServer:
    return AnalyzerServer(analyzers, framer=framer)


@pytest.fixture
def client_factory() -> Iterator:  # type: ignore[type-arg]
    clients = []

    def make(url: str):  # type: ignore[no-untyped-def]
        client = open_client(url)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_sdm630_float32_values_equal_struct_computation(sdm630, framer, client_factory) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(sdm630, seed=11, unit=1, clock=fixed)
    with serve([sim], framer[0]) as server:
        result = read_map(client_factory(f"{framer[1]}://127.0.0.1:{server.port}"), sdm630, unit=1)
        held = sim.words_at(T)
        assert server.requests == result.requests == len(M.plan_reads(sdm630))
    assert result.errors == {}
    for reg in sdm630.registers:
        hi, lo = held[reg.reference], held[reg.reference + 1] if reg.count > 1 else 0
        if reg.type == "float32":
            expected = shortest_float32(struct.pack(">HH", hi, lo))
        elif reg.type == "u32":
            expected = Decimal(hi << 16 | lo)
        else:
            expected = Decimal(hi)
        assert result.values[reg.name] == expected, reg.name
        assert [result.words[reg.reference + i] for i in range(reg.count)] == [held[reg.reference + i]
                                                                               for i in range(reg.count)]
    # plausible physics from the simulator, exactly decoded
    assert Decimal(200) < result.values["voltage_l1_n"] < Decimal(260)
    assert Decimal("49.9") < result.values["frequency"] < Decimal("50.1")
    assert result.values["voltage_l1_n"] == Decimal(str(result.values["voltage_l1_n"]))
    assert result.identity["model"] == "SDM630-Modbus V2"
    assert result.identity["device_id"] == "1"


def _s32_lsw_first(lsw: int, msw: int) -> int:
    value = msw << 16 | lsw
    return value - (1 << 32) if value & 0x80000000 else value


def test_em21_scaled_lsw_first_values_equal_manual_computation(em21, framer, client_factory) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(em21, seed=5, unit=7, clock=fixed)
    with serve([sim], framer[0]) as server:
        result = read_map(client_factory(f"{framer[1]}://127.0.0.1:{server.port}"), em21, unit=7)
    held = sim.words_at(T)
    assert result.errors == {}
    # EM21 protocol table 2.3-1: V L1-N at 0000h INT32 Volt*10, A L1 at 000Ch INT32 Ampere*1000,
    # PF system 0031h INT16 PF*1000, Hz 0033h INT16 Hz*10, kWh(+) TOT 0034h INT32 kWh*10
    v = _s32_lsw_first(held[300001], held[300002])
    assert result.values["voltage_l1_n"] == Decimal(v) / 10
    a = _s32_lsw_first(held[300013], held[300014])
    assert result.values["current_l1"] == Decimal(a) / 1000
    pf = held[300050] - 65536 if held[300050] & 0x8000 else held[300050]
    assert result.values["power_factor_total"] == Decimal(pf) / 1000
    assert result.values["frequency"] == Decimal(held[300052]) / 10
    assert result.values["active_energy_import"] == Decimal(_s32_lsw_first(held[300053], held[300054])) / 10
    # CT ratio 1003h UINT32 LSW first, "Value min = 10 (CT=1,0)"
    assert result.values["ct_ratio"] == Decimal(held[304100] | held[304101] << 16) / 10
    assert result.values["phase_sequence"] == "L1-L2-L3"
    assert result.alarms == []


def test_requests_respect_the_device_limit_and_refusals_are_reported(em21, client_factory) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(em21, seed=1, unit=1, clock=fixed)
    with serve([sim], "socket") as server:
        client = client_factory(f"tcp://127.0.0.1:{server.port}")
        reader = PymodbusReader(client)
        # the analyzer (like the manual says) refuses more than 11 registers ...
        with pytest.raises(ModbusExceptionResponse) as too_long:
            reader.read_registers(M.ReadRequest("input", 0, 12), 1)
        assert too_long.value.code == 3
        # ... and addresses it does not have (0038h..02FFh are not in the EM21 table)
        with pytest.raises(ModbusExceptionResponse) as hole:
            reader.read_registers(M.ReadRequest("input", 0x38, 2), 1)
        assert hole.value.code == 2
        # the planner never asks for either, so the whole map reads cleanly
        result = read_map(client, em21, unit=1)
    assert result.errors == {} and len(result.values) == len(em21.registers)
    assert all(q.count <= 11 for q in M.plan_reads(em21))


def test_hes33_alarms_over_the_wire(em21, sdm630, client_factory) -> None:  # type: ignore[no-untyped-def]
    bad_em21 = SimulatedAnalyzer(em21, seed=2, unit=1, clock=fixed, overrides={
        "voltage_l2_n": Decimal("262.4"), "phase_sequence": "L1-L3-L2", "power_factor_total": Decimal("0.81")})
    bad_sdm = SimulatedAnalyzer(sdm630, seed=2, unit=2, clock=fixed, overrides={
        "voltage_l3_n": Decimal("195.5"), "current_n": Decimal("42.5"), "current_l1": Decimal("120.25")})
    with serve([bad_em21, bad_sdm], "rtu") as server:  # two brands on one bus behind one port (HES-38)
        client = client_factory(f"rtu+tcp://127.0.0.1:{server.port}")
        first = read_map(client, em21, unit=1)
        second = read_map(client, sdm630, unit=2)
    assert first.values["voltage_l2_n"] == Decimal("262.4")
    assert first.alarms == ["voltage_high:L2", "power_factor_low", "phase_sequence"]
    assert second.alarms == ["voltage_low:L3", "current_high:L1", "neutral_current_high"]
    limits = M.AlarmThresholds(voltage_high=Decimal(270))
    assert M.evaluate_alarms(first.values, limits) == ["phase_sequence"]


def test_rtu_over_an_osos_link(sdm630) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(sdm630, seed=3, unit=9, clock=fixed)
    with serve([sim], "rtu") as server:
        link = TcpLink("127.0.0.1", server.port)
        link.open()
        try:
            result = read_map(link, sdm630, unit=9, names=["voltage_l1_n", "serial_number", "meter_code"])
        finally:
            link.close()
    held = sim.words_at(T)
    assert set(result.values) == {"voltage_l1_n", "serial_number", "meter_code"}
    assert result.values["voltage_l1_n"] == shortest_float32(struct.pack(">HH", held[300001], held[300002]))
    assert result.values["serial_number"] == held[464513] << 16 | held[464514]
    assert result.requests == 2
    # RTU frame: unit + function + byte count + 2 words + CRC = 9 bytes for the float32 read
    assert link.bytes_in == 9 + (5 + 2 * 3)


def test_unknown_unit_and_dead_port(sdm630, client_factory) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(sdm630, seed=3, unit=1, clock=fixed)
    with serve([sim], "socket") as server:
        port = server.port
        client = client_factory(f"tcp://127.0.0.1:{port}")
        result = read_map(client, sdm630, unit=1, names=["frequency"])
        assert Decimal("49.9") < result.values["frequency"] < Decimal("50.1")
    with pytest.raises(ModbusClientError):
        open_client(f"tcp://127.0.0.1:{port}")


def test_simulator_is_deterministic_and_moves_with_the_clock(sdm630) -> None:  # type: ignore[no-untyped-def]
    a = SimulatedAnalyzer(sdm630, seed=4)
    b = SimulatedAnalyzer(sdm630, seed=4)
    later = datetime(2026, 11, 21, 19, 30, tzinfo=UTC)
    assert a.words_at(T) == b.words_at(T)
    assert a.words_at(T) != SimulatedAnalyzer(sdm630, seed=5).words_at(T)
    e0, _ = M.decode_words(sdm630, a.words_at(T))
    e1, _ = M.decode_words(sdm630, a.words_at(later))
    # one hour of the simulated 4 kW average load
    assert e1["active_energy_import"] - e0["active_energy_import"] == Decimal(4)  # type: ignore[operator]


def test_only_the_asked_registers_are_returned(sdm630, client_factory) -> None:  # type: ignore[no-untyped-def]
    sim = SimulatedAnalyzer(sdm630, seed=6, unit=1, clock=fixed)
    with serve([sim], "socket") as server:
        result = read_map(client_factory(f"tcp://127.0.0.1:{server.port}"), sdm630, unit=1,
                          names=["voltage_l1_n", "frequency"])
    # one bridged request 0x0000..0x0047 (72 words) carries both; the neighbours stay raw words only
    assert result.requests == 1
    assert set(result.values) == {"voltage_l1_n", "frequency"}
    assert len(result.words) == 0x48
