"""DLMS/COSEM activity calendar (class 20) and special days table (class 11) as data, and which
tariff (script selector) a meter runs at a local date-time (AMR-4, HES-63 tariff change orders).

The attribute values are given as plain Python values of the A-XDR types, so a DLMS codec can
serialise them unchanged: ``list`` = array, ``tuple`` = structure, ``bytes`` = octet-string,
``int`` = unsigned / long-unsigned. Date and time octet-strings follow the Blue Book (IEC 62056-6-2
§4.1.6.1): date-time is 12 bytes (year hi/lo, month, day, weekday 1=Monday, hour, minute, second,
hundredths, deviation hi/lo, clock status), date 5 bytes, time 4 bytes; 0xFF (0xFFFF for the year)
means "not specified" (a wildcard); day 0xFE / 0xFD mean the last / second-last day of the month.

Evaluation follows what a meter does: the season in force is the one with the latest start not after
the day; a special-days entry overrides the week profile's day for its date; inside the day the
action with the latest start time not after now applies, and *before the day's first action the
previous day's last action stays in force* (a day profile starting at 06:00 keeps yesterday's night
tariff until 06:00). Seasons switch at day granularity: a season applies from the first midnight at
or after its start. Pure: the caller passes the local date-time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from osos.protocols.errors import DecodeError
from osos.tariff.errors import TariffError

NOT_SPECIFIED = 0xFF
YEAR_NOT_SPECIFIED = 0xFFFF
LAST_DAY = 0xFE
SECOND_LAST_DAY = 0xFD
DEVIATION_NOT_SPECIFIED = 0x8000
TARIFF_SCRIPT_TABLE = bytes([0, 0, 10, 0, 100, 255])  # 0.0.10.0.100.255 tariffication script table
_MAX_CARRY_DAYS = 8  # a week of empty day profiles cannot hide an action further back


class CalendarError(DecodeError, TariffError):
    """A malformed or unsupported calendar structure (both a decode error and a tariff error)."""


# --- octet-string date/time ---------------------------------------------------------------------


@dataclass(frozen=True)
class CosemDate:
    """A date with wildcards: None = not specified; ``day`` may be LAST_DAY / SECOND_LAST_DAY."""

    year: int | None = None
    month: int | None = None
    day: int | None = None
    weekday: int | None = None  # 1 = Monday .. 7 = Sunday

    def __post_init__(self) -> None:
        if self.year is not None and not 0 <= self.year < YEAR_NOT_SPECIFIED:
            raise CalendarError(f"year {self.year} out of range")
        if self.month is not None and not 1 <= self.month <= 12:
            raise CalendarError(f"month {self.month} unsupported (DST month codes 0xFD/0xFE are not)")
        if self.day is not None and not (1 <= self.day <= 31 or self.day in (LAST_DAY, SECOND_LAST_DAY)):
            raise CalendarError(f"day {self.day} out of range")
        if self.weekday is not None and not 1 <= self.weekday <= 7:
            raise CalendarError(f"weekday {self.weekday} out of range")

    def to_bytes(self) -> bytes:
        year = YEAR_NOT_SPECIFIED if self.year is None else self.year
        return bytes(
            [year >> 8, year & 0xFF] + [NOT_SPECIFIED if v is None else v for v in (self.month, self.day, self.weekday)]
        )

    @classmethod
    def from_bytes(cls, raw: bytes, offset: int = 0) -> CosemDate:
        if len(raw) < offset + 5:
            raise CalendarError("date octet-string shorter than 5 bytes", offset)
        year = (raw[offset] << 8) | raw[offset + 1]

        def opt(v: int) -> int | None:
            return None if v == NOT_SPECIFIED else v

        return cls(
            None if year == YEAR_NOT_SPECIFIED else year,
            opt(raw[offset + 2]),
            opt(raw[offset + 3]),
            opt(raw[offset + 4]),
        )

    def matches(self, d: date) -> bool:
        """True when ``d`` fits every specified field."""
        if self.year is not None and d.year != self.year:
            return False
        if self.month is not None and d.month != self.month:
            return False
        if self.weekday is not None and d.isoweekday() != self.weekday:
            return False
        if self.day is None:
            return True
        if self.day in (LAST_DAY, SECOND_LAST_DAY):
            last = (date(d.year + (d.month == 12), d.month % 12 + 1, 1) - timedelta(days=1)).day
            return d.day == last - (self.day == SECOND_LAST_DAY)
        return d.day == self.day


@dataclass(frozen=True)
class CosemTime:
    """Time of day; unspecified fields count as 0 when comparing (a switch at hh:mm:**)."""

    hour: int | None = 0
    minute: int | None = 0
    second: int | None = 0
    hundredths: int | None = 0

    def __post_init__(self) -> None:
        for v, hi in ((self.hour, 23), (self.minute, 59), (self.second, 59), (self.hundredths, 99)):
            if v is not None and not 0 <= v <= hi:
                raise CalendarError(f"time field {v} out of range")

    def to_bytes(self) -> bytes:
        return bytes(NOT_SPECIFIED if v is None else v for v in (self.hour, self.minute, self.second, self.hundredths))

    @classmethod
    def from_bytes(cls, raw: bytes, offset: int = 0) -> CosemTime:
        if len(raw) < offset + 4:
            raise CalendarError("time octet-string shorter than 4 bytes", offset)
        vals = [None if b == NOT_SPECIFIED else b for b in raw[offset : offset + 4]]
        return cls(*vals)

    @property
    def centiseconds(self) -> int:
        """Hundredths of a second since midnight, for ordering and comparison."""
        h, m, s, c = ((v or 0) for v in (self.hour, self.minute, self.second, self.hundredths))
        return ((h * 60 + m) * 60 + s) * 100 + c

    @classmethod
    def parse(cls, text: str) -> CosemTime:
        try:
            parts = [int(p) for p in text.split(":")]
            return cls(*(parts + [0] * (4 - len(parts))))
        except (ValueError, TypeError):
            raise CalendarError(f"time {text!r} is not HH:MM[:SS]") from None


@dataclass(frozen=True)
class CosemDateTime:
    date: CosemDate
    time: CosemTime
    deviation: int | None = None  # minutes; None = not specified
    clock_status: int | None = None

    def to_bytes(self) -> bytes:
        dev = DEVIATION_NOT_SPECIFIED if self.deviation is None else self.deviation & 0xFFFF
        status = NOT_SPECIFIED if self.clock_status is None else self.clock_status
        return self.date.to_bytes() + self.time.to_bytes() + bytes([dev >> 8, dev & 0xFF, status])

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if not isinstance(raw, bytes | bytearray) or len(raw) != 12:
            raise CalendarError(f"date-time must be an octet-string of 12 bytes, got {raw!r}")
        dev = (raw[9] << 8) | raw[10]
        deviation = None if dev == DEVIATION_NOT_SPECIFIED else (dev - 0x10000 if dev & 0x8000 else dev)
        return cls(
            CosemDate.from_bytes(raw, 0),
            CosemTime.from_bytes(raw, 5),
            deviation,
            None if raw[11] == NOT_SPECIFIED else raw[11],
        )


# --- the calendar ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayAction:
    start_time: CosemTime
    script_selector: int
    script_logical_name: bytes = TARIFF_SCRIPT_TABLE


@dataclass(frozen=True)
class DayProfile:
    day_id: int
    actions: tuple[DayAction, ...]

    def sorted_actions(self) -> list[DayAction]:
        return sorted(self.actions, key=lambda a: a.start_time.centiseconds)


@dataclass(frozen=True)
class WeekProfile:
    name: bytes
    day_ids: tuple[int, int, int, int, int, int, int]  # Monday .. Sunday


@dataclass(frozen=True)
class SeasonProfile:
    name: bytes
    start: CosemDateTime
    week_name: bytes


@dataclass(frozen=True)
class SpecialDay:
    index: int
    date: CosemDate
    day_id: int


def _octets(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise CalendarError(f"{what} must be an octet-string (bytes), got {type(value).__name__}")
    return bytes(value)


def _uint(value: object, what: str, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise CalendarError(f"{what} must be an integer 0..{hi}, got {value!r}")
    return value


def _struct(value: object, n: int, what: str) -> Sequence[Any]:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise CalendarError(f"{what} must be a structure of {n} elements, got {value!r}")
    return value


def _array(value: object, what: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise CalendarError(f"{what} must be an array (list), got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class ActivityCalendar:
    """The active calendar of a meter plus its special days (class 11) table."""

    seasons: tuple[SeasonProfile, ...]
    weeks: tuple[WeekProfile, ...]
    days: tuple[DayProfile, ...]
    special_days: tuple[SpecialDay, ...] = ()
    name: bytes = b""
    _week_by_name: dict[bytes, WeekProfile] = field(init=False, repr=False, compare=False)
    _day_by_id: dict[int, DayProfile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.seasons:
            raise CalendarError("the calendar has no season")
        weeks = {w.name: w for w in self.weeks}
        days = {d.day_id: d for d in self.days}
        for s in self.seasons:
            if s.week_name not in weeks:
                raise CalendarError(f"season {s.name!r} names unknown week profile {s.week_name!r}")
        for w in self.weeks:
            for day_id in w.day_ids:
                if day_id not in days:
                    raise CalendarError(f"week profile {w.name!r} names unknown day_id {day_id}")
        for sd in self.special_days:
            if sd.day_id not in days:
                raise CalendarError(f"special day {sd.index} names unknown day_id {sd.day_id}")
        if not any(d.actions for d in self.days):
            raise CalendarError("no day profile has any action")
        object.__setattr__(self, "_week_by_name", weeks)
        object.__setattr__(self, "_day_by_id", days)

    # --- evaluation ---------------------------------------------------------------------------

    def season_for(self, day: date) -> SeasonProfile:
        """Season in force on ``day``: latest start (this or last year for yearly ones) not after it."""
        best: tuple[date, SeasonProfile] | None = None
        for s in self.seasons:
            sd = s.start.date
            if sd.month is None or sd.day is None or sd.day > 31:
                raise CalendarError(f"season {s.name!r} start needs a month and a day")
            years = [sd.year] if sd.year is not None else [day.year, day.year - 1]
            for y in years:
                try:
                    start = date(y, sd.month, sd.day)
                except ValueError:
                    continue  # 29 Feb in a common year
                if start <= day and (best is None or start > best[0]):
                    best = (start, s)
        if best is None:  # before every dated season: the latest-starting one rolls back
            raise CalendarError(f"no season is in force on {day.isoformat()}")
        return best[1]

    def day_profile_for(self, day: date) -> DayProfile:
        for sd in sorted(self.special_days, key=lambda s: s.index):
            if sd.date.matches(day):
                return self._day_by_id[sd.day_id]
        week = self._week_by_name[self.season_for(day).week_name]
        return self._day_by_id[week.day_ids[day.weekday()]]

    def _last_action_before(self, day: date) -> DayAction:
        for back in range(1, _MAX_CARRY_DAYS + 1):
            actions = self.day_profile_for(day - timedelta(days=back)).sorted_actions()
            if actions:
                return actions[-1]
        raise CalendarError(f"no action in the {_MAX_CARRY_DAYS} days before {day.isoformat()}")

    def action_at(self, local_dt: datetime) -> DayAction:
        """The action in force: today's latest started action, else the previous day's last one."""
        now = CosemTime(local_dt.hour, local_dt.minute, local_dt.second, local_dt.microsecond // 10000).centiseconds
        current: DayAction | None = None
        for action in self.day_profile_for(local_dt.date()).sorted_actions():
            if action.start_time.centiseconds <= now:
                current = action
        return current if current is not None else self._last_action_before(local_dt.date())

    def selector_at(self, local_dt: datetime) -> int:
        """Script selector (tariff number, 1 = T1 in the Turkish meter convention) in force."""
        return self.action_at(local_dt).script_selector

    def day_switches(self, day: date) -> list[tuple[int, int]]:
        """``(minute_of_day, selector)`` switch points of one day, the first at minute 0 (carry-over).

        Switches inside a minute take effect from the next whole minute (billing works in minutes).
        """
        points = [(0, self._last_action_before(day).script_selector)]
        for action in self.day_profile_for(day).sorted_actions():
            minute = -(-action.start_time.centiseconds // 6000)  # ceil to whole minutes
            if minute >= 1440:
                continue
            if points and points[-1][0] == minute:
                points[-1] = (minute, action.script_selector)
            else:
                points.append((minute, action.script_selector))
        return points

    # --- DLMS attribute values ----------------------------------------------------------------

    def to_dlms(self) -> dict[str, Any]:
        """Attributes 2..5 of class 20 (active calendar) and attribute 2 of class 11."""
        return {
            "calendar_name_active": self.name,
            "season_profile_active": [(s.name, s.start.to_bytes(), s.week_name) for s in self.seasons],
            "week_profile_table_active": [(w.name, *w.day_ids) for w in self.weeks],
            "day_profile_table_active": [
                (d.day_id, [(a.start_time.to_bytes(), a.script_logical_name, a.script_selector) for a in d.actions])
                for d in self.days
            ],
            "special_days_table": [(s.index, s.date.to_bytes(), s.day_id) for s in self.special_days],
        }

    @classmethod
    def from_dlms(cls, values: Mapping[str, Any]) -> ActivityCalendar:
        """Inverse of ``to_dlms``; raises CalendarError on any malformed element."""
        if not isinstance(values, Mapping):
            raise CalendarError("calendar values must be a mapping of attribute name to value")
        try:
            seasons_v = values["season_profile_active"]
            weeks_v = values["week_profile_table_active"]
            days_v = values["day_profile_table_active"]
        except KeyError as exc:
            raise CalendarError(f"missing attribute {exc.args[0]}") from None
        seasons = []
        for i, item in enumerate(_array(seasons_v, "season_profile")):
            name, start, week = _struct(item, 3, f"season_profile[{i}]")
            seasons.append(
                SeasonProfile(
                    _octets(name, "season_profile_name"),
                    CosemDateTime.from_bytes(_octets(start, "season_start")),
                    _octets(week, "week_name"),
                )
            )
        weeks = []
        for i, item in enumerate(_array(weeks_v, "week_profile_table")):
            st = _struct(item, 8, f"week_profile_table[{i}]")
            ids = tuple(_uint(v, "day_id", 255) for v in st[1:])
            weeks.append(WeekProfile(_octets(st[0], "week_profile_name"), ids))  # type: ignore[arg-type]
        days = []
        for i, item in enumerate(_array(days_v, "day_profile_table")):
            day_id, schedule = _struct(item, 2, f"day_profile_table[{i}]")
            actions = []
            for j, act in enumerate(_array(schedule, f"day_schedule of day_id {day_id}")):
                start, script, selector = _struct(act, 3, f"day_profile_action[{j}]")
                start_b = _octets(start, "start_time")
                if len(start_b) != 4:
                    raise CalendarError(f"start_time must be 4 bytes, got {len(start_b)}")
                script_b = _octets(script, "script_logical_name")
                if len(script_b) != 6:
                    raise CalendarError(f"script_logical_name must be 6 bytes, got {len(script_b)}")
                selector_v = _uint(selector, "script_selector", 0xFFFF)
                actions.append(DayAction(CosemTime.from_bytes(start_b), selector_v, script_b))
            days.append(DayProfile(_uint(day_id, "day_id", 255), tuple(actions)))
        specials = []
        for i, item in enumerate(_array(values.get("special_days_table", []), "special_days_table")):
            index, d, day_id = _struct(item, 3, f"special_days_table[{i}]")
            d_b = _octets(d, "specialday_date")
            if len(d_b) != 5:
                raise CalendarError(f"specialday_date must be 5 bytes, got {len(d_b)}")
            entry = SpecialDay(_uint(index, "index", 0xFFFF), CosemDate.from_bytes(d_b), _uint(day_id, "day_id", 255))
            specials.append(entry)
        name = _octets(values.get("calendar_name_active", b""), "calendar_name")
        return cls(tuple(seasons), tuple(weeks), tuple(days), tuple(specials), name)

    # --- TOML form ----------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> ActivityCalendar:
        """Readable form used by the bundled tariffs::

            [[calendar.seasons]]  name = "all", start = "01-01", week = "std"
            [[calendar.weeks]]    name = "std", days = [1, 1, 1, 1, 1, 2, 3]
            [[calendar.days]]     id = 1, actions = [["00:00", 3], ["06:00", 1], ["17:00", 2], ["22:00", 3]]
            [[calendar.special_days]] date = "*-10-29" or "2025-06-06", day = 4
        """
        if not isinstance(data, Mapping):
            raise CalendarError("calendar must be a table")
        try:
            seasons = []
            for s in data.get("seasons", []):
                month, day = (int(p) for p in str(s["start"]).split("-"))
                start = CosemDateTime(CosemDate(None, month, day), CosemTime(0, 0, 0, 0))
                seasons.append(SeasonProfile(str(s["name"]).encode(), start, str(s["week"]).encode()))
            weeks = []
            for w in data.get("weeks", []):
                ids = tuple(int(v) for v in w["days"])
                if len(ids) != 7:
                    raise CalendarError(f"week {w['name']!r} needs 7 day ids, Monday first")
                weeks.append(WeekProfile(str(w["name"]).encode(), ids))  # type: ignore[arg-type]
            days = []
            for d in data.get("days", []):
                actions = tuple(DayAction(CosemTime.parse(str(t)), int(sel)) for t, sel in d["actions"])
                days.append(DayProfile(int(d["id"]), actions))
            specials = []
            for i, sd in enumerate(data.get("special_days", [])):
                y, m, dd = str(sd["date"]).split("-")
                cd = CosemDate(None if y == "*" else int(y), int(m), int(dd))
                specials.append(SpecialDay(i, cd, int(sd["day"])))
        except CalendarError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CalendarError(f"bad calendar entry: {exc}") from None
        return cls(tuple(seasons), tuple(weeks), tuple(days), tuple(specials))
