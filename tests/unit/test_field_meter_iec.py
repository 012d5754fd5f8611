"""Brand profiles and the byte-level mode C server of the simulated meter (AMR-1, AMR-2, AMR-3, AMR-7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from osos.field.meters.brands import BrandError, _parse, brand, load_brands
from osos.field.meters.iec import IecPortSession, SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.protocols import iec62056_21 as iec

TR = timezone(timedelta(hours=3))
T0 = datetime(2026, 5, 4, 0, 0, tzinfo=TR).astimezone(UTC)


PASSWORD = "Sim-4711"  # a simulated meter's own P1 password, configured explicitly (no built-in default)


def sim(brand_key: str = "elektromed", kind: str = "three-phase", serial: str = "40012345", watts: int = 1500,
        initial_wh: int = 15_214_234, address: str = "", password: str = PASSWORD) -> SimMeter:
    model = MeterModel(serial, kind, T0, load=ConstantLoad(watts), initial_wh=initial_wh)
    return SimMeter(model, brand(brand_key), address=address, password=password)


def session(*meters: SimMeter, at: datetime = T0) -> IecPortSession:
    return IecPortSession(list(meters), clock=lambda: at)


def payload(out: list[tuple[int, bytes]]) -> bytes:
    return b"".join(p for _, p in out)


# ---------------------------------------------------------------- brands (AMR-7)
def test_three_brands_with_distinct_flags_from_the_flag_list() -> None:
    brands = load_brands()
    assert {b.flag for b in brands.values()} == {"ELM", "MKL", "VIK"}  # DLMS UA FLAG ID list
    assert len({b.max_baud for b in brands.values()}) == 3
    for b in brands.values():
        for kind in ("single-phase", "three-phase", "kombi"):
            ident = iec.parse_identification(("/" + b.ident(kind) + "\r\n").encode())
            assert ident.flag == b.flag and ident.baud == b.max_baud and ident.mode == "C"


def test_register_sets_follow_the_meter_kind() -> None:  # covers AMR-2, AMR-3
    for b in load_brands().values():
        mono, tri, kombi = (set(b.registers[k]) for k in ("single-phase", "three-phase", "kombi"))
        assert {"5.8.0", "6.8.0", "7.8.0", "8.8.0"} <= kombi
        assert not {"5.8.0", "6.8.0", "7.8.0", "8.8.0"} & (mono | tri)
        assert {"0.9.1", "0.9.2", "1.8.0", "1.8.1", "1.8.2", "1.8.3", "1.6.0", "F.F.0"} <= mono
        assert {"C.7.1", "C.7.2", "C.7.3"} <= tri


def test_energy_is_printed_with_leading_zeros_and_three_decimals() -> None:  # covers AMR-2
    m = sim("elektromed", initial_wh=15_214_234)
    assert m.brand.render(m.model, "1.8.0") == [("015214.234", "kWh")]
    v = sim("viko", initial_wh=15_214_234)
    assert v.brand.render(v.model, "1.8.0") == [("0015214.234", "kWh")]  # Viko prints 7 integer digits


def test_bad_brand_file_is_refused() -> None:
    good = {
        "name": "X", "flag": "XYZ", "max_baud": 9600, "date_format": "%y", "time_format": "%H",
        "stamp_format": "%H", "energy_int_digits": 6, "demand_int_digits": 2,
        "kinds": {k: {"model": "M", "registers": ["1.8.0"]} for k in ("single-phase", "three-phase", "kombi")},
    }
    assert _parse("x", good).flag == "XYZ"
    with pytest.raises(BrandError):
        _parse("x", {**good, "flag": "XY1"})
    with pytest.raises(BrandError):
        _parse("x", {**good, "max_baud": 1234})
    with pytest.raises(BrandError):
        _parse("x", {**good, "kinds": {**good["kinds"], "kombi": {"model": "M", "registers": ["99.99.99"]}}})
    with pytest.raises(BrandError):
        brand("nosuchbrand")


# ---------------------------------------------------------------- mode C readout (AMR-1)
def test_mode_c_readout_byte_by_byte() -> None:  # covers AMR-1
    m = sim("elektromed", "three-phase")
    at = T0 + timedelta(hours=8)  # 00-06 T3, 06-08 T1 at 1.5 kW
    s = session(m, at=at)
    out = s.feed(b"/?!\r\n")
    assert out == [(300, b"/ELM5T510.2251\r\n")]
    out = s.feed(b"\x06050\r\n")
    assert len(out) == 1 and out[0][0] == 9600
    block = iec.parse_data_block(out[0][1])
    assert block.bcc_ok
    values = {line.address: line.values for line in block.lines}
    assert values["0.0.0"][0].value == "40012345"
    assert values["0.9.1"][0].value == "08:00:00" and values["0.9.2"][0].value == "26-05-04"
    expected_total = 15_214_234 + 8 * 1500
    assert values["1.8.0"][0] == iec.DataValue(f"{expected_total // 1000:06d}.{expected_total % 1000:03d}", "kWh")
    assert values["1.8.1"][0].value == f"{(15_214_234 + 2 * 1500) // 1000:06d}.{(15_214_234 + 2 * 1500) % 1000:03d}"
    assert values["1.8.3"][0].value == "000009.000"
    assert values["1.6.0"][0] == iec.DataValue("001.500", "kW")
    assert s.state == "idle" and s.baud == 300 and s.negotiated == [9600]


def test_input_split_at_any_point_gives_the_same_answer() -> None:
    whole = payload(session(sim()).feed(b"/?!\r\n\x06040\r\n"))
    s = session(sim())
    pieces = b"".join(payload(s.feed(bytes([b]))) for b in b"/?!\r\n\x06040\r\n")
    assert pieces == whole and whole.startswith(b"/ELM5")


def test_reader_may_choose_a_lower_speed_but_not_a_higher_one() -> None:  # covers AMR-1
    s = session(sim("viko"))  # Viko tops out at 4800 Bd ('4')
    s.feed(b"/?!\r\n")
    assert s.feed(b"\x06050\r\n") == []  # 9600 refused: the meter stays silent
    s.feed(b"/?!\r\n")
    out = s.feed(b"\x06030\r\n")
    assert out[0][0] == 2400


def test_bus_address_selects_one_meter() -> None:  # covers HES-38
    a = sim(serial="11111111", address="11111111")
    b = sim("makel", "kombi", serial="22222222", address="22222222")
    s = session(a, b)
    assert s.feed(b"/?!\r\n") == []  # no address on a shared bus: nobody answers
    assert s.feed(b"/?33333333!\r\n") == []
    assert payload(s.feed(b"/?22222222!\r\n")).startswith(b"/MKL6")
    block = iec.parse_data_block(payload(s.feed(b"\x06060\r\n")))
    assert block.lines[0].values[0].value == "22222222"


def test_line_noise_is_ignored() -> None:
    s = session(sim())
    assert s.feed(b"\xff\x00garbage\r\n") == []
    assert payload(s.feed(b"/?!\r\n")).startswith(b"/ELM")


# ---------------------------------------------------------------- programming mode
def _programming(s: IecPortSession) -> bytes:
    s.feed(b"/?!\r\n")
    return payload(s.feed(b"\x06051\r\n"))


def test_programming_mode_password_read_write_break() -> None:  # covers AMR-1, HES-35
    m = sim("makel", "single-phase", serial="55500011")
    s = session(m, at=T0 + timedelta(hours=1))
    p0 = iec.parse_command(_programming(s))
    assert p0 == iec.Command("P0", "(55500011)")
    assert payload(s.feed(iec.read_request("0.9.1"))) == iec.build_data_message("(ER01)")  # no password yet
    assert payload(s.feed(iec.password("wrong"))) == iec.build_data_message("(ER01)")
    assert payload(s.feed(iec.password(PASSWORD))) == iec.ACK
    answer = iec.parse_data_message(payload(s.feed(iec.read_request("0.9.1"))))
    assert answer.lines[0] == iec.DataLine("0.9.1", (iec.DataValue("01:00:00"),))
    assert payload(s.feed(iec.write_request("0.9.1", "13:14:15"))) == iec.ACK
    assert m.model.meter_time() == datetime(2026, 5, 4, 13, 14, 15, tzinfo=TR)
    assert payload(s.feed(iec.write_request("0.9.1", "25:00:00"))) == iec.build_data_message("(ER03)")
    assert payload(s.feed(iec.read_request("9.9.9"))) == iec.build_data_message("(ER02)")
    corrupted = bytearray(iec.read_request("1.8.0"))
    corrupted[-1] ^= 0xFF
    assert payload(s.feed(bytes(corrupted))) == iec.NAK
    assert s.feed(iec.break_command()) == []
    assert s.state == "idle" and s.baud == 300


def test_load_profile_by_range() -> None:  # covers AMR-5
    m = sim("elektromed", "single-phase", watts=1200)
    s = session(m, at=T0 + timedelta(days=1))
    _programming(s)
    s.feed(iec.password(PASSWORD))
    frame = payload(s.feed(iec.load_profile_request(1, "2605040300", "2605040500")))
    profile = iec.parse_load_profile(frame)
    entries = profile.entries()
    assert [t for t, _ in entries] == [datetime(2026, 5, 4, h, 0) for h in (3, 4, 5)]
    assert all(row == (iec.DataValue("1.200"),) for _, row in entries)
    assert profile.blocks[0].period_min == 60
    everything = iec.parse_load_profile(payload(s.feed(iec.load_profile_request(1, "", ""))))
    assert len(everything.entries()) == 24
    empty = payload(s.feed(iec.load_profile_request(1, "2701010000", "2701020000")))
    assert iec.parse_reply(empty) == iec.MeterErrorReply("ER02")


def test_kombi_keeps_a_reactive_load_profile_2_and_others_do_not() -> None:  # covers AMR-5
    kombi = SimMeter(MeterModel("1", "kombi", T0, load=ConstantLoad(2000), reactive_per_mille=300), brand("makel"),
                     password=PASSWORD)
    s = session(kombi, at=T0 + timedelta(hours=1))
    _programming(s)
    s.feed(iec.password(PASSWORD))
    p1 = iec.parse_load_profile(payload(s.feed(iec.load_profile_request(1, "", ""))))
    p2 = iec.parse_load_profile(payload(s.feed(iec.load_profile_request(2, "", ""))))
    assert p1.blocks[0].channels == (("1.29.0", "kWh"), ("2.29.0", "kWh"))
    assert p2.blocks[0].channels == tuple((f"{q}.29.0", "kvarh") for q in (5, 6, 7, 8))
    # 15-minute periods at 2 kW: 0.500 kWh active and 300 per mille of it inductive (Q1, 5.8.0)
    assert [row[0].value for _, row in p1.entries()] == ["0.500"] * 4
    assert [tuple(v.value for v in row) for _, row in p2.entries()] == [("0.150", "0.000", "0.000", "0.000")] * 4
    mono = sim("elektromed", "single-phase")
    s = session(mono, at=T0 + timedelta(hours=2))
    _programming(s)
    s.feed(iec.password(PASSWORD))
    assert iec.parse_reply(payload(s.feed(iec.load_profile_request(2, "", "")))) == iec.MeterErrorReply("ER02")
