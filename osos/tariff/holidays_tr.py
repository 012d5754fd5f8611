"""Turkish official and religious holidays for tariff day types (AMR-4), from the `holidays` package.

Why a wrapper: meters and tariffs need more than a date set: the eves (arife) of Ramazan and Kurban
Bayramı, and of Republic Day (28 Oct), are half days that count as holiday only from 13:00 (the
`holidays` package lists them in its ``half_day`` category as "(from 1pm)"); the utility may add up to
10 freely chosen special days (AMR-4); and the day type (weekday / saturday / sunday / holiday)
picks a meter's day program. Pure: the caller passes the local date-time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache

from osos.tariff.errors import TariffError

MAX_SPECIAL_DAYS = 10  # AMR-4: "10 freely chosen special days"
HALF_DAY_FROM = time(13, 0)
DAY_TYPES = ("weekday", "saturday", "sunday", "holiday")
_WEEKDAY_TYPES = ("weekday",) * 5 + ("saturday", "sunday")


@lru_cache(maxsize=256)
def _tr_year(year: int) -> tuple[dict[date, str], dict[date, str]]:
    """(full-day holidays, half-day eves) of one year, names in Turkish."""
    import holidays  # heavy-ish import, only when a holiday is first asked for

    full = holidays.country_holidays("TR", years=year, categories=("public",), language="tr")
    half = holidays.country_holidays("TR", years=year, categories=("half_day",), language="tr")
    return dict(full.items()), dict(half.items())


@dataclass(frozen=True)
class TurkishHolidays:
    """Holiday judgement for one tariff or meter program.

    ``special_days``: up to 10 extra full-day holidays (a date applies to that year only).
    ``half_days``: count the 13:00 eves (default True, as the official rule does).
    """

    special_days: tuple[date, ...] = field(default_factory=tuple)
    half_days: bool = True

    def __post_init__(self) -> None:
        if len(self.special_days) > MAX_SPECIAL_DAYS:
            count = len(self.special_days)
            raise TariffError(f"at most {MAX_SPECIAL_DAYS} special days (AMR-4), got {count}")
        for d in self.special_days:
            if not isinstance(d, date) or isinstance(d, datetime):
                raise TariffError(f"special day {d!r} is not a date")

    @classmethod
    def with_special_days(cls, days: Iterable[date | str], half_days: bool = True) -> TurkishHolidays:
        parsed = []
        for d in days:
            if isinstance(d, str):
                try:
                    d = date.fromisoformat(d)
                except ValueError:
                    raise TariffError(f"special day {d!r} is not YYYY-MM-DD") from None
            parsed.append(d)
        return cls(tuple(parsed), half_days)

    def holiday_name(self, local_dt: datetime | date) -> str | None:
        """Name of the holiday in force at this local moment (a date means the whole day's start
        for full days; half days need a date-time at or after 13:00), else None."""
        day = local_dt.date() if isinstance(local_dt, datetime) else local_dt
        if day in self.special_days:
            return "Özel gün"
        full, half = _tr_year(day.year)
        if day in full:
            return full[day]
        after_noon = isinstance(local_dt, datetime) and local_dt.time() >= HALF_DAY_FROM
        if self.half_days and day in half and after_noon:
            return half[day]
        return None

    def is_holiday(self, local_dt: datetime | date) -> bool:
        return self.holiday_name(local_dt) is not None

    def is_half_day(self, day: date) -> bool:
        """True on an eve that turns into a holiday at 13:00."""
        return self.half_days and day not in self.special_days and day in _tr_year(day.year)[1]

    def day_type(self, local_dt: datetime) -> str:
        """weekday / saturday / sunday / holiday: which day program a meter runs (AMR-4)."""
        if self.is_holiday(local_dt):
            return "holiday"
        return _WEEKDAY_TYPES[local_dt.weekday()]

    def holidays_in(self, year: int) -> list[tuple[date, str, bool]]:
        """All (date, name, is_half_day) of a year, sorted; for docs and `osos tariff show`."""
        full, half = _tr_year(year)
        rows = [(d, n, False) for d, n in full.items()]
        if self.half_days:
            rows += [(d, n, True) for d, n in half.items()]
        rows += [(d, "Özel gün", False) for d in self.special_days if d.year == year]
        return sorted(rows)
