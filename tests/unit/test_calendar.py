"""Activation types, only-one-active precedence, seasons (TAX-4) and Turkish holidays (AMR-4).

Expected values come from the S3 thesis examples (§4.4, Tables 4.16-4.19) and the official holiday list.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osos.tariff.calendar import (
    Activation,
    MonthDay,
    Season,
    date_from_days_since_2000,
    days_since_2000,
    parse_step,
    season_at,
    select_tariff,
    window_contains,
)
from osos.tariff.errors import TariffError
from osos.tariff.holidays_tr import TurkishHolidays

# S3 §4.4: "06:00 is entered as 24, 15:00 as 60"
S = parse_step


def test_step_encoding_matches_s3_examples() -> None:  # covers TAX-4
    assert S("06:00") == 24
    assert S("15:00") == 60
    assert S("24:00") == 96
    with pytest.raises(TariffError):
        S("06:10")
    with pytest.raises(TariffError):
        S("24:15")


def test_daily_window_and_midnight_wrap() -> None:  # covers TAX-4 (D, start > end wraps)
    day = Activation("D", S("08:00"), S("19:00"))
    night = Activation("D", S("19:00"), S("08:00"))
    cases = [(7, 59, False), (8, 0, True), (18, 59, True), (19, 0, False), (23, 30, False), (0, 0, False)]
    for hh, mm, in_day in cases:
        dt = datetime(2025, 6, 11, hh, mm)
        assert day.is_active(dt) is in_day
        assert night.is_active(dt) is (not in_day)  # the complement, as S3 Figure 4.16 draws it


def test_weekly_table_4_16_sunday_equal_times_inactive() -> None:  # covers TAX-4 (W)
    weekdays = tuple([(0, 96)] * 6 + [(0, 0)])
    act = Activation("W", weekdays=weekdays)
    monday = datetime(2025, 6, 9, 12, 0)
    assert monday.weekday() == 0
    for offset in range(6):
        assert act.is_active(monday + timedelta(days=offset))
    assert not act.is_active(monday + timedelta(days=6))  # Sunday 00:00-00:00


def test_holiday_normal_runs_from_start_time_to_end_time_every_year() -> None:  # covers TAX-4 (HN)
    # S3: "24/03 08:00 - 31/03 20:00"
    act = Activation("HN", S("08:00"), S("20:00"), from_date=MonthDay(3, 24), to_date=MonthDay(3, 31))
    for year in (2015, 2024, 2031):
        assert not act.is_active(datetime(year, 3, 24, 7, 59))
        assert act.is_active(datetime(year, 3, 24, 8, 0))
        assert act.is_active(datetime(year, 3, 27, 3, 0))  # continuous: nights inside the range too
        assert act.is_active(datetime(year, 3, 31, 19, 59))
        assert not act.is_active(datetime(year, 3, 31, 20, 0))


def test_holiday_daily_and_weekly() -> None:  # covers TAX-4 (HD, HW; Table 4.17)
    hd = Activation("HD", S("08:00"), S("20:00"), from_date=MonthDay(3, 24), to_date=MonthDay(3, 31))
    assert hd.is_active(datetime(2025, 3, 26, 12, 0))
    assert not hd.is_active(datetime(2025, 3, 26, 21, 0))  # outside the daily hours
    assert not hd.is_active(datetime(2025, 4, 1, 12, 0))  # outside the dates
    weekend = tuple([(0, 0)] * 5 + [(S("08:00"), S("19:00"))] * 2)
    hw = Activation("HW", weekdays=weekend, from_date=MonthDay(3, 24), to_date=MonthDay(3, 31))
    assert hw.is_active(datetime(2025, 3, 29, 10, 0))  # Saturday 29 March 2025
    assert not hw.is_active(datetime(2025, 3, 28, 10, 0))  # Friday
    assert not hw.is_active(datetime(2025, 4, 5, 10, 0))  # Saturday after the range


def test_holiday_range_over_new_year() -> None:  # covers TAX-4
    hd = Activation("HD", 0, 96, from_date=MonthDay(12, 24), to_date=MonthDay(1, 2))
    assert hd.is_active(datetime(2025, 12, 31, 12, 0))
    assert hd.is_active(datetime(2026, 1, 2, 23, 0))
    assert not hd.is_active(datetime(2026, 1, 3, 0, 0))
    assert not hd.is_active(datetime(2025, 12, 23, 23, 59))


def test_specific_kinds_only_in_their_year() -> None:  # covers TAX-4 (SN, SD, SW)
    sn = Activation("SN", S("08:00"), S("20:00"), from_date=date(2015, 3, 24), to_date=date(2015, 3, 31))
    assert sn.is_active(datetime(2015, 3, 24, 8, 0))
    assert sn.is_active(datetime(2015, 3, 28, 2, 0))
    assert not sn.is_active(datetime(2015, 3, 31, 20, 0))
    assert not sn.is_active(datetime(2016, 3, 25, 12, 0))  # another year: no
    sd = Activation("SD", S("08:00"), S("20:00"), from_date=date(2015, 3, 24), to_date=date(2015, 3, 31))
    assert sd.is_active(datetime(2015, 3, 31, 19, 45)) and not sd.is_active(datetime(2015, 3, 28, 2, 0))
    weekend = tuple([(0, 0)] * 5 + [(S("08:00"), S("19:00"))] * 2)
    sw = Activation("SW", weekdays=weekend, from_date=date(2015, 3, 24), to_date=date(2015, 3, 31))
    assert sw.is_active(datetime(2015, 3, 28, 8, 0))  # Saturday 28 March 2015
    assert not sw.is_active(datetime(2015, 3, 27, 8, 0))


def test_days_since_2000_binary_form() -> None:  # covers TAX-4 / TAX-5
    # independent count: 15 years of 365 days + leap days 2000, 2004, 2008, 2012 + 31 + 28 + 23
    assert days_since_2000(date(2015, 3, 24)) == 15 * 365 + 4 + 31 + 28 + 23
    assert date_from_days_since_2000(0) == date(2000, 1, 1)
    assert date_from_days_since_2000(366) == date(2001, 1, 1)  # 2000 is a leap year
    with pytest.raises(TariffError):
        date_from_days_since_2000(70000)


def test_only_one_active_holiday_beats_always() -> None:  # covers TAX-4 (option), S3 §3.3.3
    always = Activation("N")
    night = Activation("D", S("22:00"), S("06:00"))
    bayram = Activation("HN", 0, 96, from_date=MonthDay(10, 29), to_date=MonthDay(10, 29))
    special = Activation("SD", 0, 96, from_date=date(2025, 10, 29), to_date=date(2025, 10, 29))
    cands = [("1", always), ("2", night), ("3", bayram), ("4", special)]
    assert select_tariff(cands, datetime(2025, 10, 28, 12, 0), only_one_active=True) == ("1",)
    assert select_tariff(cands, datetime(2025, 10, 28, 23, 0), only_one_active=True) == ("2",)
    assert select_tariff(cands, datetime(2024, 10, 29, 12, 0), only_one_active=True) == ("3",)
    assert select_tariff(cands, datetime(2025, 10, 29, 23, 0), only_one_active=True) == ("4",)
    # without the option every active tariff is offered, most specific first
    assert select_tariff(cands, datetime(2025, 10, 29, 23, 0), only_one_active=False) == ("4", "3", "2", "1")
    # equal rank: list order decides
    assert select_tariff([("B", always), ("A", always)], datetime(2025, 1, 1), True) == ("B",)


def test_bad_activations_raise_tariff_error() -> None:  # covers TAX-4
    with pytest.raises(TariffError):
        Activation("X")
    with pytest.raises(TariffError):
        Activation("W")  # no weekday windows
    with pytest.raises(TariffError):
        Activation("HN", from_date=date(2025, 1, 1), to_date=date(2025, 1, 2))  # H needs month-days
    with pytest.raises(TariffError):
        Activation("SD", from_date=date(2025, 2, 1), to_date=date(2025, 1, 1))
    with pytest.raises(TariffError):
        Activation.from_dict({"kind": "HD", "from": "02-30", "to": "03-01"})
    with pytest.raises(TariffError):
        Activation.from_dict({"kind": "D", "start": "7am"})
    with pytest.raises(TariffError):
        Activation.from_dict({"kind": "D", "colour": "red"})


_steps = st.integers(0, 96)
_md = st.dates(date(2000, 1, 1), date(2000, 12, 31)).map(lambda d: MonthDay(d.month, d.day))


@st.composite
def activations(draw: st.DrawFn) -> Activation:
    kind = draw(st.sampled_from(["N", "D", "W", "HN", "HD", "HW", "SN", "SD", "SW"]))
    kw: dict = {"kind": kind}
    if kind[-1] == "W":
        kw["weekdays"] = tuple(draw(st.tuples(_steps, _steps)) for _ in range(7))
    elif kind != "N":
        kw["start_step"], kw["end_step"] = draw(_steps), draw(_steps)
    if kind[0] == "H":
        kw["from_date"], kw["to_date"] = draw(_md), draw(_md)
    elif kind[0] == "S":
        a, b = sorted([draw(st.dates(date(2000, 1, 1), date(2150, 1, 1))) for _ in range(2)])
        kw["from_date"], kw["to_date"] = a, b
    return Activation(**kw)


@given(activations(), st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)))
def test_dict_round_trip_keeps_meaning(act: Activation, dt: datetime) -> None:  # covers TAX-4
    again = Activation.from_dict(act.to_dict())
    assert again == act
    assert again.is_active(dt) == act.is_active(dt)


@given(_steps, _steps, st.integers(0, 86399))
def test_window_and_its_reverse_are_complements(a: int, b: int, sec: int) -> None:  # covers TAX-4
    if a != b:
        assert window_contains(a, b, sec) != window_contains(b, a, sec)


def test_seasons_wrap_over_new_year() -> None:  # covers AMR-4 (seasons for ToU)
    seasons = [Season("summer", MonthDay(4, 1)), Season("winter", MonthDay(10, 1))]
    assert season_at(seasons, date(2025, 1, 15)).name == "winter"
    assert season_at(seasons, date(2025, 4, 1)).name == "summer"
    assert season_at(seasons, date(2025, 9, 30)).name == "summer"
    assert season_at(seasons, date(2025, 10, 1)).name == "winter"


# --- Turkish holidays (AMR-4) -----------------------------------------------------------------

NATIONAL = [(1, 1), (4, 23), (5, 1), (5, 19), (7, 15), (8, 30), (10, 29)]


@pytest.mark.parametrize("year", [2017, 2024, 2025, 2026, 2030])
def test_amr4_national_days_are_holidays(year: int) -> None:  # covers AMR-4
    cal = TurkishHolidays()
    for month, day in NATIONAL:
        assert cal.day_type(datetime(year, month, day, 0, 0)) == "holiday", (year, month, day)


def test_arife_is_holiday_from_13_00() -> None:  # covers AMR-4 half days
    cal = TurkishHolidays()
    # Ramazan Bayramı 2025 began on Sunday 30 March (Diyanet); its eve is Saturday 29 March.
    assert cal.day_type(datetime(2025, 3, 29, 12, 59)) == "saturday"
    assert cal.day_type(datetime(2025, 3, 29, 13, 0)) == "holiday"
    assert cal.is_half_day(date(2025, 3, 29))
    # Kurban Bayramı 2025 began on Friday 6 June; the eve Thursday 5 June is a weekday until 13:00.
    assert cal.day_type(datetime(2025, 6, 5, 9, 0)) == "weekday"
    assert cal.day_type(datetime(2025, 6, 5, 13, 0)) == "holiday"
    assert cal.day_type(datetime(2025, 6, 6, 0, 0)) == "holiday"
    # Republic Day eve, 28 October, from 13:00
    assert not cal.is_holiday(datetime(2025, 10, 28, 12, 45))
    assert cal.is_holiday(datetime(2025, 10, 28, 13, 0))
    # without half days the eve stays a working day
    assert not TurkishHolidays(half_days=False).is_holiday(datetime(2025, 3, 29, 15, 0))


def test_special_days_at_most_ten() -> None:  # covers AMR-4 (10 freely chosen special days)
    days = [date(2025, 2, d) for d in range(3, 13)]
    cal = TurkishHolidays.with_special_days(days)
    assert cal.day_type(datetime(2025, 2, 4, 10, 0)) == "holiday"  # a Tuesday made special
    assert cal.day_type(datetime(2026, 2, 4, 10, 0)) == "weekday"  # only that year
    with pytest.raises(TariffError):
        TurkishHolidays.with_special_days(days + [date(2025, 2, 20)])
    with pytest.raises(TariffError):
        TurkishHolidays.with_special_days(["2025-13-01"])


def test_ordinary_days() -> None:  # covers AMR-4
    cal = TurkishHolidays()
    assert cal.day_type(datetime(2025, 6, 11, 10, 0)) == "weekday"  # Wednesday
    assert cal.day_type(datetime(2025, 6, 14, 10, 0)) == "saturday"
    assert cal.day_type(datetime(2025, 6, 15, 10, 0)) == "sunday"
