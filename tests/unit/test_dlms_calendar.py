"""DLMS activity calendar (class 20) and special days (class 11): structures and evaluation (AMR-4).

The reference profile is the Turkish three-time tariff of AMR-4 / S1: T1 day 06:00-17:00, T2 peak
17:00-22:00, T3 night 22:00-06:00, with separate weekday, Saturday, Sunday and holiday programs.
Octet-string layouts are checked against the Blue Book field order written out byte by byte here.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osos.protocols.errors import DecodeError
from osos.tariff.dlms_calendar import (
    TARIFF_SCRIPT_TABLE,
    ActivityCalendar,
    CalendarError,
    CosemDate,
    CosemDateTime,
    CosemTime,
    DayAction,
    DayProfile,
    SeasonProfile,
    SpecialDay,
    WeekProfile,
)
from osos.tariff.errors import TariffError


def t(hh: int, mm: int = 0) -> CosemTime:
    return CosemTime(hh, mm, 0, 0)


def act(hh: int, sel: int) -> DayAction:
    return DayAction(t(hh), sel)


# day 1: weekday, T1 06-17, T2 17-22, T3 22-06 (first action at 06:00: the night carries over)
WEEKDAY = DayProfile(1, (act(6, 1), act(17, 2), act(22, 3)))
# day 2: Saturday, peak shortened: T1 06-19, T2 19-22, T3 22-06
SATURDAY = DayProfile(2, (act(6, 1), act(19, 2), act(22, 3)))
# day 3: Sunday all night rate from 00:00
SUNDAY = DayProfile(3, (act(0, 3),))
# day 4: holiday, T4 all day
HOLIDAY = DayProfile(4, (act(0, 4),))
# day 5: summer weekday, peak 18-23
SUMMER = DayProfile(5, (act(6, 1), act(18, 2), act(23, 3)))


def yearly(month: int, day: int) -> CosemDateTime:
    return CosemDateTime(CosemDate(None, month, day), CosemTime(0, 0, 0, 0))


def calendar(special: tuple[SpecialDay, ...] = ()) -> ActivityCalendar:
    return ActivityCalendar(
        seasons=(
            SeasonProfile(b"winter", yearly(10, 1), b"W"),
            SeasonProfile(b"summer", yearly(4, 1), b"S"),
        ),
        weeks=(WeekProfile(b"W", (1, 1, 1, 1, 1, 2, 3)), WeekProfile(b"S", (5, 5, 5, 5, 5, 2, 3))),
        days=(WEEKDAY, SATURDAY, SUNDAY, HOLIDAY, SUMMER),
        special_days=special,
        name=b"TR3",
    )


# 29 October (Republic Day) every year, and 6 June 2025 (Kurban Bayramı) once
SPECIALS = (SpecialDay(0, CosemDate(None, 10, 29, None), 4), SpecialDay(1, CosemDate(2025, 6, 6, None), 4))


def test_three_time_weekday_bands() -> None:  # covers AMR-4 (T1 06-17, T2 17-22, T3 22-06)
    cal = calendar()
    wed = date(2025, 1, 15)  # a Wednesday in winter
    assert wed.weekday() == 2
    expected = {(0, 0): 3, (5, 59): 3, (6, 0): 1, (16, 59): 1, (17, 0): 2, (21, 59): 2, (22, 0): 3, (23, 59): 3}
    for (hh, mm), sel in expected.items():
        assert cal.selector_at(datetime(wed.year, wed.month, wed.day, hh, mm)) == sel, (hh, mm)


def test_previous_day_last_action_carries_over_midnight() -> None:  # covers AMR-4
    cal = calendar()
    # Monday 13 Jan 2025 at 03:00: Monday's first action is at 06:00; Sunday ended on T3.
    assert cal.selector_at(datetime(2025, 1, 13, 3, 0)) == 3
    # Monday after a holiday Sunday? Use a special day on Sunday 12 Jan with T4 all day:
    cal2 = calendar((SpecialDay(0, CosemDate(2025, 1, 12), 4),))
    assert cal2.selector_at(datetime(2025, 1, 13, 3, 0)) == 4  # the meter stays on T4 until 06:00
    assert cal2.selector_at(datetime(2025, 1, 13, 6, 0)) == 1
    assert cal2.day_switches(date(2025, 1, 13)) == [(0, 4), (360, 1), (1020, 2), (1320, 3)]


def test_saturday_sunday_programs() -> None:  # covers AMR-4
    cal = calendar()
    assert cal.selector_at(datetime(2025, 1, 18, 18, 0)) == 1  # Saturday: still T1 at 18:00
    assert cal.selector_at(datetime(2025, 1, 18, 19, 0)) == 2
    assert cal.selector_at(datetime(2025, 1, 19, 12, 0)) == 3  # Sunday: night rate all day


def test_season_change() -> None:  # covers AMR-4 (seasons)
    cal = calendar()
    assert cal.season_for(date(2025, 3, 31)).name == b"winter"
    assert cal.season_for(date(2025, 4, 1)).name == b"summer"
    assert cal.season_for(date(2025, 1, 1)).name == b"winter"  # wraps from last year's 1 October
    # 17:30 on a weekday: winter = peak T2, summer = still T1 (peak from 18:00)
    assert cal.selector_at(datetime(2025, 3, 31, 17, 30)) == 2
    assert cal.selector_at(datetime(2025, 4, 1, 17, 30)) == 1
    assert cal.selector_at(datetime(2025, 10, 1, 17, 30)) == 2


def test_special_day_overrides_week_profile() -> None:  # covers AMR-4 (holidays, special days)
    cal = calendar(SPECIALS)
    assert cal.selector_at(datetime(2025, 10, 29, 12, 0)) == 4  # a Wednesday, but Republic Day
    assert cal.selector_at(datetime(2031, 10, 29, 12, 0)) == 4  # every year
    assert cal.selector_at(datetime(2025, 6, 6, 18, 0)) == 4
    assert cal.selector_at(datetime(2026, 6, 5, 18, 30)) == 2  # not a special day in 2026 (a Friday)
    assert cal.selector_at(datetime(2025, 10, 30, 5, 0)) == 4  # holiday's T4 carries until 06:00


def test_last_day_of_month_wildcard() -> None:
    assert CosemDate(None, None, 0xFE).matches(date(2024, 2, 29))
    assert not CosemDate(None, None, 0xFE).matches(date(2025, 2, 28 - 1))
    assert CosemDate(None, None, 0xFD).matches(date(2025, 12, 30))
    assert CosemDate(None, None, None, 7).matches(date(2025, 6, 15))  # every Sunday


def test_octet_string_layouts_follow_blue_book() -> None:
    # date-time: year hi, lo, month, day, weekday, hour, min, sec, hundredths, deviation hi, lo, status
    dt = CosemDateTime(CosemDate(None, 4, 1, None), CosemTime(0, 0, 0, 0))
    assert dt.to_bytes() == bytes([0xFF, 0xFF, 4, 1, 0xFF, 0, 0, 0, 0, 0x80, 0x00, 0xFF])
    dated = CosemDateTime(CosemDate(2025, 6, 6, 5), CosemTime(13, 0, 0, 0), deviation=-180, clock_status=0)
    raw = dated.to_bytes()
    assert raw == bytes([0x07, 0xE9, 6, 6, 5, 13, 0, 0, 0, 0xFF, 0x4C, 0x00])  # -180 = 0xFF4C
    assert CosemDateTime.from_bytes(raw) == dated
    assert CosemTime(6, 0, None, None).to_bytes() == bytes([6, 0, 0xFF, 0xFF])


def test_dlms_values_round_trip_and_shapes() -> None:  # covers HES-63 (tariff change orders carry these)
    cal = calendar(SPECIALS)
    values = cal.to_dlms()
    season0 = values["season_profile_active"][0]
    assert isinstance(season0, tuple) and season0[0] == b"winter" and len(season0[1]) == 12
    assert values["week_profile_table_active"][0] == (b"W", 1, 1, 1, 1, 1, 2, 3)
    day1 = values["day_profile_table_active"][0]
    assert day1[0] == 1 and day1[1][0] == (bytes([6, 0, 0, 0]), TARIFF_SCRIPT_TABLE, 1)
    assert values["special_days_table"][1] == (1, bytes([0x07, 0xE9, 6, 6, 0xFF]), 4)
    assert ActivityCalendar.from_dlms(values) == cal


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.pop("season_profile_active"),
        lambda v: v.__setitem__("season_profile_active", [(b"x", b"\x00" * 11, b"W")]),
        lambda v: v.__setitem__("week_profile_table_active", [(b"W", 1, 1, 1)]),
        lambda v: v.__setitem__("day_profile_table_active", [(1, [(b"\x06\x00\x00", TARIFF_SCRIPT_TABLE, 1)])]),
        lambda v: v.__setitem__("day_profile_table_active", [(1, [(bytes(4), b"abc", 1)])]),
        lambda v: v.__setitem__("week_profile_table_active", [(b"W", 1, 1, 1, 1, 1, 2, 9)]),
        lambda v: v.__setitem__("special_days_table", [(0, bytes([0xFF, 0xFF, 13, 1, 0xFF]), 4)]),
        lambda v: v.__setitem__("season_profile_active", "nope"),
    ],
)
def test_malformed_structures_raise_calendar_error(mutate) -> None:
    values = calendar(SPECIALS).to_dlms()
    mutate(values)
    with pytest.raises(CalendarError) as info:
        ActivityCalendar.from_dlms(values)
    assert isinstance(info.value, DecodeError) and isinstance(info.value, TariffError)


@given(st.datetimes(datetime(2001, 1, 1), datetime(2090, 12, 31)))
def test_day_switches_agree_with_selector_at(dt: datetime) -> None:
    cal = calendar(SPECIALS)
    minute = dt.hour * 60 + dt.minute
    switches = cal.day_switches(dt.date())
    current = [sel for m, sel in switches if m <= minute][-1]
    assert current == cal.selector_at(dt.replace(second=0, microsecond=0))


def test_toml_form_builds_same_calendar() -> None:
    toml_cal = ActivityCalendar.from_toml(
        {
            "seasons": [
                {"name": "winter", "start": "10-01", "week": "W"},
                {"name": "summer", "start": "04-01", "week": "S"},
            ],
            "weeks": [{"name": "W", "days": [1, 1, 1, 1, 1, 2, 3]}, {"name": "S", "days": [5, 5, 5, 5, 5, 2, 3]}],
            "days": [
                {"id": 1, "actions": [["06:00", 1], ["17:00", 2], ["22:00", 3]]},
                {"id": 2, "actions": [["06:00", 1], ["19:00", 2], ["22:00", 3]]},
                {"id": 3, "actions": [["00:00", 3]]},
                {"id": 4, "actions": [["00:00", 4]]},
                {"id": 5, "actions": [["06:00", 1], ["18:00", 2], ["23:00", 3]]},
            ],
            "special_days": [{"date": "*-10-29", "day": 4}, {"date": "2025-06-06", "day": 4}],
        }
    )
    assert toml_cal.to_dlms()["day_profile_table_active"] == calendar(SPECIALS).to_dlms()["day_profile_table_active"]
    assert toml_cal.special_days == SPECIALS
    with pytest.raises(CalendarError):
        ActivityCalendar.from_toml({"seasons": [{"name": "x"}]})


_leaf = st.one_of(st.binary(max_size=13), st.integers(-2, 70000), st.text(max_size=3), st.none())
_value = st.recursive(
    _leaf, lambda kids: st.one_of(st.lists(kids, max_size=8), st.tuples(kids, kids, kids)), max_leaves=30
)


def _decode_or_calendar_error(values: dict) -> None:
    try:
        cal = ActivityCalendar.from_dlms(values)
    except CalendarError:
        return
    assert ActivityCalendar.from_dlms(cal.to_dlms()) == cal


@given(st.fixed_dictionaries({
    "season_profile_active": _value, "week_profile_table_active": _value, "day_profile_table_active": _value,
    "special_days_table": _value,
}))
def test_random_structures_only_raise_calendar_error(values: dict) -> None:
    _decode_or_calendar_error(values)


@given(st.binary(min_size=12, max_size=12))
def test_any_12_bytes_decode_or_calendar_error(raw: bytes) -> None:
    try:
        dt = CosemDateTime.from_bytes(raw)
    except CalendarError:
        return
    assert CosemDateTime.from_bytes(dt.to_bytes()) == dt
