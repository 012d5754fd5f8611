"""Register and event rules of the simulated meter, checked against hand arithmetic (AMR-4, AMR-5, AMR-6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from osos.field.meters.model import ConstantLoad, MeterModel, MeterModelError, SeededLoad

TR = timezone(timedelta(hours=3))
# local midnight of 2 March 2026 in Turkey (UTC+3) = 1 March 21:00 UTC
MIDNIGHT = datetime(2026, 3, 2, 0, 0, tzinfo=TR).astimezone(UTC)


def meter(kind: str = "single-phase", watts: int = 1200, **kw) -> MeterModel:
    return MeterModel("12345678", kind, MIDNIGHT, load=ConstantLoad(watts), **kw)


@dataclass(frozen=True)
class EveningSpike:
    """1 kW all day, 4 kW in the quarter hour 18:00-18:15 local."""

    def power_w(self, slot_start_local: datetime) -> int:
        return 4000 if (slot_start_local.hour, slot_start_local.minute) == (18, 0) else 1000


# ---------------------------------------------------------------- AMR-4 tariff bands
def test_one_day_of_constant_load_splits_into_default_bands() -> None:  # covers AMR-4
    m = meter(watts=1200)
    m.advance(MIDNIGHT + timedelta(days=1))
    # T1 06-17 = 11 h, T2 17-22 = 5 h, T3 22-06 = 8 h, at 1.2 kW
    assert m.import_wh(1) == 11 * 1200
    assert m.import_wh(2) == 5 * 1200
    assert m.import_wh(3) == 8 * 1200
    assert m.import_wh(4) == 0
    assert m.import_wh() == 24 * 1200


def test_partial_interval_is_exact_to_the_watt_second() -> None:  # covers AMR-2
    m = meter(watts=1000)
    m.advance(MIDNIGHT + timedelta(seconds=3599))
    assert m.import_ws[3] == 1000 * 3599
    assert m.import_wh() == 999  # 999.72 Wh shown truncated, never rounded up


def test_official_holiday_counts_on_t4() -> None:  # covers AMR-4
    start = datetime(2026, 4, 23, 0, 0, tzinfo=TR).astimezone(UTC)  # National Sovereignty and Children's Day
    m = MeterModel("1", "single-phase", start, load=ConstantLoad(1000))
    m.advance(start + timedelta(days=1, hours=7))  # the holiday, then 24 April 00-07 (T3 6 h, T1 1 h)
    assert m.import_wh(4) == 24 * 1000
    assert (m.import_wh(3), m.import_wh(1), m.import_wh(2)) == (6 * 1000, 1000, 0)
    plain = meter(watts=1000, holidays=frozenset())
    plain.advance(MIDNIGHT + timedelta(days=1))
    assert plain.import_wh(4) == 0


def test_failed_clock_puts_everything_on_t1() -> None:  # covers AMR-4
    m = meter(watts=600, rtc_ok=False)
    m.advance(MIDNIGHT + timedelta(days=1))
    assert m.import_wh(1) == 24 * 600
    assert m.import_wh(2) == m.import_wh(3) == 0
    assert m.ff_code() & 1  # FF bit 0: RTC failure


def test_negative_power_goes_to_export_registers() -> None:  # covers AMR-2 (2.8.x bidirectional)
    m = meter("three-phase", watts=-900)
    m.advance(MIDNIGHT + timedelta(hours=7))
    # 00-06 T3 (6 h), 06-07 T1 (1 h)
    assert m.export_wh(3) == 6 * 900
    assert m.export_wh(1) == 900
    assert m.import_wh() == 0


def test_kombi_reactive_quadrant_follows_the_ratio() -> None:  # covers AMR-2, AMR-3
    m = meter("kombi", watts=2000, reactive_per_mille=250)
    m.advance(MIDNIGHT + timedelta(hours=2))
    assert m.reactive_varh("5.8.0") == 2 * 2000 * 250 // 1000
    assert m.reactive_varh("6.8.0") == 0


# ---------------------------------------------------------------- demand
def test_max_demand_is_the_highest_quarter_hour_mean_with_its_time() -> None:  # covers AMR-2 (1.6.0)
    m = MeterModel("1", "single-phase", MIDNIGHT, load=EveningSpike())
    m.advance(MIDNIGHT + timedelta(days=1))
    assert m.max_demand_w == 4000
    assert m.max_demand_at == datetime(2026, 3, 2, 18, 15, tzinfo=TR)


def test_demand_resets_at_the_month_change() -> None:  # covers AMR-4
    start = datetime(2026, 3, 31, 17, 0, tzinfo=TR).astimezone(UTC)
    m = MeterModel("1", "single-phase", start, load=EveningSpike())
    m.advance(datetime(2026, 4, 1, 12, 0, tzinfo=TR))
    assert m.previous_max_demand[-1][:2] == ("2026-03", 4000)
    assert m.max_demand_w == 1000  # April so far: only the 1 kW quarters


# ---------------------------------------------------------------- AMR-5 load profile
def test_single_phase_profile_is_hourly_and_kombi_quarter_hourly() -> None:  # covers AMR-5
    mono = meter(watts=1200)
    kombi = meter("kombi", watts=1200)
    for m in (mono, kombi):
        m.advance(MIDNIGHT + timedelta(days=1))
    assert len(mono.profile) == 24
    assert {e.import_wh for e in mono.profile} == {1200}
    assert mono.profile[0].end == MIDNIGHT + timedelta(hours=1)
    assert len(kombi.profile) == 96
    assert {e.import_wh for e in kombi.profile} == {300}


def test_profile_retention_is_180_days_mono_and_360_days_kombi() -> None:  # covers AMR-5
    assert meter().profile.maxlen == 180 * 24
    assert meter("three-phase").profile.maxlen == 180 * 24
    assert meter("kombi").profile.maxlen == 360 * 96
    m = meter(watts=100)
    m.advance(MIDNIGHT + timedelta(days=181))
    assert len(m.profile) == 180 * 24
    assert m.profile[0].end == MIDNIGHT + timedelta(days=1, hours=1)  # the first day was dropped


def test_power_cut_writes_an_entry_at_the_cut() -> None:  # covers AMR-5
    m = meter(watts=1200)
    cut = MIDNIGHT + timedelta(hours=10, minutes=20)
    m.power_off(cut)
    m.advance(MIDNIGHT + timedelta(hours=11))
    cut_entry = m.profile[-2]
    assert cut_entry.power_cut and cut_entry.end == cut
    assert cut_entry.import_wh == 1200 * 20 // 60
    assert m.profile[-1].import_wh == 0  # nothing consumed while off
    assert m.profile_between(cut, cut) == [cut_entry]


# ---------------------------------------------------------------- AMR-6 events
def test_short_outage_stays_short_and_long_one_is_promoted_while_ongoing() -> None:  # covers AMR-6
    m = meter()
    t = MIDNIGHT + timedelta(hours=1)
    m.power_off(t)
    m.power_on(t + timedelta(seconds=179))
    assert len(m.outages[("L1", "short")]) == 1 and not m.outages[("L1", "long")]
    t2 = t + timedelta(hours=1)
    m.power_off(t2)
    m.advance(t2 + timedelta(seconds=180))  # still off: the record moves once it reaches 180 s
    assert len(m.outages[("L1", "short")]) == 1
    assert [o.start for o in m.outages[("L1", "long")]] == [t2]
    m.power_on(t2 + timedelta(seconds=600))
    assert m.outages[("L1", "long")][0].duration_s(m.now) == 600


def test_99_records_oldest_dropped_first() -> None:  # covers AMR-6
    m = meter()
    starts = [MIDNIGHT + timedelta(minutes=10 * i) for i in range(120)]
    for s in starts:
        m.power_off(s)
        m.power_on(s + timedelta(seconds=30))
    short = m.outages[("L1", "short")]
    assert len(short) == 99
    assert [o.start for o in short] == starts[21:]
    assert m.outage_count["L1"] == 120


def test_three_phase_outage_is_recorded_per_phase_and_for_all_phases() -> None:  # covers AMR-6
    m = meter("three-phase", watts=3000)
    t = MIDNIGHT + timedelta(hours=2)
    m.power_off(t, ("L2",))
    m.advance(t + timedelta(minutes=60))
    # one phase out of three: two thirds of the power
    assert m.import_wh() == 2 * 3000 + 3000 * 2 // 3
    assert m.ff_code() & (1 << 21) and not m.ff_code() & (1 << 23)
    m.power_off(t + timedelta(minutes=60))  # the other two go as well
    assert m.ff_code() & (1 << 23)
    m.power_on(t + timedelta(minutes=62))
    assert len(m.outages[("3P", "short")]) == 1  # 120 s with all three out
    assert [o.phase for o in m.outages[("L2", "long")]] == ["L2"]  # 62 min
    assert len(m.outages[("L1", "short")]) == 1 and len(m.outages[("L3", "short")]) == 1


def test_top_cover_first_opening_is_never_overwritten() -> None:  # covers AMR-6
    m = meter()
    first = MIDNIGHT + timedelta(hours=3)
    m.open_top_cover(first)
    m.close_top_cover(first + timedelta(minutes=5))
    m.open_top_cover(first + timedelta(days=2))
    assert m.top_cover_first_open == first
    assert m.ff_code() & (1 << 6) and m.ff_code() & (1 << 7)


def test_terminal_cover_armed_only_after_1_kwh_then_counted_per_month() -> None:  # covers AMR-6
    m = meter(watts=1000)
    assert not m.open_terminal_cover(MIDNIGHT + timedelta(minutes=30))  # 0.5 kWh
    assert not m.open_terminal_cover(MIDNIGHT + timedelta(hours=1))  # exactly 1 kWh: not above it
    first = MIDNIGHT + timedelta(hours=1, minutes=1)
    assert m.open_terminal_cover(first)
    assert m.open_terminal_cover(MIDNIGHT + timedelta(hours=5))
    assert m.terminal_cover_months == {"2026-03": (first, 2)}


def test_terminal_cover_keeps_12_months() -> None:  # covers AMR-6
    m = MeterModel("1", "single-phase", MIDNIGHT, load=ConstantLoad(100), initial_wh=5000)
    for month in range(14):
        when = datetime(2026 + (2 + month) // 12, (2 + month) % 12 + 1, 10, tzinfo=TR)
        m.open_terminal_cover(when)
    assert len(m.terminal_cover_months) == 12
    assert next(iter(m.terminal_cover_months)) == "2026-05"  # March and April dropped


def test_time_cannot_go_backwards_and_kinds_are_checked() -> None:
    m = meter()
    m.advance(MIDNIGHT + timedelta(hours=1))
    with pytest.raises(MeterModelError):
        m.advance(MIDNIGHT)
    with pytest.raises(MeterModelError):
        MeterModel("1", "four-phase", MIDNIGHT)
    with pytest.raises(MeterModelError):
        m.power_off(MIDNIGHT + timedelta(hours=2), ("L3",))  # single-phase meter


def test_seeded_load_is_deterministic() -> None:
    a = MeterModel("1", "kombi", MIDNIGHT, load=SeededLoad(7))
    b = MeterModel("1", "kombi", MIDNIGHT, load=SeededLoad(7))
    c = MeterModel("1", "kombi", MIDNIGHT, load=SeededLoad(8))
    for m in (a, b, c):
        m.advance(MIDNIGHT + timedelta(days=2))
    assert a.import_ws == b.import_ws and a.max_demand_w == b.max_demand_w
    assert a.import_ws != c.import_ws


def test_meter_clock_set_moves_only_the_meter_time() -> None:  # covers HES-35
    m = meter()
    m.set_meter_time(datetime(2026, 3, 2, 0, 10, 0))
    assert m.meter_time() == datetime(2026, 3, 2, 0, 10, tzinfo=TR)
    m.advance(MIDNIGHT + timedelta(minutes=5))
    assert m.meter_time() == datetime(2026, 3, 2, 0, 15, tzinfo=TR)
    assert m.import_wh(3) == 1200 * 5 // 60
