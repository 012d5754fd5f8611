"""When is a tariff active: the nine S3 activation types, day windows, seasons (TAX-4, AMR-4).

Pure: every function takes the local date-time it judges; nothing reads the clock.

Times are 15-minute steps as in the S3 binary form (0..95, and 96 = 24:00 as an end); a window is
half open ``[start, end)``. S3 §4.4 says a window whose start is after its end is active *outside*
the interval, so ``D 22:00-06:00`` is 22:00-24:00 plus 00:00-06:00 of the same day (which, every day,
is the overnight band). Equal start and end means inactive that day (S3 Table 4.16).

Kinds (S3 Table 4.15):

- ``N`` always; ``D`` one window every day; ``W`` one window per weekday (Monday first).
- ``HN``/``HD``/``HW`` every year between two month-day dates (both days included). ``HN`` runs
  continuously from the start date at the start time to the end date at the end time; ``HD`` uses
  the window each day of the range; ``HW`` the weekday windows each day of the range. A range whose
  start date is after its end date runs over New Year (e.g. 24/12-02/01).
- ``SN``/``SD``/``SW`` the same for one specific dated range (binary form: days since 2000-01-01).

Only-one-active rule (S3 §3.3.3: "if only one tariff may be active at a time, then while a holiday
tariff is active another, always-active tariff is not opened"). Generalised here as: the more
specific the date rule, the higher the precedence: specific ``S*`` > holiday ``H*`` > time-of-day
``D``/``W`` > always ``N``. Among equal ranks the candidate listed first wins (the loader's order,
i.e. tariff number order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple, TypeVar

from osos.tariff.errors import TariffError

STEP_MINUTES = 15
STEPS_PER_DAY = 96
EPOCH_2000 = date(2000, 1, 1)
WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
KINDS = ("N", "D", "W", "HN", "HD", "HW", "SN", "SD", "SW")
# precedence rank for the only-one-active option (higher wins)
_RANK = {"N": 0, "D": 1, "W": 1, "HN": 2, "HD": 2, "HW": 2, "SN": 3, "SD": 3, "SW": 3}

T = TypeVar("T")


class MonthDay(NamedTuple):
    """A day of every year (for the H kinds). Tuple order makes comparison chronological."""

    month: int
    day: int

    @classmethod
    def parse(cls, text: str) -> MonthDay:
        """Read ``MM-DD``."""
        try:
            month_s, day_s = text.split("-")
            md = cls(int(month_s), int(day_s))
        except ValueError:
            raise TariffError(f"month-day {text!r} is not MM-DD") from None
        md.check()
        return md

    def check(self) -> None:
        try:
            date(2000, self.month, self.day)  # 2000 is a leap year: 02-29 is allowed
        except (ValueError, TypeError):
            raise TariffError(f"no such month-day {self.month:02d}-{self.day:02d}") from None

    def __str__(self) -> str:
        return f"{self.month:02d}-{self.day:02d}"


def days_since_2000(d: date) -> int:
    """S3 binary form of a specific date (2-byte day count from 2000-01-01)."""
    return (d - EPOCH_2000).days


def date_from_days_since_2000(n: int) -> date:
    if not 0 <= n <= 0xFFFF:
        raise TariffError(f"day count {n} outside 0..65535")
    return EPOCH_2000 + timedelta(days=n)


def step_to_text(step: int) -> str:
    return f"{step * STEP_MINUTES // 60:02d}:{step * STEP_MINUTES % 60:02d}"


def parse_step(value: object) -> int:
    """Accept a step number (0..96) or ``HH:MM`` on a 15-minute boundary (``24:00`` allowed)."""
    if isinstance(value, bool):
        raise TariffError(f"time {value!r} is not a step or HH:MM")
    if isinstance(value, int):
        step = value
    elif isinstance(value, time):
        if value.second or value.microsecond or value.minute % STEP_MINUTES:
            raise TariffError(f"time {value} is not on a 15-minute step")
        step = (value.hour * 60 + value.minute) // STEP_MINUTES
    elif isinstance(value, str):
        try:
            h_s, m_s = value.split(":")
            h, m = int(h_s), int(m_s)
        except ValueError:
            raise TariffError(f"time {value!r} is not HH:MM") from None
        if not (0 <= m < 60) or m % STEP_MINUTES:
            raise TariffError(f"time {value!r} is not on a 15-minute step")
        step = (h * 60 + m) // STEP_MINUTES
    else:
        raise TariffError(f"time {value!r} is not a step or HH:MM")
    if not 0 <= step <= STEPS_PER_DAY:
        raise TariffError(f"time {value!r} is outside 00:00..24:00")
    return step


def _seconds_of_day(dt: datetime) -> int:
    return dt.hour * 3600 + dt.minute * 60 + dt.second


def window_contains(start_step: int, end_step: int, seconds_of_day: int) -> bool:
    """The S3 window rule: ``[start, end)``, complement when start > end, empty when equal."""
    start, end = start_step * STEP_MINUTES * 60, end_step * STEP_MINUTES * 60
    if start < end:
        return start <= seconds_of_day < end
    if start > end:
        return seconds_of_day >= start or seconds_of_day < end
    return False


def _md_in_range(md: MonthDay, first: MonthDay, last: MonthDay) -> bool:
    if first <= last:
        return first <= md <= last
    return md >= first or md <= last  # over New Year


@dataclass(frozen=True)
class Activation:
    """One tariff's activation rule (TAX-4). Fields unused by a kind stay at their defaults.

    ``start_step``/``end_step``: the daily window (D, HD, SD) or, for HN/SN, the start time on the
    first date and the end time on the last date. ``weekdays``: seven ``(start, end)`` windows,
    Monday first (W, HW, SW). ``from_date``/``to_date``: ``MonthDay`` for H kinds, ``date`` for S kinds.
    """

    kind: str = "N"
    start_step: int = 0
    end_step: int = STEPS_PER_DAY
    weekdays: tuple[tuple[int, int], ...] | None = None
    from_date: MonthDay | date | None = None
    to_date: MonthDay | date | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TariffError(f"unknown activation kind {self.kind!r}; known: {', '.join(KINDS)}")
        for step in (self.start_step, self.end_step):
            if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= STEPS_PER_DAY:
                raise TariffError(f"time step {step!r} outside 0..96")
        if self.kind[-1] == "W":
            if self.weekdays is None or len(self.weekdays) != 7:
                raise TariffError(f"activation {self.kind} needs 7 weekday windows (Monday first)")
            for pair in self.weekdays:
                if len(pair) != 2 or any(not isinstance(s, int) or not 0 <= s <= STEPS_PER_DAY for s in pair):
                    raise TariffError(f"weekday window {pair!r} is not two steps 0..96")
        elif self.weekdays is not None:
            raise TariffError(f"activation {self.kind} takes no weekday windows")
        if self.kind[0] in "HS":
            if self.from_date is None or self.to_date is None:
                raise TariffError(f"activation {self.kind} needs from_date and to_date")
            if self.kind[0] == "H":
                for md in (self.from_date, self.to_date):
                    if not isinstance(md, MonthDay):
                        raise TariffError(f"activation {self.kind} dates are month-days, got {md!r}")
                    md.check()
            else:
                for d in (self.from_date, self.to_date):
                    if not isinstance(d, date) or isinstance(d, datetime):
                        raise TariffError(f"activation {self.kind} dates are calendar dates, got {d!r}")
                if self.from_date > self.to_date:  # type: ignore[operator]
                    raise TariffError(f"activation {self.kind}: from_date is after to_date")
        elif self.from_date is not None or self.to_date is not None:
            raise TariffError(f"activation {self.kind} takes no dates")

    @property
    def rank(self) -> int:
        """Precedence under the only-one-active option: S=3 > H=2 > D/W=1 > N=0."""
        return _RANK[self.kind]

    def _day_window(self, dt: datetime) -> bool:
        if self.kind[-1] == "W":
            assert self.weekdays is not None
            start, end = self.weekdays[dt.weekday()]
        else:
            start, end = self.start_step, self.end_step
        return window_contains(start, end, _seconds_of_day(dt))

    def is_active(self, local_dt: datetime) -> bool:
        """True when the tariff may be used at this local (wall-clock) date-time."""
        kind = self.kind
        if kind == "N":
            return True
        if kind in ("D", "W"):
            return self._day_window(local_dt)
        if kind[0] == "H":
            first, last = self.from_date, self.to_date
            assert isinstance(first, MonthDay) and isinstance(last, MonthDay)
            md = MonthDay(local_dt.month, local_dt.day)
            if kind == "HN":
                sec = _seconds_of_day(local_dt)
                begin = (first, self.start_step * STEP_MINUTES * 60)
                end = (last, self.end_step * STEP_MINUTES * 60)
                key = (md, sec)
                if begin < end:
                    return begin <= key < end
                return key >= begin or key < end
            return _md_in_range(md, first, last) and self._day_window(local_dt)
        first_d, last_d = self.from_date, self.to_date
        assert isinstance(first_d, date) and isinstance(last_d, date)
        if kind == "SN":
            begin_dt = datetime.combine(first_d, time()) + timedelta(minutes=self.start_step * STEP_MINUTES)
            end_dt = datetime.combine(last_d, time()) + timedelta(minutes=self.end_step * STEP_MINUTES)
            return begin_dt <= local_dt.replace(tzinfo=None) < end_dt
        return first_d <= local_dt.date() <= last_d and self._day_window(local_dt)

    # --- TOML / JSON form -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain form for TOML/JSON: times ``HH:MM``, H dates ``MM-DD``, S dates ISO."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind[0] in "HS":
            out["from"] = str(self.from_date) if self.kind[0] == "H" else self.from_date.isoformat()  # type: ignore[union-attr]
            out["to"] = str(self.to_date) if self.kind[0] == "H" else self.to_date.isoformat()  # type: ignore[union-attr]
        if self.kind[-1] == "W":
            assert self.weekdays is not None
            pairs = zip(WEEKDAY_KEYS, self.weekdays, strict=True)
            out["weekdays"] = {k: f"{step_to_text(s)}-{step_to_text(e)}" for k, (s, e) in pairs}
        elif self.kind != "N":
            out["start"] = step_to_text(self.start_step)
            out["end"] = step_to_text(self.end_step)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Activation:
        """Inverse of ``to_dict``; also takes TOML native dates and int steps. Missing weekdays are off."""
        if not isinstance(data, Mapping):
            raise TariffError("activation must be a table")
        kind = str(data.get("kind", "N")).upper()
        if kind not in KINDS:
            raise TariffError(f"unknown activation kind {kind!r}; known: {', '.join(KINDS)}")
        unknown = set(data) - {"kind", "from", "to", "start", "end", "weekdays"}
        if unknown:
            raise TariffError(f"unknown activation keys: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {"kind": kind}
        if kind[0] in "HS":
            for key, field in (("from", "from_date"), ("to", "to_date")):
                if key not in data:
                    raise TariffError(f"activation {kind} needs '{key}'")
                kwargs[field] = _parse_date(kind, data[key])
        if kind[-1] == "W":
            days = data.get("weekdays", {})
            if not isinstance(days, Mapping) or set(days) - set(WEEKDAY_KEYS):
                raise TariffError(f"weekdays must be a table with keys {', '.join(WEEKDAY_KEYS)}")
            windows = []
            for key in WEEKDAY_KEYS:
                text = days.get(key, "00:00-00:00")
                if not isinstance(text, str) or text.count("-") != 1:
                    raise TariffError(f"weekday {key}: {text!r} is not HH:MM-HH:MM")
                s, e = text.split("-")
                windows.append((parse_step(s.strip()), parse_step(e.strip())))
            kwargs["weekdays"] = tuple(windows)
        elif kind != "N":
            kwargs["start_step"] = parse_step(data.get("start", 0))
            kwargs["end_step"] = parse_step(data.get("end", STEPS_PER_DAY))
        return cls(**kwargs)


def _parse_date(kind: str, value: object) -> MonthDay | date:
    if kind[0] == "H":
        if isinstance(value, str):
            return MonthDay.parse(value)
        raise TariffError(f"activation {kind} dates are 'MM-DD' strings, got {value!r}")
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return date_from_days_since_2000(value)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise TariffError(f"date {value!r} is not YYYY-MM-DD") from None
    raise TariffError(f"activation {kind} dates are YYYY-MM-DD, got {value!r}")


def select_tariff(
    candidates: Sequence[tuple[T, Activation]], local_dt: datetime, only_one_active: bool
) -> tuple[T, ...]:
    """Tariffs usable at ``local_dt``, most specific first (S > H > D/W > N, then list order).

    With ``only_one_active`` (TAX-4 option) at most one is returned: the most specific one, so a
    holiday tariff shuts out the always-active one. Without it, all active tariffs are offered
    (the driver chooses in FREE state, TAX-6).
    """
    active = [(-act.rank, i, no) for i, (no, act) in enumerate(candidates) if act.is_active(local_dt)]
    active.sort(key=lambda t: (t[0], t[1]))
    chosen = tuple(t[2] for t in active)
    return chosen[:1] if only_one_active else chosen


# --- seasons (ToU) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Season:
    """A season starts every year on ``start`` and lasts until the next season's start."""

    name: str
    start: MonthDay


def season_at(seasons: Sequence[Season], day: date) -> Season:
    """The season in force on ``day``: the latest start not after it, wrapping over New Year."""
    if not seasons:
        raise TariffError("no seasons defined")
    ordered = sorted(seasons, key=lambda s: s.start)
    md = MonthDay(day.month, day.day)
    current = ordered[-1]  # before the first start of the year: last season of the previous year
    for season in ordered:
        if season.start <= md:
            current = season
    return current
