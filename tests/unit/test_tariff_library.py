"""Every bundled taxi tariff: validates, reproduces its [[examples]], survives the S3 binary image.

Covers TAX-1..TAX-5 and TAX-9 for the library files. The expected fares are the ones each file
lists with its source (published examples, or computations from the published rates shown in the
file's comments); the fare engine must reproduce them exactly, from the TOML and again from the
decoded binary image.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from osos.tariff import binary
from osos.tariff.errors import TariffError
from osos.tariff.fare import legs_to_samples, replay
from osos.tariff.library import TARIFF_DIR, load_taxi_tariff, read_document
from osos.tariff.model import Example, TaxiTariffSet

TAXI_FILES = sorted(p.stem for p in TARIFF_DIR.glob("*.toml") if read_document(p).get("kind") == "taxi")

# Files the S3 layout cannot hold exactly, and the field that does not fit (TAX-5: encode names it).
UNENCODABLE = {
    "berlin-2014": "unit_time_s = 28.8",  # 28.8 s is not a multiple of S3's s/64
    "berlin-2022": "unit_time_s = 18.46",  # 0.20 EUR per 18.46 s (39 EUR/h): not a multiple of s/64
    "manchester-2023": "tariff 1 unit_time_s = 31.57",  # s/64 resolution (and 230.39 yd is finer than yd/10)
    "london-2013": "tier 't1-high' unit time = 19.2",  # s/64 resolution
    "nyc-2022": "tariff 1 unit_distance = 321.8688",  # 1/5 mile in metres: finer than m/100
}


def _replay(ts: TaxiTariffSet, ex: Example):
    samples = legs_to_samples([(leg.distance, leg.duration_s) for leg in ex.legs], ts.distance_unit)
    if ex.extras:
        t, d = samples[-1]
        samples[-1] = (t, d, ex.extras)  # type: ignore[call-overload]
    start = datetime.fromisoformat(ex.start) if ex.start else None
    return replay(ts, samples, start, tariff_no=ex.tariff)


def test_the_library_has_the_s3_cities() -> None:
    for name in ("berlin-2014", "berlin-2015", "ireland-2015", "ljubljana-2013", "manchester-2023",
                 "milan-2023", "tehran-2015"):
        assert name in TAXI_FILES


@pytest.mark.parametrize("name", TAXI_FILES)
def test_file_validates_and_cites_its_source(name: str) -> None:
    ts = load_taxi_tariff(name)
    assert ts.name == name
    assert ts.source.url.startswith("http") and ts.source.title
    assert ts.examples, f"{name} lists no [[examples]]"
    assert all(ex.source for ex in ts.examples)


@pytest.mark.parametrize("name", TAXI_FILES)
def test_examples_reproduce_exactly(name: str) -> None:
    ts = load_taxi_tariff(name)
    for ex in ts.examples:
        result = _replay(ts, ex)
        assert result.fare == ex.expected_fare, f"{name}: {ex.name}"
        if ex.expected_total is not None:
            assert result.total == ex.expected_total, f"{name}: {ex.name}"


@pytest.mark.parametrize("name", TAXI_FILES)
def test_binary_round_trip_or_documented_refusal(name: str) -> None:
    ts = load_taxi_tariff(name)
    if name in UNENCODABLE:
        with pytest.raises(TariffError) as exc:
            binary.encode(ts)
        assert UNENCODABLE[name] in str(exc.value)
        return
    data = binary.encode(ts)
    back = binary.decode(data)
    assert back == binary.binary_view(ts)
    assert binary.encode(back) == data  # a second trip changes nothing
    # everything the meter charges with survives: numbers, units, tiers, activations, options
    assert [t.no for t in back.tariffs] == [t.no for t in ts.tariffs]
    for mine, theirs in zip(ts.tariffs, back.tariffs, strict=True):
        for field in ("opening_fare", "opening_distance", "opening_time_s", "unit_distance_fare", "unit_distance",
                      "unit_time_fare", "unit_time_s", "extra_fare", "max_extras", "minimum_fare", "mode",
                      "charge", "crossover_kmh", "activation", "also_active"):
            assert getattr(theirs, field) == getattr(mine, field), f"{name} tariff {mine.no} {field}"
    assert (back.tariff_code, back.only_one_active, back.dst_switch, back.distance_unit, back.currency,
            back.decimals) == (ts.tariff_code, ts.only_one_active, ts.dst_switch, ts.distance_unit, ts.currency,
                               ts.decimals)
    # and the decoded image charges the published examples to the cent
    for ex in ts.examples:
        assert _replay(back, ex).fare == ex.expected_fare, f"{name} (decoded): {ex.name}"


def test_unencodable_list_names_only_library_files() -> None:
    assert set(UNENCODABLE) <= set(TAXI_FILES)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2015-06-10T10:00", "1"),  # Wednesday day: standard (08:00-20:00 Mon-Sat)
        ("2015-06-10T21:00", "2"),  # Wednesday night: premium
        ("2015-06-14T10:00", "2"),  # Sunday: premium all day
        ("2015-06-01T10:00", "2"),  # June bank holiday (Monday): premium
        ("2016-03-17T12:00", "2"),  # St Patrick's Day (Thursday): premium
        ("2015-12-24T19:00", "1"),  # Christmas Eve before 20:00: standard
        ("2015-12-24T21:00", "3"),  # special from 20:00 on 24 December
        ("2015-12-25T12:00", "3"),
        ("2015-12-26T07:00", "3"),  # special until 08:00 on St Stephen's Day
        ("2015-12-26T10:00", "2"),  # then premium (public holiday)
        ("2015-12-31T21:00", "3"),  # New Year's Eve from 20:00
        ("2016-01-01T09:00", "2"),  # New Year's Day after 08:00: premium
        ("2016-01-04T09:00", "1"),  # an ordinary Monday
    ],
)
def test_ireland_rate_in_force_follows_the_order(local: str, expected: str) -> None:
    # covers TAX-4: NTA 2015 rates 1/2/3 by hour, weekday, public holiday and Christmas/New Year
    from osos.tariff.calendar import select_tariff

    ts = load_taxi_tariff("ireland-2015")
    cands = [(t.no, a) for t in ts.tariffs for a in (t.activation, *t.also_active)]
    assert select_tariff(cands, datetime.fromisoformat(local), ts.only_one_active) == (expected,)
    back = binary.decode(binary.encode(ts))  # the image selects the same rate
    cands = [(t.no, a) for t in back.tariffs for a in (t.activation, *t.also_active)]
    assert select_tariff(cands, datetime.fromisoformat(local), back.only_one_active) == (expected,)


def test_engine_refuses_the_standard_rate_on_a_bank_holiday() -> None:
    # covers TAX-4/TAX-6: only one rate may be in force (only_one_active); on the June bank holiday
    # 2015 (Monday 1 June) that is the premium rate, also after an encode/decode of the image
    from osos.tariff.fare import TaximeterError

    for ts in (load_taxi_tariff("ireland-2015"), binary.decode(binary.encode(load_taxi_tariff("ireland-2015")))):
        with pytest.raises(TaximeterError, match="not active"):
            replay(ts, [(0, 0), (60_000, 500_000)], datetime(2015, 6, 1, 10, 0), tariff_no="1")
        assert replay(ts, [(0, 0), (60_000, 500_000)], datetime(2015, 6, 1, 10, 0)).tariff_no == "2"
