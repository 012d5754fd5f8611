"""When schedules are due (HES-10): cron expressions and "every N minutes" aligned to local midnight, evaluated in
the configured time zone. Every expected time is worked out by hand in the comments (Istanbul is UTC+3 all year;
2026-12-01 is a Tuesday: 2026-01-01 is a Thursday and 334 days later is 47 weeks + 5 days)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from osos.headend.scheduler import ScheduleError, check_cron, check_every, next_run

IST = "Europe/Istanbul"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "after", "expected"), [
    # 10:00 UTC = 13:00 local; next 02:00 local is tomorrow, 23:00 UTC today
    ("0 2 * * *", utc(2026, 12, 1, 10, 0), utc(2026, 12, 1, 23, 0)),
    # 12:07:30 UTC = 15:07:30 local; next quarter hour 15:15 local = 12:15 UTC
    ("*/15 * * * *", utc(2026, 12, 1, 12, 7, 30), utc(2026, 12, 1, 12, 15)),
    # strictly after: exactly on a slot gives the next one
    ("*/15 * * * *", utc(2026, 12, 1, 12, 15), utc(2026, 12, 1, 12, 30)),
    # first of the month, midnight local: 2027-01-01 00:00 +03 = 2026-12-31 21:00 UTC
    ("0 0 1 * *", utc(2026, 12, 15, 0, 0), utc(2026, 12, 31, 21, 0)),
    # Mondays 06:30 local: Tuesday 1 Dec -> Monday 7 Dec, 03:30 UTC
    ("30 6 * * 1", utc(2026, 12, 1, 0, 0), utc(2026, 12, 7, 3, 30)),
    # day-of-month 13 OR Friday (both restricted): Friday 4 Dec comes first, 00:00 local = 3 Dec 21:00 UTC
    ("0 0 13 * 5", utc(2026, 12, 1, 0, 0), utc(2026, 12, 3, 21, 0)),
    # 23:00 local on the 1st: 2026-12-01 20:00 UTC
    ("0 23 * * *", utc(2026, 12, 1, 19, 59), utc(2026, 12, 1, 20, 0)),
])
def test_cron_in_istanbul(cron: str, after: datetime, expected: datetime) -> None:
    assert next_run(cron=cron, every_minutes=None, after=after, tz=IST) == expected


def test_the_time_zone_decides() -> None:
    # 02:00 in Berlin in December (CET, UTC+1) is 01:00 UTC; in UTC it is 02:00
    assert next_run(cron="0 2 * * *", every_minutes=None, after=utc(2026, 12, 1), tz="Europe/Berlin") == \
        utc(2026, 12, 1, 1, 0)
    assert next_run(cron="0 2 * * *", every_minutes=None, after=utc(2026, 12, 1), tz="UTC") == utc(2026, 12, 1, 2, 0)


@pytest.mark.parametrize(("every", "after", "expected"), [
    # 15:07 local -> 15:15 local = 12:15 UTC
    (15, utc(2026, 12, 1, 12, 7), utc(2026, 12, 1, 12, 15)),
    # 15:00:00 local, on a slot -> 15:15
    (15, utc(2026, 12, 1, 12, 0), utc(2026, 12, 1, 12, 15)),
    # 90-minute slots from local midnight: ..., 21:00, 22:30, then 00:00 next day (= 21:00 UTC)
    (90, utc(2026, 12, 1, 19, 59), utc(2026, 12, 1, 21, 0)),
    # 22:29 local -> 22:30 local = 19:30 UTC
    (90, utc(2026, 12, 1, 19, 29), utc(2026, 12, 1, 19, 30)),
    # once a day at local midnight: 13:00 local on the 1st -> 00:00 local on the 2nd = 21:00 UTC on the 1st
    (1440, utc(2026, 12, 1, 10, 0), utc(2026, 12, 1, 21, 0)),
    # every 2 hours: 15:10 local -> 16:00 local = 13:00 UTC
    (120, utc(2026, 12, 1, 12, 10), utc(2026, 12, 1, 13, 0)),
])
def test_every_minutes_aligned_to_local_midnight(every: int, after: datetime, expected: datetime) -> None:
    assert next_run(cron=None, every_minutes=every, after=after, tz=IST) == expected


@pytest.mark.parametrize("bad", ["61 * * * *", "* * * *", "* * * * * *", "0 0 30 2 *", "x * * * *", ""])
def test_bad_cron_is_refused(bad: str) -> None:
    with pytest.raises(ScheduleError):
        check_cron(bad)


def test_cron_is_normalised() -> None:
    assert check_cron("  0   2 * *  * ") == "0 2 * * *"


@pytest.mark.parametrize("bad", [0, 7, 1441, -15, True, "15", 2880])
def test_every_must_divide_a_day(bad) -> None:
    with pytest.raises(ScheduleError):
        check_every(bad)


@pytest.mark.parametrize("good", [1, 5, 15, 30, 60, 90, 120, 480, 1440])
def test_every_divisors_of_a_day(good: int) -> None:
    assert check_every(good) == good


def test_unknown_zone() -> None:
    with pytest.raises(ScheduleError):
        next_run(cron="* * * * *", every_minutes=None, after=utc(2026, 12, 1), tz="Mars/Olympus")
