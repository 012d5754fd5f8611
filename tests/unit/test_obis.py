"""OBIS codes: the IEC 62056-61 written forms, letter groups, names/units from osos/data/obis.toml.

Expected numbers follow IEC 62056-61's letter table (C = 96, F = 97, L = 98, P = 99) and the
value-group layout A-B:C.D.E*F; names are checked against S1 table 3.7 and the HES-27 list.
# covers AMR-2, HES-27, HES-28
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osos.protocols import obis
from osos.protocols.errors import DecodeError
from osos.protocols.obis import ObisCode, ObisError, UnknownObisCode, describe, lookup, parse_obis

TOML = Path(obis.__file__).resolve().parent.parent / "data" / "obis.toml"


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("1.8.0", (None, None, 1, 8, 0, None)),
        ("0.9.1", (None, None, 0, 9, 1, None)),
        ("C.1.0", (None, None, 96, 1, 0, None)),
        ("F.F.0", (None, None, 97, 97, 0, None)),
        ("F.F", (None, None, 97, 97, None, None)),
        ("P.01", (None, None, 99, 1, None, None)),
        ("L.1.0", (None, None, 98, 1, 0, None)),
        ("1.8.1*12", (None, None, 1, 8, 1, 12)),
        ("1.8.1&03", (None, None, 1, 8, 1, 3)),
        ("1-0:1.8.0*255", (1, 0, 1, 8, 0, 255)),
        ("0-0:C.1.0*255", (0, 0, 96, 1, 0, 255)),
        ("1-0:0.9.1*255", (1, 0, 0, 9, 1, 255)),
        ("1:1.8.0", (None, 1, 1, 8, 0, None)),
        ("1.0.1.8.0.255", (1, 0, 1, 8, 0, 255)),
    ],
)
def test_parse_forms(text: str, groups: tuple[int | None, ...]) -> None:
    code = parse_obis(text)
    assert (code.a, code.b, code.c, code.d, code.e, code.f) == groups


def test_letters_compare_equal_to_numbers_but_keep_their_spelling() -> None:
    assert parse_obis("C.1.0") == parse_obis("96.1.0")
    assert parse_obis("F.F.0") == parse_obis("97.97.0")
    assert parse_obis("C.1.0").short == "C.1.0"
    assert parse_obis("96.1.0").short == "96.1.0"
    assert parse_obis("1.8.1&03").short == "1.8.1&03"


def test_short_and_full_formatting() -> None:
    assert parse_obis("1-0:1.8.0*255").short == "1.8.0"  # F = 255 is the current value
    assert parse_obis("1.8.1*12").short == "1.8.1*12"
    assert parse_obis("1.8.0").full == "1-0:1.8.0*255"
    assert parse_obis("C.1.0").full == "0-0:96.1.0*255"  # abstract object: A = 0
    assert parse_obis("1-1:2.8.3*7").full == "1-1:2.8.3*7"
    assert str(parse_obis("1-0:1.8.0*255")) == "1-0:1.8.0"


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.8.", "1.8.0.", "256.8.0", "1.8.0*256", "X.1.0", "1.F.0*", "1-0:", "1.8.0 kWh", "١.8.0",
     "1.2.3.4", "1.0.1.8.0.256"],
)
def test_malformed_codes_raise_obis_error(text: str) -> None:
    with pytest.raises(ObisError) as err:
        parse_obis(text)
    assert isinstance(err.value, DecodeError) and err.value.reason


def test_value_groups_are_checked_on_construction() -> None:
    with pytest.raises(ObisError):
        ObisCode(None, None, 1, 300)
    with pytest.raises(ObisError):
        ObisCode(None, None, 1, 8, letters=(True, False))  # 1 has no letter form


@pytest.mark.parametrize(
    ("code", "en", "tr", "unit"),
    [
        ("1.8.0", "Total active energy import", "Toplam aktif enerji (ithal)", "kWh"),
        ("1.8.1", "Active energy import, T1 (day)", "Aktif enerji (ithal), T1 gündüz", "kWh"),
        ("1.8.2", "Active energy import, T2 (peak)", "Aktif enerji (ithal), T2 puant", "kWh"),
        ("1.8.3", "Active energy import, T3 (night)", "Aktif enerji (ithal), T3 gece", "kWh"),
        ("2.8.0", "Total active energy export", "Toplam aktif enerji (ihraç)", "kWh"),
        ("1.6.0", "Maximum active demand import", "Maksimum aktif güç demandı (ithal)", "kW"),
        ("0.9.1", "Time", "Saat", None),
        ("0.9.2", "Date", "Tarih", None),
        ("F.F.0", "FF status code (fault and alarm bits)", "FF durum kodu (arıza ve alarm bitleri)", None),
        ("F.F.1", "GF geographic code", "GF coğrafi kod", None),
    ],
)
def test_describe_en_tr(code: str, en: str, tr: str, unit: str | None) -> None:
    assert describe(code) == (en, unit)
    assert describe(code, "tr") == (tr, unit)


def test_requirement_codes_are_all_named() -> None:
    """AMR-2 (S1 table 3.7) and HES-27 billing registers all have EN/TR names and the right unit."""
    units = {
        **{f"1.8.{t}": "kWh" for t in range(5)}, **{f"2.8.{t}": "kWh" for t in range(5)},
        **{f"{c}.8.0": "kvarh" for c in range(3, 9)}, "1.6.0": "kW", "2.6.0": "kW",
        "0.0.0": None, "0.9.1": None, "0.9.2": None, "C.1.0": None, "F.F.0": None, "F.F.1": None,
    }
    for code, unit in units.items():
        info = lookup(code)
        assert info is not None, code
        assert info.en and info.tr and info.en != info.tr
        assert info.unit == unit, code


def test_description_ignores_a_b_and_names_billing_period() -> None:
    assert describe("1-0:1.8.0*255") == describe("1.8.0")
    assert describe("1.8.1*12") == ("Active energy import, T1 (day), billing period 12", "kWh")
    assert describe("1.8.1*12", "tr")[0] == "Aktif enerji (ithal), T1 gündüz, 12 numaralı fatura dönemi"
    assert describe("96.1.0") == describe("C.1.0")


def test_unknown_code() -> None:
    assert lookup("1.128.0") is None
    with pytest.raises(UnknownObisCode):
        describe("1.128.0")
    with pytest.raises(ValueError):
        describe("1.8.0", lang="de")


def test_toml_keys_parse_and_every_entry_has_both_languages() -> None:
    data = tomllib.loads(TOML.read_text("utf-8"))
    assert len(data["codes"]) >= 40
    for key, entry in data["codes"].items():
        parse_obis(key)
        assert set(entry) <= {"en", "tr", "unit"} and entry["en"] and entry["tr"], key


group = st.integers(0, 255)


@settings(max_examples=200, deadline=None)
@given(st.none() | group, st.none() | group, group, group, st.none() | group, st.none() | group, st.data())
def test_round_trip(a: int | None, b: int | None, c: int, d: int, e: int | None, f: int | None,
                    data: st.DataObject) -> None:
    letters = (data.draw(st.booleans()) and c >= 96 and c <= 99, data.draw(st.booleans()) and 96 <= d <= 99)
    code = ObisCode(a, b, c, d, e, f, letters)
    again = parse_obis(str(code))
    assert (again.c, again.d, again.e) == (c, d, e)
    assert again.f == (None if f == 255 else f)  # *255 (current value) is left out of the short form
    assert again.letters == letters
    assert parse_obis(code.full) == ObisCode(
        a if a is not None else (0 if c >= 96 else 1), b or 0, c, d, e or 0, 255 if f is None else f
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_parses_or_raises_obis_error(text: str) -> None:
    try:
        parse_obis(text)
    except ObisError as exc:
        assert exc.reason
