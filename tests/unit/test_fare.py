"""Taximeter fare engine (TAX-2, TAX-3, TAX-6, TAX-7, TAX-8) against published tariffs.

Expected values come from the tariff files' [[examples]] (published unit prices) and from small
independent computations written here, never from the engine's own output.
"""

from __future__ import annotations

import copy
import math
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from osos.tariff.fare import State, Taximeter, TaximeterError, legs_to_samples, replay
from osos.tariff.library import TARIFF_DIR, load_tariff, load_taxi_tariff, read_document
from osos.tariff.model import TaxiTariffSet, parse_taxi_tariff_set


def _taxi_files() -> list[Path]:
    return [p for p in sorted(TARIFF_DIR.glob("*.toml")) if read_document(p).get("kind") == "taxi"]


def _examples() -> list[tuple[str, int]]:
    out = []
    for p in _taxi_files():
        ts = load_tariff(p)
        out += [(p.stem, i) for i in range(len(ts.examples))]
    return out


@pytest.mark.parametrize(("name", "index"), _examples())
def test_every_published_example_of_every_tariff_file(name: str, index: int) -> None:
    # covers TAX-9: each file's [[examples]] table is replayed
    ts = load_taxi_tariff(name)
    ex = ts.examples[index]
    start = datetime.fromisoformat(ex.start) if ex.start else None
    samples = legs_to_samples([(leg.distance, leg.duration_s) for leg in ex.legs], ts.distance_unit)
    meter = Taximeter(ts)
    meter.sample(*samples[0])
    meter.hire(samples[0][0], samples[0][1], tariff_no=ex.tariff, local_dt=start)
    for s in samples[1:]:
        meter.sample(*s)
    if ex.extras:
        meter.extra(ex.extras)
    meter.stop(samples[-1][0], samples[-1][1])
    result = meter.result()
    assert result.fare == ex.expected_fare, ex.name
    if ex.expected_total is not None:
        assert result.total == ex.expected_total


def ankara_independent(legs: list[tuple[int, int]]) -> Decimal:
    """Ankara 2026 by hand: S mode at 420/40 = 10.5 km/h; 4 TL per full 100 m, 7 TL per full minute."""
    dist = time = Fraction(0)
    for metres, seconds in legs:
        kmh = Fraction(metres, seconds) * Fraction(36, 10)
        if kmh >= Fraction(21, 2):
            dist += metres
        else:
            time += seconds
    fare = 65 + 4 * math.floor(dist / 100) + 7 * math.floor(time / 60)
    return Decimal(max(fare, 200))


@pytest.mark.parametrize(
    "legs",
    [
        [(5000, 600), (0, 300)],  # 5 km then x = 5 minutes waiting
        [(5000, 600), (0, 420), (2500, 300)],
        [(1200, 600), (8000, 720)],  # crawl at 7.2 km/h (time), then 40 km/h
        [(20000, 1800)],
        [(300, 30)],  # minimum fare
    ],
)
def test_ankara_trip_matches_independent_computation(legs: list[tuple[int, int]]) -> None:
    # covers TAX-2 (S mode): Ankara 65 TL + 4 TL/100 m + 7 TL/min, minimum 200 TL
    ts = load_taxi_tariff("ankara-2026")
    samples = legs_to_samples([(Decimal(m), Decimal(s)) for m, s in legs], step_ms=500)
    assert replay(ts, samples).fare == ankara_independent(legs)


def london_t1_fast(metres: Fraction) -> Decimal:
    """TfL 2013 tariff 1, driving above cross-over: 2.40 for 254.6 m, then 20p per 127.3 m or part
    thereof until the fare is 17.20, then 20p per 89.2 m or part thereof (independent loop)."""
    fare = Fraction(240, 100)
    paid_to = Fraction(2546, 10)
    while paid_to < metres:
        paid_to += Fraction(1273, 10) if fare < Fraction(1720, 100) else Fraction(892, 10)
        fare += Fraction(20, 100)
    return Decimal(fare.numerator) / Decimal(fare.denominator)


@pytest.mark.parametrize("metres", [200, 254, 255, 1000, 5000, 9547, 9548, 9700, 12000, 20000])
def test_london_2013_tariff_1_distance_fares(metres: int) -> None:
    # covers TAX-3 (amount tier, "or part thereof" rule) with TfL's 2013 tariff 1 text
    ts = load_taxi_tariff("london-2013")
    samples = legs_to_samples([(Decimal(metres), Decimal(metres) / 10)])  # 36 km/h
    result = replay(ts, samples, datetime(2013, 6, 5, 10, 0))
    assert result.tariff_no == "1"
    assert result.fare == london_t1_fast(Fraction(metres)).quantize(Decimal("0.01"))


def test_london_tariff_chosen_by_time_of_day() -> None:
    # covers TAX-4 via the calendar: Wednesday 10:00 -> 1, Saturday 12:00 -> 2, 23:30 -> 3
    ts = load_taxi_tariff("london-2013")
    meter = Taximeter(ts)
    assert meter.available(datetime(2013, 6, 5, 10, 0)) == ("1",)
    assert meter.available(datetime(2013, 6, 8, 12, 0)) == ("2",)
    assert meter.available(datetime(2013, 6, 5, 23, 30)) == ("3",)
    with pytest.raises(TaximeterError, match="not active"):
        meter.hire(0, 0, tariff_no="3", local_dt=datetime(2013, 6, 5, 10, 0))


def _set(**tariff: Any) -> TaxiTariffSet:
    base: dict[str, Any] = {
        "kind": "taxi", "name": "t", "city": "T", "country": "XX", "year": 2026, "currency": "EUR",
        "source": {"url": "https://example.org", "title": "t", "accessed": "2026-11-21"},
        "tariffs": [{"no": "1", "opening_fare": "3.00", "unit_distance_fare": "0.20", "unit_distance": "100",
                     "unit_time_fare": "0.20", "unit_time_s": "20"}],
    }
    tiers = tariff.pop("tiers_table", None)
    base["tariffs"][0].update(tariff)
    if tiers:
        base["tiers"] = tiers
    return parse_taxi_tariff_set(copy.deepcopy(base))


def test_s_mode_and_d_mode() -> None:
    # covers TAX-2: 1 km in 100 s at 36 km/h (cross-over 18 km/h): S charges distance only (10 units),
    # D charges both (10 distance + 5 time units); stopped 60 s: time only in both
    trip = [(Decimal(1000), Decimal(100)), (Decimal(0), Decimal(60))]
    s = replay(_set(mode="S"), legs_to_samples(trip))
    d = replay(_set(mode="D"), legs_to_samples(trip))
    assert (s.distance_units, s.time_units, s.fare) == (10, 3, Decimal("5.60"))
    assert (d.distance_units, d.time_units, d.fare) == (10, 8, Decimal("6.60"))


def test_explicit_crossover_overrides_the_derived_one() -> None:
    # 1 km in 300 s = 12 km/h: below the derived 18 km/h (time), above an explicit 10 km/h (distance)
    trip = legs_to_samples([(Decimal(1000), Decimal(300))])
    assert replay(_set(), trip).time_units == 15
    assert replay(_set(crossover_kmh="10"), trip).distance_units == 10


def test_opening_distance_and_time_and_charge_rules() -> None:
    # completed: 3.00 covers 250 m, then a unit per full 100 m -> 1000 m = 7 units
    # started ("or part thereof"): the unit is charged as it starts -> 1000 m = ceil(7.5) = 8 units
    trip = legs_to_samples([(Decimal(1000), Decimal(50))])  # 72 km/h
    assert replay(_set(opening_distance="250"), trip).distance_units == 7
    assert replay(_set(opening_distance="250", charge="started"), trip).distance_units == 8
    # at exactly the opening distance nothing has started yet
    assert replay(_set(opening_distance="250", charge="started"),
                  legs_to_samples([(Decimal(250), Decimal(10))])).fare == Decimal("3.00")
    # opening time 60 s, then 20 s units: 150 s stopped -> floor(90/20) = 4 units
    assert replay(_set(opening_time_s="60"), legs_to_samples([(Decimal(0), Decimal(150))])).time_units == 4


def test_distance_tier_switches_tariff_number_and_carries_the_partial_unit() -> None:
    # covers TAX-3: from 2 km on, 100 m units become 50 m and the number shown becomes '2'.
    # 2150 m: 20 units to 2 km, then 150 m / 50 m = 3 units -> 23 units
    ts = _set(tiers=["d"], tiers_table=[{"id": "d", "kind": "distance", "limit": "2000",
                                         "unit_distance": "50", "switch_to": "2"}])
    r = replay(ts, legs_to_samples([(Decimal(2150), Decimal(150))], step_ms=1000))
    assert (r.tariff_no, r.distance_units) == ("2", 23)
    assert any(e.kind == "tier" and e.tariff_no == "2" for e in r.timeline)
    # the limit falls inside a sample step (12.5 m per 1 s at 45 km/h): 2040 m = 20 units to 2000 m
    # + 40 m (< 50 m) carried; 2060 m: 20 + 1
    for metres, units in ((2040, 20), (2060, 21)):
        r2 = replay(ts, legs_to_samples([(Decimal(metres), Decimal(metres) / Decimal("12.5"))]))
        assert r2.distance_units == units
    # a carried partial unit counts toward the new unit: 100 m units until 250 m, then 40 m units.
    # at 250 m: 2 units + 50 m carried >= 40 m -> 1 unit at once (10 m left); 330 m: +2 (90 m) -> 5
    ts2 = _set(tiers=["d"], tiers_table=[{"id": "d", "kind": "distance", "limit": "250", "unit_distance": "40"}])
    assert replay(ts2, legs_to_samples([(Decimal(330), Decimal(33))])).distance_units == 5


def test_time_and_amount_tiers() -> None:
    # time tier: after 10 min the time unit becomes 10 s; 15 min stopped = 30 (first 10 min) + 30 units
    ts = _set(tiers=["t"], tiers_table=[{"id": "t", "kind": "time", "limit": "600", "unit_time_s": "10"}])
    assert replay(ts, legs_to_samples([(Decimal(0), Decimal(900))])).time_units == 60
    # amount tier: once the fare reaches 5.00, 100 m units cost 0.10 instead of 0.20:
    # 5.00 after 10 units (1000 m); 3000 m -> 10 + 20 units, fare 5.00 + 2.00 = 7.00
    ts = _set(tiers=["a"], tiers_table=[{"id": "a", "kind": "amount", "limit": "5.00",
                                         "unit_distance_fare": "0.10"}])
    r = replay(ts, legs_to_samples([(Decimal(3000), Decimal(150))], step_ms=100))
    assert (r.distance_units, r.fare) == (30, Decimal("7.00"))


def test_speed_tier_with_dwell_time() -> None:
    # covers TAX-3 speed tier (Milan-like): above 50 km/h for more than 60 s the unit fare doubles.
    # 90 s at 72 km/h (20 m/s): the first 60 s = 1200 m at 0.20/100 m, then 600 m at 0.40/100 m;
    # then 60 s at 36 km/h: below the limit -> back to 0.20 (600 m).
    ts = _set(tiers=["v"], tiers_table=[{"id": "v", "kind": "speed", "limit": "50", "dwell_s": 60,
                                         "unit_distance_fare": "0.40", "switch_to": "3"}])
    r = replay(ts, legs_to_samples([(Decimal(1800), Decimal(90)), (Decimal(600), Decimal(60))]))
    assert r.fare == Decimal("3.00") + 12 * Decimal("0.20") + 6 * Decimal("0.40") + 6 * Decimal("0.20")
    kinds = [(e.kind, e.tariff_no) for e in r.timeline if e.kind == "tier"]
    assert kinds == [("tier", "3"), ("tier", "1")]


def test_state_machine() -> None:
    # covers TAX-6: FREE -> HIRED -> STOPPED (>= 10 s) -> FREE; back to HIRED allowed; CALIBRATION from FREE
    ts = _set(extra_fare="1.50", max_extras=2, minimum_fare="4.00")
    m = Taximeter(ts)
    assert m.state is State.FREE and m.fare_milli == 0
    with pytest.raises(TaximeterError):
        m.stop(0)
    with pytest.raises(TaximeterError, match="HIRED or STOPPED"):
        m.extra()
    m.calibrate()
    with pytest.raises(TaximeterError):
        m.hire(0, 0)
    m.end_calibration()
    m.hire(0, 0)
    assert m.state is State.HIRED and m.fare_milli == 3000  # opening fare shown
    with pytest.raises(TaximeterError, match="only reachable from FREE"):
        m.calibrate()
    m.sample(10_000, 200_000)  # 200 m at 72 km/h
    m.extra()
    m.stop(10_000)
    assert m.state is State.STOPPED and m.fare_milli == 4000  # 3.40 metered -> minimum 4.00
    m.resume(12_000)
    m.sample(22_000, 400_000)
    m.stop(22_000)
    m.extra()
    with pytest.raises(TaximeterError, match="at most 2 extras"):
        m.extra()
    with pytest.raises(TaximeterError, match="at least 10 s"):
        m.free(31_999)
    result = m.free(32_000)
    assert m.state is State.FREE and m.fare_milli == 0
    assert (result.fare, result.extras, result.total) == (Decimal("4.00"), Decimal("3.00"), Decimal("7.00"))
    # covers TAX-8: totalizers
    tot = m.totals
    assert (tot.trips, tot.money_milli, tot.extras_milli) == (1, 7000, 3000)
    assert tot.hired_distance_um == 400_000_000 and tot.total_distance_um == 400_000_000
    m.sample(40_000, 900_000)  # driving FREE: total distance only
    assert (m.totals.total_distance_um, m.totals.hired_distance_um) == (900_000_000, 400_000_000)


def test_pulses_with_calibration_constant() -> None:
    # covers TAX-7: k = 5000 pulses/km (Turkish k = 1000 per 200 m); 5000 pulses = 1 km exactly,
    # and 3 pulses per sample never drift (floor of the cumulative value)
    ts = _set()
    m = Taximeter(ts, k_per_km=5000)
    m.pulses(0, 0)
    m.hire(0)
    for i in range(1, 1668):
        m.pulses(i * 10, i * 3)  # 0.6 m per 10 ms = 216 km/h
    m.stop(1667 * 10)
    assert m.hired_d == 5001 * 1_000_000 * 1000 // 5000 // 1000 * 1000  # 1000.2 m
    assert m.dist.units == 10
    with pytest.raises(TaximeterError, match="calibration constant"):
        Taximeter(ts).pulses(0, 1)


def test_bad_trip_input() -> None:
    ts = _set()
    with pytest.raises(TaximeterError, match="backwards"):
        replay(ts, [(0, 0), (1000, 50_000), (500, 60_000)])
    with pytest.raises(TaximeterError, match="backwards"):
        replay(ts, [(0, 0), (1000, 50_000), (2000, 40_000)])
    with pytest.raises(TaximeterError, match="at least one sample"):
        replay(ts, [])


def test_extra_activation_windows_offer_the_tariff_once() -> None:
    # covers TAX-4 wiring: also_active windows make a tariff available; one entry per tariff
    ts = parse_taxi_tariff_set({
        "kind": "taxi", "name": "w", "city": "W", "country": "XX", "year": 2026, "currency": "EUR",
        "source": {"url": "https://example.org", "title": "t", "accessed": "2026-11-21"},
        "only_one_active": True,
        "tariffs": [
            {"no": "1", "opening_fare": "3", "monetary_step": "0.2", "km_fare": "2", "hourly_fare": "30"},
            {"no": "2", "opening_fare": "4", "monetary_step": "0.2", "km_fare": "2", "hourly_fare": "30",
             "activation": {"kind": "D", "start": "22:00", "end": "06:00"},
             "also_active": [{"kind": "HN", "from": "12-25", "to": "12-26", "start": "00:00", "end": "24:00"},
                             {"kind": "D", "start": "23:00", "end": "01:00"}]},
        ],
    })
    meter = Taximeter(ts)
    assert meter.available(datetime(2026, 3, 4, 12, 0)) == ("1",)
    assert meter.available(datetime(2026, 12, 25, 12, 0)) == ("2",)  # holiday window wins (HN > N)
    assert meter.available(datetime(2026, 3, 4, 23, 30)) == ("2",)


def test_calibration_measures_distance_and_time_and_checks_the_mpe() -> None:
    # covers TAX-6 (CALIBRATION from FREE) and TAX-7 (k, MPE of S3 Table 2.1)
    from osos.tariff.fare import within_mpe

    m = Taximeter(_set(), k_per_km=10_000)  # S3 4.5.1 test set-up: k = 10,000 -> 10 pulses per metre
    m.pulses(0, 0)
    m.calibrate()
    m.pulses(60_000, 2_003)  # the signal generator's 2003 pulses over 60 s
    distance, seconds = m.end_calibration()
    assert (distance, seconds, m.state) == (Decimal("200.3"), Decimal(60), State.FREE)
    # type approval: 4 m or 0.2 % (the greater); in service 2 %
    assert within_mpe("distance", distance, Decimal(200))  # 0.3 m <= 4 m
    assert within_mpe("distance", Decimal("1003"), Decimal(1000))  # 3 m <= max(4 m, 2 m)
    assert not within_mpe("distance", Decimal("1005"), Decimal(1000))  # 5 m > 4 m
    assert within_mpe("distance", Decimal("5009"), Decimal(5000))  # 9 m <= 0.2 % x 5000 m = 10 m
    assert within_mpe("distance", Decimal("1019"), Decimal(1000), in_service=True)  # 19 m <= 2 %
    assert not within_mpe("distance", Decimal("1021"), Decimal(1000), in_service=True)
    assert within_mpe("time", Decimal("600.5"), Decimal(600))  # 0.5 s <= 0.1 % x 600 s = 0.6 s
    assert not within_mpe("time", Decimal("60.3"), Decimal(60))  # 0.3 s > max(0.2 s, 0.06 s)
    assert m.totals.total_distance_um == 200_300_000 and m.totals.hired_distance_um == 0


def test_trip_log_keeps_each_trip() -> None:
    # covers TAX-8 optional per-trip records
    m = Taximeter(_set())
    for k in range(2):
        base = k * 100_000
        m.sample(base, k * 1_000_000)
        m.hire(base)
        m.sample(base + 50_000, k * 1_000_000 + 1_000_000)  # 1 km at 72 km/h: 3.00 + 10 x 0.20
        m.stop(base + 50_000)
        m.free(base + 60_000)
    assert [r.fare for r in m.totals.trip_log] == [Decimal("5.00"), Decimal("5.00")]
    assert m.totals.trips == 2 and m.totals.money_milli == 10_000
