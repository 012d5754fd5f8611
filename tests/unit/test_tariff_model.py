"""Tariff model, TOML schema, validation and library (TAX-1, TAX-3, TAX-4 wiring, TAX-9)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from osos.tariff.calendar import Activation
from osos.tariff.errors import TariffError
from osos.tariff.library import TARIFF_DIR, find_tariff, list_tariffs, load_taxi_tariff, read_document
from osos.tariff.model import crossover_kmh, overlay, parse_taxi_tariff_set

BASE: dict[str, Any] = {
    "kind": "taxi",
    "name": "test",
    "city": "Testville",
    "country": "XX",
    "year": 2026,
    "currency": "EUR",
    "source": {"url": "https://example.org/tariff", "title": "test", "accessed": "2026-11-21"},
    "tariffs": [
        {"no": "1", "opening_fare": "3.00", "monetary_step": "0.20", "km_fare": "1.80", "hourly_fare": "24.00"}
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def tariff_doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d["tariffs"][0].update(changes)
    return d


def test_monetary_step_derives_unit_distance_and_time() -> None:
    # covers TAX-1: km fare 1.80 and step 0.20 -> 1000 * 0.20 / 1.80 = 111.111111 m; 24/h -> 30 s
    t = parse_taxi_tariff_set(doc()).tariffs[0]
    assert t.unit_distance_fare == Decimal("0.20") and t.unit_time_fare == Decimal("0.20")
    assert t.unit_distance == Decimal("111.111111")
    assert t.unit_time_s == Decimal("30")


def test_stated_unit_distance_is_kept_not_recomputed() -> None:
    # a regulation saying "111.70 m per 0.20 EUR" keeps 111.70 even with a km fare that gives 111.11
    t = parse_taxi_tariff_set(tariff_doc(unit_distance="111.70")).tariffs[0]
    assert t.unit_distance == Decimal("111.70")


def test_km_fare_with_unit_distance_gives_unit_fare_to_a_tenth_of_a_kurus() -> None:
    # Turkish style (S3 3.1): km fare and unit distance; 13.75/km per 100 m = 1.375; 152.73/h per 60 s
    # = 2.5455 -> kept to 1/1000 (half up) = 2.546
    t = parse_taxi_tariff_set(doc(tariffs=[{"no": "1", "opening_fare": "19.17", "km_fare": "13.75",
                                            "unit_distance": "100", "hourly_fare": "152.73",
                                            "unit_time_s": "60"}])).tariffs[0]
    assert t.unit_distance_fare == Decimal("1.375")
    assert t.unit_time_fare == Decimal("2.546")


def test_crossover_speed_is_hourly_fare_over_km_fare() -> None:
    # covers TAX-2: 24.00 EUR/h / 1.80 EUR/km = 13.33 km/h
    t = parse_taxi_tariff_set(doc()).tariffs[0]
    assert abs(crossover_kmh(t) - Decimal(24) / Decimal("1.80")) < Decimal("0.0001")
    ankara = load_taxi_tariff("ankara-2026").tariffs[0]
    assert crossover_kmh(ankara) == Decimal("10.5")  # 420 TL/h / 40 TL/km
    nyc = load_taxi_tariff("nyc-2022").tariffs[0]
    assert crossover_kmh(nyc) == Decimal("19.312128")  # 12 mph exactly (1 mph = 1.609344 km/h)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"opening_fare": 3.0}, "quoted decimals"),
        ({"opening_fare": "-1"}, "negative"),
        ({"opening_fare": "3.0001"}, "finer than 1/1000"),
        ({"no": "10"}, "one character"),
        ({"no": "a"}, "one character"),
        ({"mode": "X"}, "mode"),
        ({"charge": "sometimes"}, "charge"),
        ({"colour": "yellow"}, "unknown key"),
        ({"tiers": ["nope"]}, "unknown tier"),
        ({"max_extras": 256}, "out of range"),
        ({"activation": {"kind": "Q"}}, "activation"),
        ({"activation": {"kind": "D", "start": "08:10", "end": "10:00"}}, "15-minute"),
    ],
)
def test_bad_tariff_fields_are_refused_with_the_key_named(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TariffError) as exc:
        parse_taxi_tariff_set(tariff_doc(**change))
    assert fragment in str(exc.value)


def test_units_must_be_resolvable() -> None:
    d = doc(tariffs=[{"no": "1", "opening_fare": "3", "unit_distance_fare": "0.2"}])
    with pytest.raises(TariffError, match="cannot resolve unit_distance"):
        parse_taxi_tariff_set(d)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("kind", "energy", "expected \"taxi\""),
        ("source", None, "public source"),
        ("tariffs", [], "at least one"),
        ("distance_unit", "ft", "distance_unit"),
        ("year", "2026", "integer"),
    ],
)
def test_bad_file_fields(key: str, value: Any, fragment: str) -> None:
    d = doc()
    if value is None:
        del d[key]
    else:
        d[key] = value
    with pytest.raises(TariffError, match=fragment):
        parse_taxi_tariff_set(d)


def test_duplicate_tariff_numbers_and_tier_limits() -> None:
    d = doc()
    d["tariffs"].append(copy.deepcopy(d["tariffs"][0]))
    with pytest.raises(TariffError, match="duplicate tariff number"):
        parse_taxi_tariff_set(d)
    # TAX-3: at most 8 speed tiers (1-byte flag word)
    d = doc(tiers=[{"id": f"s{i}", "kind": "speed", "limit": str(20 + i)} for i in range(9)])
    with pytest.raises(TariffError, match="more than 8 speed tiers"):
        parse_taxi_tariff_set(d)
    d = doc(tiers=[{"id": "d", "kind": "distance", "limit": "100", "dwell_s": 5}])
    with pytest.raises(TariffError, match="only speed tiers"):
        parse_taxi_tariff_set(d)


def test_activation_uses_the_calendar_model() -> None:
    # covers TAX-4 wiring: the file's activation table is osos.tariff.calendar.Activation
    act = {"kind": "D", "start": "22:00", "end": "06:00"}
    t = parse_taxi_tariff_set(tariff_doc(activation=act)).tariffs[0]
    assert isinstance(t.activation, Activation)
    assert (t.activation.start_step, t.activation.end_step) == (88, 24)  # 22:00 = 88 x 15 min


def test_overlay_of_tiers() -> None:
    # covers TAX-3: a new km fare keeps the step of a step-based tariff (unit shrinks/grows) ...
    ts = parse_taxi_tariff_set(doc(tiers=[
        {"id": "km", "kind": "distance", "limit": "7000", "km_fare": "1.50", "switch_to": "2"},
        {"id": "fare", "kind": "time", "limit": "600", "unit_distance_fare": "0.30"},
        {"id": "units", "kind": "amount", "limit": "20", "unit_distance": "89.2", "unit_time_s": "19.2"},
    ]))
    base = ts.tariffs[0]
    km = overlay(base, ts.tier("km"))
    assert (km.no, km.unit_distance_fare, km.unit_distance) == ("2", Decimal("0.20"), Decimal("133.333333"))
    fare = overlay(base, ts.tier("fare"))  # ... a new unit fare keeps the unit
    assert (fare.no, fare.unit_distance_fare, fare.unit_distance) == ("1", Decimal("0.30"), base.unit_distance)
    units = overlay(base, ts.tier("units"))  # ... new units keep the fare
    assert (units.unit_distance, units.unit_time_s, units.unit_time_fare) == (
        Decimal("89.2"), Decimal("19.2"), Decimal("0.20"))
    # ... and a unit-based tariff keeps its unit when the km fare changes: 30 TL/km per 100 m = 3 TL
    tr = parse_taxi_tariff_set(doc(
        tariffs=[{"no": "1", "opening_fare": "65", "km_fare": "40", "unit_distance": "100",
                  "unit_time_fare": "7", "unit_time_s": "60", "tiers": ["d"]}],
        tiers=[{"id": "d", "kind": "distance", "limit": "5000", "km_fare": "30"}]))
    low = overlay(tr.tariffs[0], tr.tier("d"))
    assert (low.unit_distance_fare, low.unit_distance) == (Decimal("3.000"), Decimal("100"))


def test_every_library_file_validates_and_cites_a_source() -> None:
    # covers TAX-9: the library lists each file; every taxi file parses and cites url/title/date
    infos = list_tariffs()
    names = {i.name for i in infos}
    assert {"ankara-2026", "nyc-2022", "london-2013", "istanbul-2023"} <= names
    for info in infos:
        assert not info.error, info
        if info.kind == "taxi":
            ts = load_taxi_tariff(info.path)
            assert ts.source.url.startswith("http") and ts.source.title and ts.source.accessed
            assert ts.examples, f"{info.name} lists no [[examples]]"


def test_library_lookup_errors() -> None:
    assert find_tariff("ankara-2026") == TARIFF_DIR / "ankara-2026.toml"
    with pytest.raises(TariffError, match="no tariff file"):
        find_tariff("atlantis-1999")


def test_toml_syntax_error_is_a_tariff_error(tmp_path: Any) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("kind = \"taxi\"\nname = \n", encoding="utf-8")
    with pytest.raises(TariffError, match="invalid TOML"):
        read_document(p)


def test_example_start_and_boolean_options_are_checked() -> None:
    d = doc(examples=[{"name": "x", "tariff": "1", "legs": [{"distance": "1", "duration_s": "1"}],
                       "expected_fare": "3.00", "start": "yesterday"}])
    with pytest.raises(TariffError, match="ISO local date-time"):
        parse_taxi_tariff_set(d)
    with pytest.raises(TariffError, match="true or false"):
        parse_taxi_tariff_set(doc(only_one_active="yes"))
