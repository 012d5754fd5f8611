"""Properties of the fare engine (TAX-2, TAX-3) over random trips and random tariffs (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.tariff.fare import Taximeter, replay
from osos.tariff.library import load_taxi_tariff
from osos.tariff.model import TaxiTariffSet, parse_taxi_tariff_set

# random trips: (dt ms, dd mm) steps, from standing still to motorway speed (0..50 m/s)
steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3000), st.integers(min_value=0, max_value=50)),
    min_size=1, max_size=120,
).map(lambda xs: [(dt, dt * v) for dt, v in xs])


def cumulative(trip: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, t, d = [(0, 0)], 0, 0
    for dt, dd in trip:
        t, d = t + dt, d + dd
        out.append((t, d))
    return out


@st.composite
def tariffs(draw: Any, mode: str | None = None, tiers: bool = True) -> TaxiTariffSet:
    money = st.integers(min_value=1, max_value=5000).map(lambda m: f"{m / 1000:.3f}")
    t: dict[str, Any] = {
        "no": "1",
        "mode": mode or draw(st.sampled_from(["S", "D"])),
        "charge": draw(st.sampled_from(["completed", "started"])),
        "opening_fare": draw(money),
        "opening_distance": str(draw(st.integers(min_value=0, max_value=500))),
        "opening_time_s": str(draw(st.integers(min_value=0, max_value=120))),
        "unit_distance_fare": draw(money),
        "unit_distance": str(draw(st.integers(min_value=10, max_value=400))),
        "unit_time_fare": draw(money),
        "unit_time_s": str(draw(st.integers(min_value=5, max_value=120))),
    }
    tier_table = []
    if tiers and draw(st.booleans()):
        kind = draw(st.sampled_from(["distance", "time", "amount", "speed"]))
        limit = {"distance": "500", "time": "60", "amount": "2.000", "speed": "30"}[kind]
        tier: dict[str, Any] = {"id": "x", "kind": kind, "limit": limit, "switch_to": "2",
                                "unit_distance_fare": draw(money), "unit_time_s": "7"}
        if kind == "speed":
            tier["dwell_s"] = draw(st.integers(min_value=0, max_value=10))
        tier_table.append(tier)
        t["tiers"] = ["x"]
    return parse_taxi_tariff_set({
        "kind": "taxi", "name": "gen", "city": "G", "country": "XX", "year": 2026, "currency": "EUR",
        "source": {"url": "https://example.org", "title": "generated", "accessed": "2026-11-21"},
        "tariffs": [t], "tiers": tier_table,
    })


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tariffs(), steps)
def test_fare_never_decreases_while_hired(ts: TaxiTariffSet, trip: list[tuple[int, int]]) -> None:
    m = Taximeter(ts)
    m.sample(0, 0)
    m.hire(0, 0)
    last = m.fare_milli
    for t, d in cumulative(trip)[1:]:
        m.sample(t, d)
        assert m.fare_milli >= last
        last = m.fare_milli


@SETTINGS
@given(tariffs(mode="S", tiers=False), steps)
def test_s_mode_charges_each_step_to_exactly_one_of_distance_or_time(
    ts: TaxiTariffSet, trip: list[tuple[int, int]]
) -> None:
    # covers TAX-2: per sample step, distance units and time units never both advance in S mode,
    # and the fare is the opening fare plus exactly the units charged
    m = Taximeter(ts)
    m.sample(0, 0)
    m.hire(0, 0)
    t0 = ts.tariffs[0]
    for t, d in cumulative(trip)[1:]:
        du, tu = m.dist.units, m.time.units
        m.sample(t, d)
        assert not (m.dist.units > du and m.time.units > tu)
    udf, utf = int(t0.unit_distance_fare * 1000), int(t0.unit_time_fare * 1000)
    assert m.fare_milli == int(t0.opening_fare * 1000) + m.dist.units * udf + m.time.units * utf


@SETTINGS
@given(st.data(), steps)
def test_d_mode_never_charges_less_than_s_mode(data: Any, trip: list[tuple[int, int]]) -> None:
    # covers TAX-2: the same tariff and trip in D mode >= S mode (D charges both counters)
    s = data.draw(tariffs(mode="S", tiers=False))
    from dataclasses import replace

    d = replace(s, tariffs=(replace(s.tariffs[0], mode="D"),))
    samples = cumulative(trip)
    assert replay(d, samples, record_timeline=False).fare >= replay(s, samples, record_timeline=False).fare


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariffs(), steps)
def test_fare_monotone_long_run(ts: TaxiTariffSet, trip: list[tuple[int, int]]) -> None:
    test_fare_never_decreases_while_hired.hypothesis.inner_test(ts, trip)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=2, max_size=80))
def test_ankara_sample_rate_does_not_change_the_fare(speeds: list[int]) -> None:
    # a trip sampled at 1 Hz and the same trip with every second sample dropped at constant-speed
    # pairs gives the same fare when each pair has one speed (resampling is exact)
    ts = load_taxi_tariff("ankara-2026")
    fine, coarse, t, d = [(0, 0)], [(0, 0)], 0, 0
    for v in speeds:  # v m/s held for 2 s
        fine.append((t + 1000, d + v * 1000))
        t, d = t + 2000, d + 2 * v * 1000
        fine.append((t, d))
        coarse.append((t, d))
    assert replay(ts, fine).fare == replay(ts, coarse).fare


@SETTINGS
@given(tariffs(), steps, st.booleans())
def test_vectorised_replay_equals_the_sample_by_sample_engine(
    ts: TaxiTariffSet, trip: list[tuple[int, int]], timeline: bool
) -> None:
    # the closed-form stretches (numpy arrays) and the scalar engine agree on everything
    from dataclasses import replace

    import numpy as np

    samples = cumulative(trip)
    a = replay(ts, samples, record_timeline=timeline)
    b = replay(ts, np.array(samples, dtype=np.int64), record_timeline=timeline)
    assert replace(a, timeline=()) == replace(b, timeline=())
    assert per_sample(a.timeline) == per_sample(b.timeline)


def per_sample(timeline: Any) -> tuple[dict[tuple[int, str], int], list[Any]]:
    """Units per (sample, counter) and the other events in order. In D mode the scalar path may
    charge distance, time, distance inside one segment (it splits at each unit when an amount tier
    is pending); the array path reports one event per counter per sample: the sums agree."""
    charges: dict[tuple[int, str], int] = {}
    others = []
    for e in timeline:
        if e.kind in ("distance", "time"):
            charges[(e.t_ms, e.kind)] = charges.get((e.t_ms, e.kind), 0) + e.units
        else:
            others.append((e.t_ms, e.kind, e.fare_milli, e.tariff_no, e.units))
    return charges, others


def test_vectorised_replay_across_chunks_and_tier_crossings() -> None:
    # a 20,000-sample trip spans several closed-form chunks and crosses London's amount tier and
    # the 10.4 mph cross-over many times; the array path must equal the scalar engine exactly
    from datetime import datetime

    import numpy as np

    rng = np.random.default_rng(3)
    speed = np.repeat(rng.choice([0, 2500, 6000, 15000], size=200), 100)  # mm/s, 100-sample phases
    d = np.concatenate(([0], np.cumsum(speed[1:] // 10)))
    arr = np.stack([np.arange(len(d), dtype=np.int64) * 100, d], axis=1)
    ts = load_taxi_tariff("london-2013")
    start = datetime(2013, 6, 5, 10, 0)
    a = replay(ts, [(int(x), int(y)) for x, y in arr], start)
    b = replay(ts, arr, start)
    assert a == b and a.time_units > 0 and a.distance_units > 0


_junk = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                  st.text(max_size=12), st.lists(st.integers(), max_size=3),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["top", "tariff", "tier", "example"]), st.text(min_size=1, max_size=20), _junk)
def test_any_malformed_tariff_document_gives_a_tariff_error(where: str, key: str, value: Any) -> None:
    # bad input never escapes as another exception type
    from osos.tariff.errors import TariffError

    doc: dict[str, Any] = {
        "kind": "taxi", "name": "f", "city": "F", "country": "XX", "year": 2026, "currency": "EUR",
        "source": {"url": "https://example.org", "title": "t", "accessed": "2026-11-21"},
        "tariffs": [{"no": "1", "opening_fare": "3", "monetary_step": "0.2", "km_fare": "2",
                     "hourly_fare": "30", "tiers": ["a"]}],
        "tiers": [{"id": "a", "kind": "distance", "limit": "1000", "km_fare": "1.5"}],
        "examples": [{"name": "e", "tariff": "1", "legs": [{"distance": "100", "duration_s": "10"}],
                      "expected_fare": "3"}],
    }
    target = {"top": doc, "tariff": doc["tariffs"][0], "tier": doc["tiers"][0],
              "example": doc["examples"][0]}[where]
    known = list(target)
    target[known[len(key) % len(known)] if key.isdigit() else key] = value
    try:
        ts = parse_taxi_tariff_set(doc)
    except TariffError as exc:
        assert str(exc)  # a reason, naming where
    else:
        assert ts.tariffs[0].unit_distance > 0 and ts.tariffs[0].unit_time_s > 0


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="t_sdistancempulsextr,0123456789.-\n x", max_size=200))
def test_any_malformed_trip_csv_gives_a_trip_csv_error(text: str) -> None:
    from osos.cli.fare import TripCsvError, read_trip_csv

    try:
        rows = read_trip_csv(text, 5000)
    except TripCsvError:
        return
    assert all(r[0] >= 0 and r[1] >= 0 for r in rows)
