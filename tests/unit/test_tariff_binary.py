"""The S3 binary tariff image: layout, CRC, limits, errors (covers TAX-3, TAX-4, TAX-5).

Expected bytes are assembled here by hand from S3's tables (Altunkaya 2016, Tables 4.3-4.19,
Figs. 4.14-4.15), never captured from the encoder.
"""

from __future__ import annotations

import struct
from datetime import date
from decimal import Decimal

import pytest

from osos.protocols.errors import DecodeError
from osos.tariff import binary
from osos.tariff.binary import TariffBinaryError, crc16, decode, encode
from osos.tariff.errors import TariffError
from osos.tariff.model import parse_taxi_tariff_set


def _crc_bitwise(data: bytes) -> int:
    """Independent reference: CRC-16/IBM-3740 bit by bit (poly 0x1021, init 0xFFFF, no reflection)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _doc(**over: object) -> dict:
    doc: dict = {
        "kind": "taxi", "name": "t", "city": "X", "country": "TR", "year": 2015, "currency": "TRY",
        "decimals": 2, "distance_unit": "m",
        "source": {"url": "https://example.org", "title": "test", "accessed": "2026-11-21"},
        "tariffs": [{"no": "1", "opening_fare": "65.00", "unit_distance_fare": "4.00", "unit_distance": "100",
                     "unit_time_fare": "7.00", "unit_time_s": "60"}],
    }
    doc.update(over)
    return doc


def _set(**over: object):
    return parse_taxi_tariff_set(_doc(**over))


HEAD = 19  # magic 4, version 1, tariff code 2, options 1, currency 3, decimals 1, year 2, five counts


# --- CRC (TAX-5) -------------------------------------------------------------------------------


def test_crc_matches_the_catalogue_check_value() -> None:
    # CRC catalogue (reveng), CRC-16/IBM-3740: check = 0x29B1 for ASCII "123456789"
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF  # init, no xorout


def test_crc_table_agrees_with_bitwise_reference() -> None:
    for data in (b"\x00", b"\xff" * 7, bytes(range(256)), b"S3TF" * 33):
        assert crc16(data) == _crc_bitwise(data)


def test_image_ends_with_crc_over_everything_before_it() -> None:
    data = encode(_set())
    assert struct.unpack("<H", data[-2:])[0] == _crc_bitwise(data[:-2])
    assert binary.image_crc(data) == _crc_bitwise(data[:-2])


def test_crc_changes_when_any_tariff_value_changes() -> None:
    # S3 Fig. 4.29: a different tariff gives a different CRC
    a = encode(_set())
    tariffs = [{"no": "1", "opening_fare": "65.01", "unit_distance_fare": "4.00", "unit_distance": "100",
                "unit_time_fare": "7.00", "unit_time_s": "60"}]
    b = encode(_set(tariffs=tariffs))
    assert a[-2:] != b[-2:]


# --- base record layout (S3 Table 4.3 / 4.5) ------------------------------------------------------


def test_base_record_is_23_bytes_in_s3_units() -> None:
    tariffs = [{"no": "A", "opening_fare": "3.90", "opening_distance": "500", "opening_time_s": "85",
                "unit_distance_fare": "0.20", "unit_distance": "133.33", "unit_time_fare": "0.20",
                "unit_time_s": "24", "extra_fare": "1.00", "max_extras": 5}]
    data = encode(_set(tariffs=tariffs, currency="EUR"))
    rec = data[HEAD:HEAD + 23]
    expected = struct.pack(
        "<8HcBHBBB",
        390,  # opening fare 3.90 EUR in cents (kurus)
        5000,  # opening distance 500 m in m/10
        85 * 16,  # opening time 85 s in s/16
        200,  # 0.20 EUR = 20 cents = 200 tenths of a cent
        200,
        1000,  # extra 1.00 EUR in 1/10 cent
        13333,  # 133.33 m in m/100
        24 * 64,  # 24 s in s/64
        b"A", 5, 0, 0, 0, 0,
    )
    assert rec == expected


def test_header_carries_code_options_currency_decimals_year() -> None:
    data = encode(_set(tariff_code=0x1234, only_one_active=True, dst_switch=True, year=2015, currency="EUR"),
                  locked=True)
    magic, version, code, options, cur, decimals, year = struct.unpack_from("<4sBHB3sBH", data)
    assert (magic, version, code, cur, decimals, year) == (b"S3TF", 1, 0x1234, b"EUR", 2, 2015)
    assert options == binary.OPT_DST_AUTO | binary.OPT_LOCKED | binary.OPT_ONLY_ONE_ACTIVE


# --- tier flags and tables (S3 Figs. 4.14, 4.15, Tables 4.6-4.14) ----------------------------------


def _distance_tiers(n: int) -> list[dict]:
    return [{"id": f"k{i}", "kind": "distance", "limit": str(1000 * i), "unit_distance_fare": f"0.{i}"}
            for i in range(1, n + 1)]


def test_distance_flag_word_matches_s3_figure_4_14() -> None:
    # Fig. 4.14: tiers 5 and 8 of the distance table -> flag word 0x0900 (tier 1 = most significant bit)
    tariffs = [{"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
                "unit_time_fare": "0.05", "unit_time_s": "10", "tiers": ["k5", "k8"]}]
    data = encode(_set(tariffs=tariffs, tiers=_distance_tiers(8)))
    (flags,) = struct.unpack_from("<H", data, HEAD + 18)
    assert flags == 0x0900


def test_byte_flags_match_s3_figure_4_15() -> None:
    # Fig. 4.15: amount tiers 1, 3 and 6 -> 0xA4
    tiers = [{"id": f"m{i}", "kind": "amount", "limit": f"{5 * i}.00", "unit_distance_fare": "0.40"}
             for i in range(1, 7)]
    tariffs = [{"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
                "unit_time_fare": "0.05", "unit_time_s": "10", "tiers": ["m1", "m3", "m6"]}]
    data = encode(_set(tariffs=tariffs, tiers=tiers))
    time_flags, amount_flags, speed_flags = data[HEAD + 20], data[HEAD + 21], data[HEAD + 22]
    assert (time_flags, amount_flags, speed_flags) == (0, 0xA4, 0)


def test_tier_values_below_10000_are_fares_above_are_units() -> None:
    # S3 §4.3.5 / Table 4.8: fare slot < 10000 (1/10 kurus); unit slot = 10000 + m/100 or s/64
    tiers = [
        {"id": "f", "kind": "distance", "limit": "2000", "unit_distance_fare": "0.804", "switch_to": "2"},
        {"id": "u", "kind": "time", "limit": "300", "unit_distance": "56.67", "unit_time_s": "83.25"},
        {"id": "s", "kind": "speed", "limit": "50", "dwell_s": 60, "unit_time_fare": "0.30"},
    ]
    tariffs = [{"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.10", "unit_distance": "100",
                "unit_time_fare": "0.10", "unit_time_s": "10", "tiers": ["f", "u", "s"]},
               {"no": "2", "opening_fare": "1.00", "unit_distance_fare": "0.10", "unit_distance": "100",
                "unit_time_fare": "0.10", "unit_time_s": "10"}]
    data = encode(_set(tariffs=tariffs, tiers=tiers))
    per_tariff = 23 + 5 + 1 + 19
    pos = HEAD + 2 * per_tariff
    # distance tier: target '2', limit LONG 2000 m, 0.804 TRY = 804 tenths, time slot unchanged (10000), no step
    assert data[pos:pos + 10] == struct.pack("<BIHHB", ord("2"), 2000, 804, 10000, 0)
    pos += 10
    # time tier: keep number, limit WORD 300 s, 56.67 m -> 10000 + 5667, 83.25 s -> 10000 + 5328
    assert data[pos:pos + 8] == struct.pack("<BHHHB", 0, 300, 10000 + 5667, 10000 + 5328, 0)
    pos += 8
    # speed tier: 50 km/h BYTE, dwell 60 s BYTE, distance slot unchanged, 0.30 TRY = 300 tenths
    assert data[pos:pos + 8] == struct.pack("<BBBHHB", 0, 50, 60, 10000, 300, 0)
    assert len(data) == pos + 8 + 2


def test_new_monetary_step_is_one_byte_of_0_05() -> None:
    # Table 4.7: a tier with a new monetary step 0.10 -> byte 2; the units are stated
    tiers = [{"id": "x", "kind": "distance", "limit": "2000", "monetary_step": "0.10", "unit_distance": "38.74",
              "unit_time_s": "60"}]
    tariffs = [{"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "56.67",
                "unit_time_fare": "0.05", "unit_time_s": "30", "tiers": ["x"]}]
    data = encode(_set(tariffs=tariffs, tiers=tiers))
    pos = HEAD + 23 + 5 + 1 + 19
    assert data[pos:pos + 10] == struct.pack("<BIHHB", 0, 2000, 10000 + 3874, 10000 + 60 * 64, 2)
    back = decode(data).tiers[0]
    assert back.monetary_step == Decimal("0.10")
    assert (back.unit_distance_fare, back.unit_time_fare) == (Decimal("0.10"), Decimal("0.10"))


# --- activations (S3 §4.4, Table 4.19) ------------------------------------------------------------


def test_activation_record_steps_and_dates() -> None:
    tariffs = [
        {"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
         "unit_time_fare": "0.05", "unit_time_s": "10",
         "activation": {"kind": "D", "start": "06:00", "end": "15:00"},
         "also_active": [{"kind": "SN", "from": "2015-03-24", "to": "2015-03-31", "start": "08:00", "end": "20:00"},
                         {"kind": "HW", "from": "03-24", "to": "03-31",
                          "weekdays": {"sat": "08:00-19:00", "sun": "08:00-19:00"}}]},
    ]
    data = encode(_set(tariffs=tariffs))
    pos = HEAD + 23 + 5
    assert data[pos] == 3  # three activation records
    pos += 1
    # S3: "06:00 -> 24, 15:00 -> 60" (15-minute steps); D is code 1 in Table 4.15 order
    assert data[pos:pos + 19] == struct.pack("<BHH14B", 1, 0, 0, 24, 60, *[0] * 12)
    pos += 19
    days_from = (date(2015, 3, 24) - date(2000, 1, 1)).days  # S3: days since 01.01.2000 as a WORD
    days_to = (date(2015, 3, 31) - date(2000, 1, 1)).days
    assert data[pos:pos + 19] == struct.pack("<BHH14B", 6, days_from, days_to, 32, 80, *[0] * 12)
    pos += 19
    steps = [0] * 10 + [32, 76, 32, 76]
    assert data[pos:pos + 19] == struct.pack("<BHH14B", 5, 24 + 256 * 3, 31 + 256 * 3, *steps)
    back = decode(data).tariffs[0]
    assert back.activation.kind == "D" and [a.kind for a in back.also_active] == ["SN", "HW"]


# --- what does not fit raises TariffError naming the field ----------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("opening_distance", "230.39", "opening_distance"),  # m/10 resolution (Manchester night: 230.39 yd)
        ("opening_fare", "655.36", "opening_fare"),  # WORD of kurus: max 655.35
        ("unit_time_s", "1024", "unit_time_s"),  # WORD of s/64: max 1023.98 s
        ("unit_distance", "100.001", "unit_distance"),  # m/100 resolution
    ],
)
def test_values_the_format_cannot_hold_raise_tariff_error(field: str, value: str, needle: str) -> None:
    t = {"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
         "unit_time_fare": "0.05", "unit_time_s": "10", field: value}
    with pytest.raises(TariffError, match=needle):
        encode(_set(tariffs=[t]))


def test_tier_changing_fare_and_unit_at_once_is_refused() -> None:
    tiers = [{"id": "x", "kind": "distance", "limit": "1000", "unit_distance_fare": "0.30", "unit_distance": "50"}]
    t = {"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
         "unit_time_fare": "0.05", "unit_time_s": "10", "tiers": ["x"]}
    with pytest.raises(TariffError, match="tier 'x'"):
        encode(_set(tariffs=[t], tiers=tiers))


def test_tier_fare_of_10_currency_units_or_more_does_not_fit() -> None:
    # Table 4.8: fare slots stop at 9999 tenths of a kurus (under 10 TL)
    tiers = [{"id": "x", "kind": "distance", "limit": "1000", "unit_distance_fare": "10.00"}]
    t = {"no": "1", "opening_fare": "1.00", "unit_distance_fare": "0.05", "unit_distance": "100",
         "unit_time_fare": "0.05", "unit_time_s": "10", "tiers": ["x"]}
    with pytest.raises(TariffError, match="unit distance fare"):
        encode(_set(tariffs=[t], tiers=tiers))


# --- decoding bad input raises TariffBinaryError (a DecodeError and a TariffError) -----------------


def test_decode_refuses_crc_mismatch_truncation_and_foreign_data() -> None:
    good = encode(_set())
    assert decode(good).tariffs[0].opening_fare == Decimal("65.00")
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(TariffBinaryError, match="CRC") as exc:
        decode(bad_crc)
    assert isinstance(exc.value, DecodeError) and exc.value.position == len(good) - 2
    for broken in (b"", good[:10], b"PK\x03\x04" + good[4:], good[:-3] + good[-2:]):
        with pytest.raises(TariffBinaryError):
            decode(broken)


def _refix_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", _crc_bitwise(body))


def test_decode_with_valid_crc_but_bad_fields_names_the_position() -> None:
    good = encode(_set())
    body = bytearray(good[:-2])
    body[HEAD + 16] = ord("a")  # tariff number must be 1-9, A-Z
    with pytest.raises(TariffBinaryError, match="tariff number") as exc:
        decode(_refix_crc(bytes(body)))
    assert exc.value.position == HEAD + 16
    body = bytearray(good[:-2])
    body[HEAD + 23 + 5 + 1] = 9  # activation kind code beyond SW
    with pytest.raises(TariffBinaryError, match="activation kind"):
        decode(_refix_crc(bytes(body)))
    body = bytearray(good[:-2]) + b"\x00"  # trailing garbage
    with pytest.raises(TariffBinaryError, match="left over"):
        decode(_refix_crc(bytes(body)))


def test_decode_to_json_is_registered_for_osos_decode() -> None:
    from osos.cli.decode import DECODERS

    assert DECODERS["s3-tariff"] == "osos.tariff.binary"
    out = binary.decode_to_json(encode(_set(tariff_code=7)), None)
    assert out["tariff_code"] == 7 and out["tariffs"][0]["opening_fare"] == "65"
