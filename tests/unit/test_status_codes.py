"""FF status and GF geographic code decoding (HES-11, HES-28). Expected meanings are written here from the
appendix of shared/REQUIREMENTS.md, not read back from osos/data/alarms/ff-gf.toml."""

from __future__ import annotations

import pytest

from osos.protocols import status_codes as sc

# bit -> (name, a phrase of the appendix's meaning, normalized alarm type)
APPENDIX_FF = {
    0: ("rtc_failure", "RTC failure", "meterFault"),
    1: ("measurement_chip_failure", "measurement chip failure", "meterFault"),
    2: ("critical_measurement_error", "critical measurement error", "meterFault"),
    3: ("rs485_port_error", "RS-485 port error", "meterFault"),
    4: ("not_calibrated", "not calibrated", "meterFault"),
    5: ("terminal_cover_open", "terminal cover", "terminalCoverOpen"),
    6: ("top_cover_open", "top cover opened", "topCoverOpen"),
    7: ("top_cover_opened_history", "top cover has been opened (history)", "topCoverOpen"),
    8: ("current_without_voltage_r", "current without voltage, phase R", "tamper"),
    9: ("current_without_voltage_s", "current without voltage, phase S", "tamper"),
    10: ("current_without_voltage_t", "current without voltage, phase T", "tamper"),
    11: ("magnetic_field_r", "magnetic field > 400 mT, phase R", "magneticTamper"),
    12: ("magnetic_field_s", "magnetic field > 400 mT, phase S", "magneticTamper"),
    13: ("magnetic_field_t", "magnetic field > 400 mT, phase T", "magneticTamper"),
    14: ("t1_not_advancing", "T1 register not advancing", "energyAnomaly"),
    15: ("t2_not_advancing", "T2 register not advancing", "energyAnomaly"),
    16: ("t3_not_advancing", "T3 register not advancing", "energyAnomaly"),
    17: ("energy_stalled_r", "phase R energy not advancing for two months", "energyAnomaly"),
    18: ("energy_stalled_s", "phase S energy not advancing for two months", "energyAnomaly"),
    19: ("energy_stalled_t", "phase T energy not advancing for two months", "energyAnomaly"),
    20: ("outage_r", "L1 outage", "powerLoss"),
    21: ("outage_s", "L2 outage", "powerLoss"),
    22: ("outage_t", "L3 outage", "powerLoss"),
    23: ("outage_all_phases", "three-phase outage", "powerLoss"),
    24: ("current_warning_active", "current warning not yet ended", "meterWarning"),
    25: ("voltage_warning_active", "voltage warning not yet ended", "meterWarning"),
    26: ("energy_backwards_r", "phase R energy register went backwards", "energyAnomaly"),
    27: ("energy_backwards_s", "phase S energy register went backwards", "energyAnomaly"),
    28: ("energy_backwards_t", "phase T energy register went backwards", "energyAnomaly"),
    29: ("demand_not_advancing", "maximum demand not advancing", "energyAnomaly"),
    30: ("tariff_sum_mismatch", "T0 differs from T1+T2+T3+T4 by more than 200 W(h)", "energyAnomaly"),
    31: ("t4_has_energy", "T4 register has energy", "meterWarning"),
    32: ("tariff_settings_corrupt", "tariff zone / clock settings corrupt", "meterFault"),
    33: ("tariff_year_mismatch", "tariff change year differs from production year", "meterWarning"),
    34: ("calibration_year_mismatch", "production year differs from calibration year", "meterWarning"),
    35: ("demand_constant", "maximum demand constant for the last 3 months", "energyAnomaly"),
    36: ("memory_faulty", "two memory areas faulty", "meterFault"),
    37: ("system_battery_low", "system battery low", "lowBattery"),
    38: ("rtc_battery_low", "RTC battery low", "lowBattery"),
    39: ("frequent_outages", "frequent outages (> 20 per hour)", "meterWarning"),
    40: ("frequent_warnings", "frequent warnings active: general", "meterWarning"),
    41: ("frequent_warnings_r", "frequent warnings active: phase R", "meterWarning"),
    42: ("frequent_warnings_s", "frequent warnings active: phase S", "meterWarning"),
    43: ("frequent_warnings_t", "frequent warnings active: phase T", "meterWarning"),
    44: ("demand_over_threshold", "maximum demand above threshold", "overLoad"),
    45: ("over_voltage_r", "over-voltage (> 253 V), phase R", "voltageSwell"),
    46: ("over_voltage_s", "over-voltage (> 253 V), phase S", "voltageSwell"),
    47: ("over_voltage_t", "over-voltage (> 253 V), phase T", "voltageSwell"),
    48: ("under_voltage_r", "under-voltage (< 195.5 V), phase R", "voltageSag"),
    49: ("under_voltage_s", "under-voltage (< 195.5 V), phase S", "voltageSag"),
    50: ("under_voltage_t", "under-voltage (< 195.5 V), phase T", "voltageSag"),
    51: ("over_current_r", "over-current, phase R", "overCurrent"),
    52: ("over_current_s", "over-current, phase S", "overCurrent"),
    53: ("over_current_t", "over-current, phase T", "overCurrent"),
    54: ("neutral_current_imbalance", "neutral-phase current imbalance", "neutralCurrent"),
    55: ("disconnect_relay_failure", "disconnect relay failure", "relayState"),
}


@pytest.mark.parametrize("bit", sorted(APPENDIX_FF))
def test_each_ff_bit_decodes_to_its_appendix_name(bit: int) -> None:
    name, meaning, kind = APPENDIX_FF[bit]
    text = f"{1 << bit:016X}"  # as the meter writes it: 16 hex digits
    status = sc.decode_ff(text)
    assert status.value == 2**bit
    assert status.names == [name]
    (flag,) = status.flags
    assert (flag.bit, flag.type) == (bit, kind)
    assert meaning in flag.en
    assert flag.tr and flag.severity in ("critical", "warning", "info")
    assert status.unknown_bits == ()


@pytest.mark.parametrize("bit", range(56, 64))
def test_reserved_bits_are_reported_unknown(bit: int) -> None:
    status = sc.decode_ff(f"{1 << bit:016x}")
    assert status.flags == () and status.unknown_bits == (bit,)


def test_the_table_names_exactly_the_appendix_bits_and_says_it_is_unverified() -> None:
    tab = sc.table()
    assert set(tab.ff_bits) == set(APPENDIX_FF)
    assert tab.verified is False and "unverified" in tab.source
    assert tab.ff_obis == ("F.F.0", "F.F") and tab.gf_obis == ("F.F.1",)


def test_several_bits_in_bit_order() -> None:
    # bits 6 (top cover), 20 (phase R outage), 37 (system battery) and 63 (reserved)
    value = (1 << 6) | (1 << 20) | (1 << 37) | (1 << 63)
    status = sc.decode_ff(f"{value:016X}")
    assert status.names == ["top_cover_open", "outage_r", "system_battery_low"]
    assert status.unknown_bits == (63,)
    assert sc.decode_ff("0000000000000000").flags == ()


def test_gateway_push_bits_are_the_cover_and_outage_ones() -> None:
    # what the gateway pushes at once on the emergency topic (HES-24): covers and outages
    assert {b for b, e in sc.table().ff_bits.items() if e.push} == {5, 6, 20, 21, 22, 23}


@pytest.mark.parametrize("bad", ["", "XYZ", "1" * 17, "-1", 2**64, True])
def test_bad_ff_values_are_refused(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sc.StatusCodeError):
        sc.decode_ff(bad)


def test_gf_fields() -> None:
    # appendix: bits 0-4 EDAŞ, 5-19 substation, 20-23 transformer, 24-29 feeder, 30-31 phase, 32-33 branch,
    # 34-43 maximum current. Built here by shifting each value to its first bit.
    edas, substation, transformer, feeder, phase, branch, imax = 21, 12345, 9, 37, 2, 3, 800
    value = (edas | substation << 5 | transformer << 20 | feeder << 24 | phase << 30 | branch << 32
             | imax << 34)
    assert sc.decode_gf(f"{value:X}") == {
        "edas_id": 21, "substation_id": 12345, "transformer_id": 9, "feeder_id": 37, "phase_id": 2,
        "branch_id": 3, "max_current": 800,
    }
    top = sc.decode_gf((1 << 44) - 1)  # every bit set: each field at its maximum
    assert top == {"edas_id": 31, "substation_id": 2**15 - 1, "transformer_id": 15, "feeder_id": 63,
                   "phase_id": 3, "branch_id": 3, "max_current": 1023}
    with pytest.raises(sc.StatusCodeError):
        sc.decode_gf(1 << 44)


def test_a_broken_table_is_refused() -> None:
    doc = {"ff": {"obis": ["F.F.0"], "width": 64, "bits": [
        {"bit": 1, "name": "a", "type": "x", "severity": "warning", "en": "a", "tr": "a"},
        {"bit": 1, "name": "b", "type": "x", "severity": "warning", "en": "b", "tr": "b"}]},
        "gf": {"obis": ["F.F.1"], "width": 8, "fields": []}}
    with pytest.raises(sc.StatusCodeError, match="twice"):
        sc._parse(doc, "test")
    doc["ff"]["bits"] = doc["ff"]["bits"][:1]
    doc["gf"]["fields"] = [{"name": "a", "first": 0, "last": 3, "en": "", "tr": ""},
                           {"name": "b", "first": 3, "last": 5, "en": "", "tr": ""}]
    with pytest.raises(sc.StatusCodeError, match="overlaps"):
        sc._parse(doc, "test")
