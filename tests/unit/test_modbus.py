"""Modbus register maps and decoding (covers HES-31, HES-32, HES-33, HES-40).

Expected values are computed in the tests from IEEE-754 / two's complement with ``struct`` and from the
scaling ("value weight") printed in the manuals, never taken from the code under test.
"""

from __future__ import annotations

import dataclasses
import struct
from decimal import Decimal
from pathlib import Path

import pytest

from osos.protocols import modbus as M
from osos.protocols.errors import DecodeError


def reg(**kw: object) -> M.Register:
    base: dict[str, object] = {"name": "x", "table": "input", "address": 0, "type": "u16"}
    base.update(kw)
    return M.Register(**base)  # type: ignore[arg-type]


def words_of(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


# ------------------------------------------------------------------------------------------- decoding


def test_float32_big_endian_is_the_shortest_decimal_of_the_float32() -> None:
    # 0x43663333 is the float32 nearest to 230.2 (230.1999969482421875 exactly)
    assert struct.unpack(">f", bytes.fromhex("43663333"))[0] == pytest.approx(230.2)
    assert M.decode_register(reg(type="float32"), [0x4366, 0x3333]) == Decimal("230.2")


@pytest.mark.parametrize("value", ["0.95", "-0.87", "49.98", "12345.67", "0", "1E-7", "3.4E+38"])
def test_float32_round_trips_printed_values(value: str) -> None:
    raw = struct.pack(">f", float(value))
    assert M.decode_register(reg(type="float32"), words_of(raw)) == Decimal(value)


def test_float32_word_and_byte_orders() -> None:
    raw = struct.pack(">f", 231.5)  # ABCD
    a, b = words_of(raw)
    swap = lambda w: ((w & 0xFF) << 8) | (w >> 8)  # noqa: E731
    assert M.decode_register(reg(type="float32", word_order="little"), [b, a]) == Decimal("231.5")  # CDAB
    assert M.decode_register(reg(type="float32", byte_order="little"), [swap(a), swap(b)]) == Decimal("231.5")
    assert M.decode_register(reg(type="float32", word_order="little", byte_order="little"),
                             [swap(b), swap(a)]) == Decimal("231.5")  # DCBA


def test_float32_nan_and_infinity_are_decode_errors() -> None:
    for raw in (struct.pack(">f", float("nan")), struct.pack(">f", float("inf"))):
        with pytest.raises(M.ModbusDecodeError):
            M.decode_register(reg(type="float32"), words_of(raw))


def test_s32_least_significant_word_first_with_value_weight() -> None:
    # Carlo Gavazzi: "In INT32 ... the word order is LSW->MSW"; V L1-N weight Volt*10
    raw = (2301).to_bytes(4, "big", signed=True)
    msw, lsw = words_of(raw)
    r = reg(type="s32", word_order="little", scale=Decimal("0.1"))
    assert M.decode_register(r, [lsw, msw]) == Decimal("230.1")
    raw = (-12345).to_bytes(4, "big", signed=True)  # W L1 = -1234.5 W (export)
    msw, lsw = words_of(raw)
    assert M.decode_register(r, [lsw, msw]) == Decimal("-1234.5")


def test_integer_types_and_scaling_are_exact() -> None:
    assert M.decode_register(reg(type="s16", scale=Decimal("0.001")), [0xFC7C]) == Decimal("-0.900")  # -900
    assert M.decode_register(reg(type="u16"), [0xFFFF]) == 65535
    assert M.decode_register(reg(type="u32"), [0x0001, 0x0000]) == 65536
    big = 2**63 + 5
    assert M.decode_register(reg(type="u64"), words_of(big.to_bytes(8, "big"))) == big
    assert M.decode_register(reg(type="s64"), [0xFFFF] * 4) == -1
    # 0.1 + 0.2 in binary floats is 0.30000000000000004; with Decimal scaling it is exactly 0.3
    assert M.decode_register(reg(type="u16", scale=Decimal("0.1")), [3]) == Decimal("0.3")


def test_enumerations_become_labels() -> None:
    r = reg(type="s16", enum={-1: "L1-L3-L2", 0: "L1-L2-L3"})
    assert M.decode_register(r, [0xFFFF]) == "L1-L3-L2"
    assert M.decode_register(r, [0]) == "L1-L2-L3"
    assert M.decode_register(r, [7]) == "unknown (7)"


def test_wrong_word_count_and_bad_words_are_decode_errors() -> None:
    with pytest.raises(M.ModbusDecodeError):
        M.decode_register(reg(type="u32"), [1])
    with pytest.raises(M.ModbusDecodeError):
        M.decode_register(reg(type="u16"), [0x10000])
    assert issubclass(M.ModbusDecodeError, DecodeError)


def test_encode_is_the_inverse_of_decode() -> None:
    r = reg(type="s32", word_order="little", scale=Decimal("0.001"))
    assert M.encode_register(r, Decimal("-40.704")) == [(-40704) & 0xFFFF, 0xFFFF]
    with pytest.raises(M.ModbusDecodeError):
        M.encode_register(r, Decimal("0.0005"))  # not a multiple of the scale


def test_response_pdu_from_the_modbus_specification() -> None:
    # Modbus Application Protocol V1.1b3, 6.3 example: registers 108..110 = 555, 0, 100
    assert M.decode_response_pdu(bytes.fromhex("0306022B00000064"), 3) == [555, 0, 100]
    with pytest.raises(M.ModbusDecodeError, match="code 0x02"):
        M.decode_response_pdu(bytes.fromhex("8302"))
    with pytest.raises(M.ModbusDecodeError):
        M.decode_response_pdu(bytes.fromhex("0306022B0000"))


# ---------------------------------------------------------------------------------------------- maps

GOOD = """
[device]
manufacturer = "Test"
model = "T1"
[source]
url = "https://example.org/t1.pdf"
title = "T1 protocol"
version = "1"
date = "2024-01-01"
[link]
max_registers = 10
[[register]]
name = "voltage_l1_n"
address = 0
type = "u16"
scale = "0.1"
"""


def test_good_map_parses() -> None:
    m = M.parse_map_text(GOOD, "t1.toml")
    assert m.register("voltage_l1_n").scale == Decimal("0.1")
    assert m.max_registers == 10


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('[[register]]\nname = "bad"\naddress = 4\ntype = "float64"\n', "register 'bad': type 'float64'"),
        ('[[register]]\nname = "over"\naddress = 0\ntype = "u32"\n', "register 'over': overlaps 'voltage_l1_n'"),
        ('[[register]]\nname = "f"\naddress = 9\ntype = "u16"\nscale = 0.1\n', "register 'f': scale must be"),
        ('[[register]]\nname = "voltage_l1_n"\naddress = 9\ntype = "u16"\n', "name used twice"),
        ('[[register]]\nname = "t"\naddress = 9\ntype = "u16"\ntable = "coils"\n', "table 'coils'"),
        ('[[register]]\nname = "a"\naddress = 70000\ntype = "u16"\n', "address must be"),
        ('[[register]]\nname = "e"\naddress = 9\ntype = "float32"\nenum = {"0" = "x"}\n', "enum"),
        ('[[register]]\nname = "k"\naddress = 9\ntype = "u16"\ncolour = "red"\n', "unknown keys"),
    ],
)
def test_bad_maps_are_refused_naming_file_and_register(extra: str, needle: str) -> None:
    with pytest.raises(M.ModbusMapError) as info:
        M.parse_map_text(GOOD + extra, "/maps/t1.toml")
    assert "/maps/t1.toml" in str(info.value)
    assert needle in str(info.value)


def test_map_without_source_or_with_bad_limits_is_refused() -> None:
    with pytest.raises(M.ModbusMapError, match=r"\[source\] needs url"):
        M.parse_map_text(GOOD.replace('url = "https://example.org/t1.pdf"\n', ""), "t1.toml")
    with pytest.raises(M.ModbusMapError, match="max_registers must be 1..125"):
        M.parse_map_text(GOOD.replace("max_registers = 10", "max_registers = 200"), "t1.toml")
    with pytest.raises(M.ModbusMapError, match="not valid TOML"):
        M.parse_map_text("[device", "t1.toml")


def test_map_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(GOOD + '[[register]]\nname = "p"\naddress = 0\ntype = "s16"\n', encoding="utf-8")
    with pytest.raises(M.ModbusMapError) as info:
        M.load_map_file(path)
    assert str(path) in str(info.value) and "register 'p'" in str(info.value)
    with pytest.raises(M.ModbusMapError, match="unknown register map"):
        M.load_map("no-such-analyzer")


# --------------------------------------------------------------------------------------- shipped maps


def test_at_least_two_real_analyzers_with_cited_sources() -> None:
    names = M.available_maps()
    assert {"eastron-sdm630", "carlo-gavazzi-em21"} <= set(names)
    for name in names:
        m = M.load_map(name)
        assert m.source["url"].startswith("https://")
        assert m.source["title"] and m.source["version"] and m.source["date"]
        assert m.device["manufacturer"] and m.device["model"]


def test_em21_scaling_and_word_order_as_in_the_manual() -> None:
    m = M.load_map("carlo-gavazzi-em21")
    # EM21 Communication Protocol V1R0, table 2.3-1 value weights and section 2.1 word order
    expected = {"voltage_l1_n": (0x0000, "0.1"), "current_l1": (0x000C, "0.001"),
                "active_power_l1": (0x0012, "0.1"), "power_factor_total": (0x0031, "0.001"),
                "frequency": (0x0033, "0.1"), "active_energy_import": (0x0034, "0.1"),
                "ct_ratio": (0x1003, "0.1")}
    for name, (address, scale) in expected.items():
        r = m.register(name)
        assert (r.address, r.scale) == (address, Decimal(scale)), name
    assert m.register("voltage_l1_n").word_order == "little"
    assert m.register("voltage_l1_n").type == "s32"
    assert m.register("phase_sequence").enum == {-1: "L1-L3-L2", 0: "L1-L2-L3"}
    assert m.max_registers == 11


def test_sdm630_registers_as_in_the_manual() -> None:
    m = M.load_map("eastron-sdm630")
    # manual: 30001 phase 1 volts, 30071 frequency, 30073 import kWh, 30235 THD V1, 464513 serial number
    assert m.register("voltage_l1_n").reference == 300001
    assert m.register("frequency").reference == 300071
    assert m.register("active_energy_import").reference == 300073
    assert m.register("thd_voltage_l1_n").reference == 300235
    assert m.register("serial_number").reference == 464513
    assert all(r.word_order == "big" for r in m.registers)
    assert m.max_registers == 80


def test_shipped_maps_name_the_alarm_quantities() -> None:
    for name in M.available_maps():
        names = {r.name for r in M.load_map(name).registers}
        assert {"voltage_l1_n", "voltage_l2_n", "voltage_l3_n", "current_l1", "power_factor_total"} <= names


# -------------------------------------------------------------------------------------------- planning


def _covered(requests: list[M.ReadRequest]) -> list[tuple[str, int]]:
    return [(q.table, q.address + i) for q in requests for i in range(q.count)]


@pytest.mark.parametrize("name", ["eastron-sdm630", "carlo-gavazzi-em21"])
def test_plan_covers_every_register_within_the_device_limit(name: str) -> None:
    m = M.load_map(name)
    requests = M.plan_reads(m)
    covered = _covered(requests)
    assert len(covered) == len(set(covered))  # no word read twice
    for r in m.registers:
        assert all((r.table, r.address + i) in covered for i in range(r.count))
        if r.single_read:
            assert M.ReadRequest(r.table, r.address, r.count) in requests
    assert all(q.count <= m.max_registers for q in requests)


def test_plan_merges_contiguous_runs_up_to_125() -> None:
    doc = GOOD.replace("max_registers = 10", "max_registers = 125").split("[[register]]")[0]
    regs = "".join(f'[[register]]\nname = "r{i}"\naddress = {i}\ntype = "u16"\n' for i in range(130))
    m = M.parse_map_text(doc + regs, "t.toml")
    assert M.plan_reads(m) == [M.ReadRequest("input", 0, 125), M.ReadRequest("input", 125, 5)]


def test_plan_bridges_gaps_only_when_the_map_allows() -> None:
    doc = GOOD.split("[[register]]")[0]
    regs = '[[register]]\nname = "a"\naddress = 0\ntype = "u32"\n[[register]]\nname = "b"\naddress = 4\ntype = "u32"\n'
    strict = M.parse_map_text(doc + regs, "t.toml")
    assert M.plan_reads(strict) == [M.ReadRequest("input", 0, 2), M.ReadRequest("input", 4, 2)]
    bridging = M.parse_map_text(doc.replace("[link]", "[link]\nbridge_gaps = true") + regs, "t.toml")
    assert M.plan_reads(bridging) == [M.ReadRequest("input", 0, 6)]
    assert M.plan_reads(bridging, ["b"]) == [M.ReadRequest("input", 4, 2)]


def test_sdm630_whole_map_takes_few_requests() -> None:
    m = M.load_map("eastron-sdm630")
    requests = M.plan_reads(m)
    # 73 registers (145 words) spread over 0x0000..0x0159 and two holding ranges: 4 + 2 requests
    assert len(m.registers) == 73 and sum(r.count for r in m.registers) == 145
    assert len(requests) == 6
    strict = M.plan_reads(dataclasses.replace(m, bridge_gaps=False))
    assert len(strict) > len(requests)


# ---------------------------------------------------------------------------------------------- alarms

LIMITS = M.AlarmThresholds(voltage_high=Decimal(253), voltage_low=Decimal(207), neutral_voltage_high=Decimal(10),
                           current_high=Decimal(100), current_low=Decimal("0.5"),
                           neutral_current_high=Decimal(30), power_factor_low=Decimal("0.90"))


def normal() -> dict[str, Decimal | str]:
    return {"voltage_l1_n": Decimal("230.1"), "voltage_l2_n": Decimal(229), "voltage_l3_n": Decimal(231),
            "voltage_n": Decimal("1.2"), "current_l1": Decimal(40), "current_l2": Decimal(41),
            "current_l3": Decimal(39), "current_n": Decimal(3), "power_factor_total": Decimal("0.95"),
            "phase_sequence": "L1-L2-L3"}


def test_no_alarms_in_the_normal_band() -> None:
    assert M.evaluate_alarms(normal(), LIMITS) == []


@pytest.mark.parametrize(
    ("change", "alarm"),
    [
        ({"voltage_l1_n": Decimal("253.1")}, "voltage_high:L1"),
        ({"voltage_l3_n": Decimal("206.9")}, "voltage_low:L3"),
        ({"voltage_n": Decimal("10.5")}, "neutral_voltage_high"),
        ({"current_l2": Decimal("100.01")}, "current_high:L2"),
        ({"current_l1": Decimal("0.4")}, "current_low:L1"),
        ({"current_n": Decimal(31)}, "neutral_current_high"),
        ({"power_factor_total": Decimal("0.89")}, "power_factor_low"),
        ({"power_factor_total": Decimal("-0.85")}, "power_factor_low"),  # leading or exporting: magnitude counts
        ({"phase_sequence": "L1-L3-L2"}, "phase_sequence"),
    ],
)
def test_each_hes33_alarm(change: dict[str, Decimal | str], alarm: str) -> None:
    values = normal() | change
    assert M.evaluate_alarms(values, LIMITS) == [alarm]


def test_limits_are_inclusive_and_switchable() -> None:
    edge = normal() | {"voltage_l1_n": Decimal(253), "power_factor_total": Decimal("0.90")}
    assert M.evaluate_alarms(edge, LIMITS) == []
    off = M.AlarmThresholds()
    assert M.evaluate_alarms(normal() | {"voltage_l1_n": Decimal(400)}, off) == []
    # a quantity the analyzer does not measure raises nothing
    assert M.evaluate_alarms({"current_l1": Decimal(150)}, LIMITS) == ["current_high:L1"]
