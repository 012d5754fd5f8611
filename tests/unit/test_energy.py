"""Energy ToU billing and water block billing (AMR-4, HES-27, WAT tiered tariff).

Expected values are computed independently in each test (plain Decimal arithmetic or a per-interval
loop), or come from the tariff source's own worked figure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osos.tariff import library
from osos.tariff.energy import (
    LoadProfile,
    LoadProfileError,
    amounts_exact,
    band_index,
    band_totals,
    bill_load_profile,
    bill_registers,
    bill_water,
    bill_water_profile,
    grid_band_totals,
    load_energy_tariff,
    load_water_tariff,
    make_load_profile,
    parse_load_profile_csv,
    parse_quantity,
    register_deltas,
    round_minor,
    year_of_15_minute_ends,
)
from osos.tariff.errors import TariffError

THREE = library.load_tariff("tr-three-time")
SINGLE = library.load_tariff("tr-single-time")
ISKI = library.load_tariff("iski-2023")
PRICES = {"T1": Decimal("1.582541"), "T2": Decimal("2.671888"), "T3": Decimal("0.711394")}


def expected_band(start: datetime) -> str:
    """Independent statement of AMR-4's default bands: T1 06-17, T2 17-22, T3 22-06."""
    h = start.hour
    return "T1" if 6 <= h < 17 else "T2" if 17 <= h < 22 else "T3"


def money(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_interval_end_stamping_puts_05_45_06_00_in_the_night_band() -> None:  # covers AMR-4, AMR-5
    csv = "timestamp,kwh\n2025-06-11 05:45,0.100\n2025-06-11 06:00,0.200\n2025-06-11 06:15,0.400\n"
    bill = bill_load_profile(THREE, parse_load_profile_csv(csv))
    by_band = {li.label: li.quantity for li in bill.lines}
    assert by_band == {"T1": 400, "T2": 0, "T3": 300}  # 05:30-05:45 and 05:45-06:00 are night


def test_midnight_wrap_and_peak_edges() -> None:  # covers AMR-4 (T3 22:00-06:00 wraps midnight)
    ends = [datetime(2025, 1, 14, 16, 0) + timedelta(minutes=15 * i) for i in range(1, 4 * 16 + 1)]
    profile = make_load_profile(ends, [1000] * len(ends))
    bill = bill_load_profile(THREE, profile)
    # 16:00 -> 08:00 next day: T1 16-17 (4) + 06-08 (8) = 12; T2 17-22 = 20; T3 22-06 = 32 quarter hours
    assert {li.label: li.quantity // 1000 for li in bill.lines} == {"T1": 12, "T2": 20, "T3": 32}
    total = sum(PRICES[b] * n for b, n in {"T1": 12, "T2": 20, "T3": 32}.items())
    assert bill.total == money(total)


def test_single_time_matches_epdk_worked_figure() -> None:  # covers HES-27, source's own example
    # EPDK, 5 April 2025: "100 kWh for a residential subscriber costs 259,04 TL"
    assert bill_registers(SINGLE, {"T1": "100.000"}).total == Decimal("259.04")
    # a single-time tariff prices the sum of the meter's tariff registers
    assert bill_registers(SINGLE, {"T1": "60", "T2": "25.5", "T3": "14.5"}).total == Decimal("259.04")


def test_register_billing_three_time() -> None:  # covers HES-27 (T1..T4 register values)
    start = {"T1": "015214.234", "T2": "004100.000", "T3": "009000.500"}
    end = {"T1": "015314.234", "T2": "004150.125", "T3": "009200.500"}
    deltas = register_deltas(start, end)
    assert deltas == {"T1": Decimal("100"), "T2": Decimal("50.125"), "T3": Decimal("200")}
    bill = bill_registers(THREE, {k: str(v) for k, v in deltas.items()})
    exact = PRICES["T1"] * 100 + PRICES["T2"] * Decimal("50.125") + PRICES["T3"] * 200
    assert bill.total == money(exact)
    with pytest.raises(TariffError):
        bill_registers(THREE, {"T4": "1"})  # no T4 band in this tariff
    with pytest.raises(TariffError):
        register_deltas({"T1": "10"}, {"T1": "9.999"})
    with pytest.raises(TariffError):
        bill_registers(THREE, {"T1": 1.5})  # type: ignore[dict-item]  # floats refused


def test_rounding_happens_once_on_the_total() -> None:
    tariff = load_energy_tariff(
        {"kind": "energy", "name": "x", "currency": "TRY", "source": {"url": "test"},
         "bands": {"T1": {"price": "0.005"}, "T2": {"price": "0.005"}},
         "calendar": {"seasons": [{"name": "a", "start": "01-01", "week": "w"}],
                      "weeks": [{"name": "w", "days": [1] * 7}],
                      "days": [{"id": 1, "actions": [["00:00", 1], ["12:00", 2]]}]}}
    )
    bill = bill_registers(tariff, {"T1": "1", "T2": "1"})
    # each line is 0.005 (0.01 when rounded on its own); the exact total 0.010 rounds to 0.01, not 0.02
    assert [li.to_dict(2, "half_up", "kWh")["amount"] for li in bill.lines] == ["0.01", "0.01"]
    assert bill.total == Decimal("0.01")


# --- properties -----------------------------------------------------------------------------------


@st.composite
def profiles(draw: st.DrawFn) -> tuple[list[datetime], list[int]]:
    start = draw(st.datetimes(datetime(2016, 1, 1), datetime(2040, 1, 1))).replace(second=0, microsecond=0)
    start = start - timedelta(minutes=start.minute % 15)
    n = draw(st.integers(1, 400))
    qty = draw(st.lists(st.integers(0, 5_000_000), min_size=n, max_size=n))
    return [start + timedelta(minutes=15 * (i + 1)) for i in range(n)], qty


@settings(max_examples=50)
@given(profiles())
def test_band_totals_sum_to_total_energy(p: tuple[list[datetime], list[int]]) -> None:  # covers AMR-4
    ends, qty = p
    bill = bill_load_profile(THREE, make_load_profile(ends, qty, period_minutes=15))
    assert bill.total_quantity == sum(qty)


@settings(max_examples=50)
@given(profiles(), st.integers(0, 400))
def test_billing_is_additive_over_splits(p: tuple[list[datetime], list[int]], cut: int) -> None:
    ends, qty = p
    profile = make_load_profile(ends, qty, period_minutes=15)
    a, b = profile.split(min(cut, len(profile)))
    whole = bill_load_profile(THREE, profile)
    parts = [bill_load_profile(THREE, x) for x in (a, b) if len(x)]
    for i, line in enumerate(whole.lines):
        assert line.quantity == sum(pb.lines[i].quantity for pb in parts)
        assert line.exact == sum(pb.lines[i].exact for pb in parts)


@settings(max_examples=50)
@given(profiles())
def test_vectorised_bands_match_a_naive_loop(p: tuple[list[datetime], list[int]]) -> None:  # covers AMR-4
    ends, qty = p
    profile = make_load_profile(ends, qty, period_minutes=15)
    idx = band_index(THREE, profile.starts)
    names = THREE.band_names
    naive: dict[str, int] = dict.fromkeys(names, 0)
    for end, q in zip(ends, qty, strict=True):
        naive[expected_band(end - timedelta(minutes=15))] += q
    assert [naive[n] for n in names] == band_totals(idx, profile.quantity, len(names)).tolist()
    exact_total = sum(PRICES[b] * Decimal(naive[b]) / 1000 for b in names)
    assert bill_load_profile(THREE, profile).total == money(exact_total)


def test_matrix_band_totals_agree_with_rows() -> None:
    ends = year_of_15_minute_ends(2025)
    assert ends.size == 35_040  # Europe/Istanbul has no DST since 2016: 365 x 96 quarter hours
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 500, size=(3, ends.size), dtype=np.int64)
    starts = ends - np.timedelta64(15, "m")
    idx = band_index(THREE, starts)
    totals = band_totals(idx, matrix, 3)
    for row in range(3):
        assert totals[row].tolist() == band_totals(idx, matrix[row], 3).tolist()
        assert int(totals[row].sum()) == int(matrix[row].sum())


# --- time zone, holidays ------------------------------------------------------------------------------


def test_offset_stamps_convert_to_istanbul_without_dst() -> None:  # covers AMR-4 (DST-free Europe/Istanbul)
    # 03:00 UTC is 06:00 in Istanbul in winter and in summer alike (UTC+3 all year since 2016)
    csv = "\n".join(
        [
            "2025-01-15T03:00:00+00:00,1.000",  # 05:45-06:00 local -> T3
            "2025-01-15T03:15:00+00:00,2.000",  # 06:00-06:15 local -> T1
            "2025-07-15T03:00:00+00:00,4.000",
            "2025-07-15T03:15:00+00:00,8.000",
        ]
    )
    bill = bill_load_profile(THREE, parse_load_profile_csv(csv, period_minutes=15))
    assert {li.label: li.quantity for li in bill.lines} == {"T1": 10_000, "T2": 0, "T3": 5_000}
    # a UTC quarter-hour grid over 2025 maps to a gap-free local grid: no 23- or 25-hour days
    from zoneinfo import ZoneInfo

    ist = ZoneInfo("Europe/Istanbul")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    offsets = {(t0 + timedelta(hours=h)).astimezone(ist).utcoffset() for h in range(0, 365 * 24, 7)}
    assert offsets == {timedelta(hours=3)}


def holiday_tariff() -> object:
    return load_energy_tariff(
        {
            "kind": "energy", "name": "tr-hol", "currency": "TRY", "source": {"url": "test"},
            "bands": {"T1": {"price": "1"}, "T2": {"price": "2"}, "T3": {"price": "0.5"}, "T4": {"price": "0.1"}},
            "calendar": {
                "seasons": [{"name": "all", "start": "01-01", "week": "std"}],
                "weeks": [{"name": "std", "days": [1, 1, 1, 1, 1, 1, 1]}],
                "days": [
                    {"id": 1, "actions": [["06:00", 1], ["17:00", 2], ["22:00", 3]]},
                    {"id": 4, "actions": [["00:00", 4]]},
                    {"id": 5, "actions": [["06:00", 1], ["13:00", 4]]},
                ],
            },
            "holidays": {"country": "TR", "day": 4, "half_day": 5},
        }
    )


def test_half_day_holiday_switches_at_13_00() -> None:  # covers AMR-4 (arife from 13:00)
    tariff = holiday_tariff()
    # Kurban Bayramı 2025: eve Thursday 5 June, holiday 6-9 June
    assert tariff.band_at(datetime(2025, 6, 5, 12, 45)) == "T1"
    assert tariff.band_at(datetime(2025, 6, 5, 13, 0)) == "T4"
    assert tariff.band_at(datetime(2025, 6, 5, 23, 0)) == "T4"
    assert tariff.band_at(datetime(2025, 6, 7, 18, 0)) == "T4"
    assert tariff.band_at(datetime(2025, 6, 10, 3, 0)) == "T4"  # holiday's T4 carries until 06:00
    assert tariff.band_at(datetime(2025, 6, 10, 6, 0)) == "T1"
    assert tariff.band_at(datetime(2025, 10, 29, 18, 0)) == "T4"  # Republic Day (AMR-4 list)
    ends = [datetime(2025, 6, 5, 12, 45), datetime(2025, 6, 5, 13, 0), datetime(2025, 6, 5, 13, 15)]
    bill = bill_load_profile(tariff, make_load_profile(ends, [1000, 2000, 4000], period_minutes=15))
    assert {li.label: li.quantity for li in bill.lines} == {"T1": 3000, "T2": 0, "T3": 0, "T4": 4000}


# --- CSV errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csv", "line"),
    [
        ("timestamp,kwh\n2025-01-01 00:15,0.1\nnot-a-date,0.2\n", 3),
        ("2025-01-01 00:15,0.1\n2025-01-01 00:30,abc\n", 2),
        ("2025-01-01 00:15,0.1\n2025-01-01 00:30,-1\n", 2),
        ("2025-01-01 00:15,0.1\n2025-01-01 00:30,0.1234\n", 2),
        ("2025-01-01 00:15,0.1\n2025-01-01 00:30,0.1,9\n", 2),
        ("2025-01-01 00:15,0.1\n2025-01-01 00:30,0.1\n2025-01-01 00:30,0.1\n", 3),
    ],
)
def test_bad_csv_rows_name_their_line(csv: str, line: int) -> None:
    with pytest.raises(LoadProfileError) as info:
        parse_load_profile_csv(csv)
    assert info.value.line == line and isinstance(info.value, TariffError)


def test_empty_and_single_row_profiles() -> None:
    with pytest.raises(LoadProfileError):
        parse_load_profile_csv("timestamp,kwh\n")
    with pytest.raises(LoadProfileError):
        parse_load_profile_csv("2025-01-01 00:15,0.1\n")  # period unknown
    assert len(parse_load_profile_csv("2025-01-01 00:15,0.1\n", period_minutes=15)) == 1


def test_power_cut_entry_shortens_the_interval() -> None:  # covers AMR-5 (entry at the moment of a cut)
    ends = [datetime(2025, 1, 2, 5, 45), datetime(2025, 1, 2, 5, 52), datetime(2025, 1, 2, 6, 0),
            datetime(2025, 1, 2, 6, 15), datetime(2025, 1, 2, 6, 30)]
    profile = make_load_profile(ends, [1, 2, 4, 8, 16])
    starts = [str(s) for s in profile.starts]
    assert starts == ["2025-01-02T05:30", "2025-01-02T05:45", "2025-01-02T05:52", "2025-01-02T06:00",
                      "2025-01-02T06:15"]


def test_parse_quantity_is_exact() -> None:
    assert parse_quantity("015214.234") == 15_214_234
    assert parse_quantity("7") == 7000
    assert parse_quantity("0.5") == 500


# --- tariff validation ----------------------------------------------------------------------------------


BASE = {"kind": "energy", "name": "x", "currency": "TRY", "source": {"url": "u"}, "bands": {"T1": {"price": "1"}}}


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "water"},
        {"source": {}},
        {"bands": {"T1": {"price": 1.5}}},
        {"bands": {"T1": {"price": "1.1234567"}}},
        {"bands": {"X1": {"price": "1"}}},
        {"bands": {"T1": {"price": "1"}, "T2": {"price": "2"}}},  # two bands, no calendar
        {"calendar": {"seasons": [{"name": "a", "start": "01-01", "week": "w"}],
                      "weeks": [{"name": "w", "days": [1] * 7}],
                      "days": [{"id": 1, "actions": [["00:00", 2]]}]}},  # T2 not priced
        {"rounding": "up"},
        {"holidays": {"day": 1}},  # holidays without calendar
    ],
)
def test_bad_energy_tariffs_raise_tariff_error(change: dict) -> None:
    with pytest.raises(TariffError):
        load_energy_tariff({**BASE, **change}, "x")


# --- water ------------------------------------------------------------------------------------------------


# the source's water + wastewater prices per tier
TIER_PRICES = [
    Decimal("13.76") + Decimal("6.87"),
    Decimal("19.80") + Decimal("9.89"),
    Decimal("26.96") + Decimal("13.47"),
]


def iski_expected(m3: Decimal, dwellings: int = 1) -> Decimal:
    """Independent progressive computation with the İnsani Su Hakkı allowance, per dwelling."""
    per_home = m3 / dwellings
    free = (min(per_home, Decimal(15)) // Decimal("2.5")) * Decimal("0.5") * dwellings
    billed = m3 - free
    limits = [Decimal(15) * dwellings, Decimal(30) * dwellings]
    amount = Decimal(0)
    lower = Decimal(0)
    for price, upper in zip(TIER_PRICES, limits + [None], strict=True):
        top = billed if upper is None else min(billed, upper)
        amount += max(Decimal(0), top - lower) * price
        lower = upper if upper is not None else lower
    return money(amount)


@pytest.mark.parametrize("m3", ["0", "2.499", "2.5", "10", "15", "15.001", "30", "40", "123.456"])
def test_iski_progressive_with_allowance(m3: str) -> None:  # covers WAT tiered tariff
    bill = bill_water(ISKI, parse_quantity(m3))
    assert bill.total == iski_expected(Decimal(m3))


def test_iski_worked_example_40_m3() -> None:
    # 40 m³: 6 x 0.5 = 3 m³ free -> 37 billed = 15 x 20.63 + 15 x 29.69 + 7 x 40.43
    assert bill_water(ISKI, 40_000).total == Decimal("309.45") + Decimal("445.35") + Decimal("283.01")


def test_shared_meter_multiplies_tier_limits() -> None:
    assert bill_water(ISKI, 60_000, dwellings=2).total == iski_expected(Decimal(60), 2)
    assert bill_water(ISKI, 60_000, dwellings=2).total == 2 * bill_water(ISKI, 30_000).total


def test_whole_volume_style() -> None:  # covers WAT (whole volume at the reached tier)
    tariff = load_water_tariff(
        {"kind": "water", "name": "w", "currency": "TRY", "source": {"url": "u"}, "style": "whole",
         "tiers": [{"up_to": "10", "water": "1"}, {"up_to": "20", "water": "2"}, {"water": "3"}]}
    )
    assert bill_water(tariff, 10_000).total == Decimal("10.00")
    assert bill_water(tariff, 10_001).total == money(Decimal("10.001") * 2)
    assert bill_water(tariff, 25_000).total == Decimal("75.00")


def test_water_profile_billed_per_month() -> None:
    ends = [datetime(2025, 1, 31, 23, 0), datetime(2025, 2, 1, 0, 0), datetime(2025, 2, 1, 1, 0)]
    months = bill_water_profile(ISKI, make_load_profile(ends, [20_000, 5_000, 5_000], period_minutes=60))
    assert [m for m, _ in months] == ["2025-01", "2025-02"]
    assert months[0][1].total == iski_expected(Decimal(25)) and months[1][1].total == iski_expected(Decimal(5))


@pytest.mark.parametrize(
    "tiers",
    [
        [],
        [{"up_to": "10", "water": "1"}],  # last tier closed
        [{"water": "1"}, {"water": "2"}],  # open tier not last
        [{"up_to": "10", "water": "1"}, {"up_to": "5", "water": "2"}, {"water": "3"}],
        [{"up_to": "10"}, {"water": "3"}],
    ],
)
def test_bad_water_tariffs(tiers: list) -> None:
    with pytest.raises(TariffError):
        load_water_tariff({"kind": "water", "name": "w", "currency": "TRY", "source": {"url": "u"}, "tiers": tiers})


def test_grid_totals_equal_generic_totals_with_holidays_and_seasons() -> None:  # covers AMR-4
    # holidays make odd days (different band patterns): the grid shortcut must still match exactly
    tariff = holiday_tariff()
    ends = year_of_15_minute_ends(2025)
    idx = band_index(tariff, ends - np.timedelta64(15, "m"))
    rng = np.random.default_rng(11)
    data = rng.integers(0, 1000, size=(4, ends.size), dtype=np.uint16)
    generic = band_totals(idx, data.astype(np.int64), 4)
    grid = grid_band_totals(idx, data, 96, 4)
    assert grid.tolist() == generic.tolist()
    assert generic[:, 3].min() > 0  # T4 holiday energy present
    exact = amounts_exact(grid, np.array(list(tariff.bands.values()), dtype=np.int64)).sum(axis=1)
    for row in range(4):
        profile = LoadProfile(ends - np.timedelta64(15, "m"), ends, data[row].astype(np.int64))
        profile_bill = bill_load_profile(tariff, profile)
        assert profile_bill.total_exact == int(exact[row])
        assert Decimal(int(round_minor(exact[row : row + 1], 2)[0])) / 100 == profile_bill.total
    with pytest.raises(TariffError):
        grid_band_totals(idx[:-1], data[:, :-1], 96, 4)


# --- bad input never crashes ---------------------------------------------------------------------------

_csv_text = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(lambda d, q: f"{d.isoformat(sep=' ', timespec='minutes')},{q}",
                  st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)),
                  st.one_of(st.decimals(-10, 1000, places=4).map(str), st.text(max_size=6))),
    ),
    max_size=12,
).map("\n".join)


def _parse_or_clean_error(text: str) -> None:
    try:
        profile = parse_load_profile_csv(text)
    except TariffError:
        return
    bill = bill_load_profile(THREE, profile)
    assert bill.total_quantity == int(profile.quantity.sum())


@settings(max_examples=150)
@given(_csv_text)
def test_csv_fuzz_bounded(text: str) -> None:
    _parse_or_clean_error(text)


@pytest.mark.slow
@settings(max_examples=5000)
@given(_csv_text)
def test_csv_fuzz_long(text: str) -> None:
    _parse_or_clean_error(text)
