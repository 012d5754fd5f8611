"""Energy (time-of-use) and water (block/tier) billing, exact, vectorised with numpy (AMR-4, HES-27, WAT).

Units, so nothing is ever a float: energy in Wh (1/1000 kWh, the 3 decimals meters show, AMR-2) and
water in litres (1/1000 m³, WAT-1) as int64; unit prices in 1e-6 currency per kWh or m³ as int.
Their product is in 1e-9 currency; each amount is rounded once, at the end, to the tariff's minor unit
with the tariff's rounding mode. The bill total is the rounded exact sum (line amounts are rounded
for display, so they may differ from the total by a minor unit per line).

Load profiles: one row per interval, stamped at the interval's END in the tariff's local time, as
DLMS load profiles stamp it; the band is the one in force at the interval START (the 05:45-06:00
interval stamped 06:00 is night energy). An interval starts at its end minus the period, or at the
previous stamp if that is later (a power-cut entry closes a short interval, AMR-5).

Time-of-use bands come from a DLMS-style activity calendar (osos.tariff.dlms_calendar): script selector
n prices as band ``Tn``. Official and religious holidays (TR) can switch in a holiday day profile,
and the 13:00 eves a half-day profile. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import numpy as np

from osos.tariff.dlms_calendar import ActivityCalendar, CosemDate, SpecialDay
from osos.tariff.errors import TariffError

PRICE_SCALE = 1_000_000  # prices in 1e-6 currency per unit (EPDK tables give 6 decimals)
QTY_SCALE = 1000  # Wh per kWh, litres per m³
AMOUNT_SCALE = PRICE_SCALE * QTY_SCALE  # 1e-9 currency
ROUNDING = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}
MINUTES_PER_DAY = 1440


class LoadProfileError(TariffError):
    """A bad load-profile row; ``line`` is the 1-based line number in the CSV."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


# --- exact number parsing ------------------------------------------------------------------------

_QTY_RE = re.compile(r"^\s*(\d+)(?:\.(\d{0,3}))?\s*$")


def parse_quantity(text: str, what: str = "quantity") -> int:
    """``"12.345"`` (kWh or m³, at most 3 decimals, not negative) -> 12345 (Wh or litres)."""
    m = _QTY_RE.match(text)
    if not m:
        raise TariffError(f"{what} {text.strip()!r} is not a non-negative number with at most 3 decimals")
    frac = (m.group(2) or "").ljust(3, "0")
    return int(m.group(1)) * QTY_SCALE + int(frac)


def _price(value: object, what: str) -> int:
    """A unit price (decimal string or int; no floats) in 1e-6 currency."""
    if isinstance(value, float | bool):
        raise TariffError(f"{what}: write prices as strings (\"1.582541\"), not floats")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise TariffError(f"{what}: {value!r} is not a number") from None
    scaled = d * PRICE_SCALE
    if scaled != scaled.to_integral_value() or d < 0:
        raise TariffError(f"{what}: {value!r} must be >= 0 with at most 6 decimals")
    return int(scaled)


def _round_amount(exact: int, decimals: int, rounding: str) -> Decimal:
    """1e-9 currency units -> Decimal rounded to the minor unit."""
    return (Decimal(exact) / AMOUNT_SCALE).quantize(Decimal(1).scaleb(-decimals), rounding=ROUNDING[rounding])


def fmt_quantity(q: int) -> str:
    """Wh or litres -> kWh or m³ with exactly 3 decimals, as meters display them."""
    return str(Decimal(q).scaleb(-3))


def fmt_price(p: int) -> str:
    """1e-6 currency -> the shortest exact decimal with at least 2 decimals."""
    d = (Decimal(p) / PRICE_SCALE).normalize()
    return str(d.quantize(Decimal("0.01"))) if d.as_tuple().exponent > -2 else str(d)  # type: ignore[operator]


def _source(data: Mapping[str, Any]) -> dict[str, str]:
    src = data.get("source")
    if not isinstance(src, Mapping) or not src.get("url"):
        raise TariffError("tariff needs a [source] table with at least url (where its figures come from)")
    return {str(k): str(v) for k, v in src.items()}


def _common(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TariffError("tariff must be a table")
    if data.get("kind") != kind:
        raise TariffError(f"tariff kind is {data.get('kind')!r}, expected {kind!r}")
    for key in ("name", "currency"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise TariffError(f"tariff needs a '{key}' string")
    decimals = data.get("decimals", 2)
    if not isinstance(decimals, int) or not 0 <= decimals <= 5:
        raise TariffError("decimals must be an integer 0..5")
    rounding = data.get("rounding", "half_up")
    if rounding not in ROUNDING:
        raise TariffError(f"rounding must be one of {', '.join(ROUNDING)}")
    return {
        "name": data["name"],
        "currency": data["currency"],
        "timezone": str(data.get("timezone", "Europe/Istanbul")),
        "decimals": decimals,
        "rounding": rounding,
        "source": _source(data),
        "title": str(data.get("title", data["name"])),
    }


# --- bills -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillLine:
    """One band (T1..T4) or tier: quantity in Wh/litres, unit price, exact and rounded amounts."""

    label: str
    quantity: int  # Wh or litres
    unit_price: int  # 1e-6 currency per kWh or m³
    exact: int  # 1e-9 currency

    def to_dict(self, decimals: int, rounding: str, unit: str) -> dict[str, str]:
        return {
            "band": self.label,
            unit: fmt_quantity(self.quantity),
            "unit_price": fmt_price(self.unit_price),
            "amount": str(_round_amount(self.exact, decimals, rounding)),
        }


@dataclass(frozen=True)
class Bill:
    tariff: str
    currency: str
    unit: str  # "kWh" or "m3"
    decimals: int
    rounding: str
    lines: tuple[BillLine, ...]
    notes: tuple[str, ...] = ()

    @property
    def total_quantity(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def total_exact(self) -> int:
        return sum(line.exact for line in self.lines)

    @property
    def total(self) -> Decimal:
        return _round_amount(self.total_exact, self.decimals, self.rounding)

    def amount(self, label: str) -> Decimal:
        return _round_amount(sum(li.exact for li in self.lines if li.label == label), self.decimals, self.rounding)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tariff": self.tariff,
            "currency": self.currency,
            "lines": [li.to_dict(self.decimals, self.rounding, self.unit) for li in self.lines],
            f"total_{self.unit}": fmt_quantity(self.total_quantity),
            "total": str(self.total),
            "notes": list(self.notes),
        }


# --- energy tariff -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HolidayRule:
    """Put a day profile on holidays: ``day_id`` for full days, ``half_day_id`` (optional) for eves."""

    country: str
    day_id: int
    half_day_id: int | None = None


@dataclass(frozen=True)
class EnergyTariff:
    name: str
    title: str
    currency: str
    timezone: str
    decimals: int
    rounding: str
    source: dict[str, str]
    bands: dict[str, int]  # band name -> price in 1e-6 currency per kWh, in billing order
    labels: dict[str, str] = field(default_factory=dict)
    calendar: ActivityCalendar | None = None
    holidays: HolidayRule | None = None

    kind = "energy"

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(self.bands)

    def calendar_for_years(self, years: tuple[int, ...]) -> ActivityCalendar | None:
        """The calendar with the holidays of these years added as special days (cached)."""
        if self.calendar is None or self.holidays is None:
            return self.calendar
        return _with_holidays(self.calendar, self.holidays, years)

    def band_at(self, local_dt: datetime) -> str:
        """Band in force at a local date-time (for display and checks)."""
        cal = self.calendar_for_years((local_dt.year - 1, local_dt.year))
        if cal is None:
            return self.band_names[0]
        return f"T{cal.selector_at(local_dt)}"

    def to_summary(self) -> dict[str, Any]:
        return {
            "kind": "energy",
            "name": self.name,
            "title": self.title,
            "currency": self.currency,
            "timezone": self.timezone,
            "bands": {b: {"price": fmt_price(p), "label": self.labels.get(b, "")}
                      for b, p in self.bands.items()},
            "time_of_use": self.calendar is not None,
            "holidays": None if self.holidays is None else self.holidays.country,
            "source": self.source,
        }


@lru_cache(maxsize=64)
def _with_holidays(cal: ActivityCalendar, rule: HolidayRule, years: tuple[int, ...]) -> ActivityCalendar:
    from osos.tariff.holidays_tr import TurkishHolidays

    if rule.country != "TR":
        raise TariffError(f"holidays for country {rule.country!r} are not supported (only TR)")
    extra: list[SpecialDay] = []
    index = len(cal.special_days)
    hol = TurkishHolidays(half_days=rule.half_day_id is not None)
    for year in sorted(set(years)):
        for d, _name, half in hol.holidays_in(year):
            day_id = rule.half_day_id if half else rule.day_id
            assert day_id is not None
            extra.append(SpecialDay(index, CosemDate(d.year, d.month, d.day), day_id))
            index += 1
    # the tariff's own special days keep priority (lower index wins)
    return replace(cal, special_days=cal.special_days + tuple(extra))


def _named(name: str | None, exc: TariffError) -> TariffError:
    return TariffError(f"{name}: {exc}") if name else exc


def load_energy_tariff(data: Mapping[str, Any], name: str | None = None) -> EnergyTariff:
    """Build an EnergyTariff from its TOML table; TariffError (prefixed with ``name``) on anything wrong."""
    try:
        return _load_energy_tariff(data)
    except TariffError as exc:
        raise _named(name, exc) from None


def _load_energy_tariff(data: Mapping[str, Any]) -> EnergyTariff:
    common = _common(data, "energy")
    bands_raw = data.get("bands")
    if not isinstance(bands_raw, Mapping) or not bands_raw:
        raise TariffError("energy tariff needs a [bands] table, e.g. T1 = { price = \"1.5\" }")
    bands: dict[str, int] = {}
    labels: dict[str, str] = {}
    for name, spec in bands_raw.items():
        if not re.fullmatch(r"T[1-9]", name):
            raise TariffError(f"band {name!r}: bands are named T1..T9 (script selector n = band Tn)")
        if not isinstance(spec, Mapping) or "price" not in spec:
            raise TariffError(f"band {name}: needs price")
        bands[name] = _price(spec["price"], f"band {name} price")
        labels[name] = str(spec.get("label", ""))
    calendar = None
    if "calendar" in data:
        calendar = ActivityCalendar.from_toml(data["calendar"])
        for day in calendar.days:
            for action in day.actions:
                if f"T{action.script_selector}" not in bands:
                    raise TariffError(f"day profile {day.day_id} switches to T{action.script_selector}, not in [bands]")
    elif len(bands) != 1:
        raise TariffError("a tariff with several bands needs a [calendar] saying when each applies")
    holidays = None
    if "holidays" in data:
        h = data["holidays"]
        if calendar is None or not isinstance(h, Mapping) or "day" not in h:
            raise TariffError("[holidays] needs a [calendar] and a 'day' (the day profile id used on holidays)")
        known = {d.day_id for d in calendar.days}
        half = h.get("half_day")
        for day_id in (h["day"], half):
            if day_id is not None and day_id not in known:
                raise TariffError(f"[holidays] names unknown day profile {day_id}")
        holidays = HolidayRule(str(h.get("country", "TR")), int(h["day"]), None if half is None else int(half))
    tariff = EnergyTariff(bands=bands, labels=labels, calendar=calendar, holidays=holidays, **common)
    if calendar is not None:
        tariff.calendar_for_years((2000,))  # fail early on an unusable holiday rule
    return tariff


# --- load profiles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProfile:
    """Intervals in local wall time (numpy datetime64[m]) and their quantity (Wh or litres)."""

    starts: np.ndarray
    ends: np.ndarray
    quantity: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.quantity.shape[0])

    def split(self, at: int) -> tuple[LoadProfile, LoadProfile]:
        return (
            LoadProfile(self.starts[:at], self.ends[:at], self.quantity[:at]),
            LoadProfile(self.starts[at:], self.ends[at:], self.quantity[at:]),
        )


def make_load_profile(
    ends: Sequence[datetime], quantity: Sequence[int], period_minutes: int | None = None
) -> LoadProfile:
    """From interval-end stamps (naive local wall time) and integer quantities (Wh or litres)."""
    if len(ends) != len(quantity):
        raise LoadProfileError("stamps and quantities differ in length")
    end_arr = np.array([np.datetime64(e.replace(tzinfo=None), "m") for e in ends], dtype="datetime64[m]")
    qty = np.asarray(quantity, dtype=np.int64)
    return _profile_from_arrays(end_arr, qty, period_minutes)


def _profile_from_arrays(ends: np.ndarray, qty: np.ndarray, period_minutes: int | None) -> LoadProfile:
    if ends.size == 0:
        raise LoadProfileError("the load profile is empty")
    diffs = np.diff(ends).astype(np.int64)
    bad = np.flatnonzero(diffs <= 0)
    if bad.size:
        raise LoadProfileError("timestamps must strictly increase (duplicate or out of order)", int(bad[0]) + 2)
    if period_minutes is None:
        if diffs.size == 0:
            raise LoadProfileError("one row only: give the interval length (period)")
        values, counts = np.unique(diffs, return_counts=True)
        period_minutes = int(values[np.argmax(counts)])
    if period_minutes <= 0 or MINUTES_PER_DAY % period_minutes:
        raise LoadProfileError(f"period of {period_minutes} min does not divide a day")
    starts = ends - np.timedelta64(period_minutes, "m")
    if ends.size > 1:
        starts[1:] = np.maximum(starts[1:], ends[:-1])
    if np.any(qty < 0):
        raise LoadProfileError("negative quantity", int(np.flatnonzero(qty < 0)[0]) + 1)
    return LoadProfile(starts, ends, qty)


def parse_load_profile_csv(
    text: str, timezone: str = "Europe/Istanbul", period_minutes: int | None = None
) -> LoadProfile:
    """Parse ``timestamp,kwh`` (or ``timestamp,m3``) CSV text; a header line is optional.

    Timestamps are ISO 8601; naive ones are the tariff's local wall time, ones with an offset are
    converted to ``timezone``. Errors name the 1-based line.
    """
    from zoneinfo import ZoneInfo

    try:
        zone = ZoneInfo(timezone)
    except Exception:  # noqa: BLE001 - any lookup failure is a bad tariff setting
        raise TariffError(f"unknown time zone {timezone!r}") from None
    ends: list[np.datetime64] = []
    qty: list[int] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            raise LoadProfileError(f"expected 2 fields 'timestamp,quantity', got {len(parts)}", lineno)
        if lineno == 1 and not parts[0][:1].isdigit():
            continue  # header
        try:
            stamp = datetime.fromisoformat(parts[0])
        except ValueError:
            raise LoadProfileError(f"bad timestamp {parts[0]!r}", lineno) from None
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(zone).replace(tzinfo=None)
        try:
            q = parse_quantity(parts[1])
        except TariffError as exc:
            raise LoadProfileError(str(exc), lineno) from None
        ends.append(np.datetime64(stamp, "m"))
        qty.append(q)
    if not ends:
        raise LoadProfileError("the load profile has no data rows")
    return _profile_from_arrays(np.array(ends, dtype="datetime64[m]"), np.array(qty, dtype=np.int64), period_minutes)


def band_index(tariff: EnergyTariff, starts: np.ndarray) -> np.ndarray:
    """Band number (index into ``tariff.band_names``) of each interval start, vectorised.

    One 1440-minute lookup row per distinct day (from the calendar's switch points), then a single
    fancy-index over (day, minute of day).
    """
    if tariff.calendar is None:
        return np.zeros(starts.shape, dtype=np.int8)
    days = starts.astype("datetime64[D]")
    unique_days, inverse = np.unique(days, return_inverse=True)
    first_year, last_year = int(str(unique_days[0])[:4]), int(str(unique_days[-1])[:4])
    years = tuple(range(first_year - 1, last_year + 1))  # last year too: 1 January carries 31 December over
    cal = tariff.calendar_for_years(years)
    assert cal is not None
    position = {name: i for i, name in enumerate(tariff.band_names)}
    lut = np.empty((unique_days.size, MINUTES_PER_DAY), dtype=np.int8)
    for row, d64 in enumerate(unique_days):
        day = date.fromisoformat(str(d64))
        points = cal.day_switches(day)
        for k, (minute, selector) in enumerate(points):
            end = points[k + 1][0] if k + 1 < len(points) else MINUTES_PER_DAY
            lut[row, minute:end] = position[f"T{selector}"]
    minute_of_day = (starts - days).astype(np.int64)
    return lut[inverse.reshape(starts.shape), minute_of_day]


def band_totals(band_idx: np.ndarray, quantity: np.ndarray, n_bands: int) -> np.ndarray:
    """Exact int64 sum of quantity per band (last axis = intervals; works for (T,) and (meters, T))."""
    out = np.zeros(quantity.shape[:-1] + (n_bands,), dtype=np.int64)
    for b in range(n_bands):
        cols = np.flatnonzero(band_idx == b)
        if cols.size:
            out[..., b] = quantity[..., cols].sum(axis=-1, dtype=np.int64)
    return out


def grid_band_totals(band_idx: np.ndarray, quantity: np.ndarray, slots_per_day: int, n_bands: int) -> np.ndarray:
    """Same result as ``band_totals`` for a regular grid of whole days (interval 0 starts at 00:00),
    several times faster for many meters: days sharing one band pattern are summed slot-wise first.

    The most common pattern (ordinary days) is "all days minus the others", so only the few odd days
    (holidays, season edges) are gathered. ``quantity`` is (..., days * slots_per_day).
    """
    n = band_idx.shape[0]
    if n % slots_per_day or quantity.shape[-1] != n:
        raise TariffError("grid billing needs whole days of intervals")
    days = n // slots_per_day
    patterns, inverse = np.unique(band_idx.reshape(days, slots_per_day), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    grid = quantity.reshape(quantity.shape[:-1] + (days, slots_per_day))
    all_days = grid.sum(axis=-2, dtype=np.int64)
    counts = np.bincount(inverse, minlength=len(patterns))
    major = int(np.argmax(counts))
    out = np.zeros(quantity.shape[:-1] + (n_bands,), dtype=np.int64)
    rest = np.zeros_like(all_days)
    for p, row in enumerate(patterns):
        if p == major:
            continue
        slot_sums = grid[..., np.flatnonzero(inverse == p), :].sum(axis=-2, dtype=np.int64)
        rest += slot_sums
        for b in range(n_bands):
            out[..., b] += slot_sums[..., row == b].sum(axis=-1, dtype=np.int64)
    major_sums = all_days - rest
    for b in range(n_bands):
        out[..., b] += major_sums[..., patterns[major] == b].sum(axis=-1, dtype=np.int64)
    return out


def amounts_exact(totals: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Band quantities (..., bands) x prices (bands,) -> exact amounts in 1e-9 currency (int64)."""
    return totals * prices.astype(np.int64)


def round_minor(exact: np.ndarray, decimals: int) -> np.ndarray:
    """Vectorised half-up rounding of non-negative 1e-9 amounts to minor units (int64 counts)."""
    if np.any(exact < 0):
        raise TariffError("vectorised rounding expects non-negative amounts")
    div = AMOUNT_SCALE // 10**decimals
    return (exact + div // 2) // div


def bill_load_profile(tariff: EnergyTariff, profile: LoadProfile) -> Bill:
    """ToU bill of a load profile: energy per band at the band's price (AMR-4, HES-27)."""
    idx = band_index(tariff, profile.starts)
    totals = band_totals(idx, profile.quantity, len(tariff.bands))
    return _energy_bill(tariff, {name: int(totals[i]) for i, name in enumerate(tariff.band_names)})


def bill_registers(tariff: EnergyTariff, deltas_kwh: Mapping[str, str | Decimal | int]) -> Bill:
    """Bill register advances per tariff register (``{"T1": "120.500", ...}`` in kWh).

    A single-band tariff prices the sum of all registers (the meter's T1..T4 split does not matter).
    """
    wh: dict[str, int] = {}
    for reg, value in deltas_kwh.items():
        if isinstance(value, float):
            raise TariffError("register values must be decimal strings or Decimal, not float")
        wh[reg] = parse_quantity(str(value), f"register {reg}")
    if len(tariff.bands) == 1:
        return _energy_bill(tariff, {tariff.band_names[0]: sum(wh.values())})
    unknown = set(wh) - set(tariff.bands)
    if unknown:
        raise TariffError(f"registers {', '.join(sorted(unknown))} have no band in tariff {tariff.name}")
    return _energy_bill(tariff, {b: wh.get(b, 0) for b in tariff.band_names})


def register_deltas(start: Mapping[str, str], end: Mapping[str, str]) -> dict[str, Decimal]:
    """End minus start readings per register (kWh, 3 decimals); a register running back is an error."""
    out: dict[str, Decimal] = {}
    for reg in end:
        if reg not in start:
            raise TariffError(f"register {reg} has no start reading")
        delta = parse_quantity(str(end[reg])) - parse_quantity(str(start[reg]))
        if delta < 0:
            raise TariffError(f"register {reg} went backwards")
        out[reg] = Decimal(delta) / QTY_SCALE
    return out


def _energy_bill(tariff: EnergyTariff, wh_per_band: Mapping[str, int]) -> Bill:
    lines = tuple(
        BillLine(band, wh_per_band.get(band, 0), price, wh_per_band.get(band, 0) * price)
        for band, price in tariff.bands.items()
    )
    return Bill(tariff.name, tariff.currency, "kWh", tariff.decimals, tariff.rounding, lines)


# --- water (block / tier) tariff ---------------------------------------------------------------


@dataclass(frozen=True)
class WaterTier:
    up_to: int | None  # cumulative upper limit in litres per dwelling and month; None = no limit
    components: dict[str, int]  # e.g. water, wastewater: 1e-6 currency per m³

    @property
    def price(self) -> int:
        return sum(self.components.values())


@dataclass(frozen=True)
class Allowance:
    """Unbilled share: ``free`` litres of every whole ``every`` litres, counted up to ``cap`` litres."""

    every: int
    free: int
    cap: int

    def free_litres(self, litres: int) -> int:
        return (min(litres, self.cap) // self.every) * self.free


@dataclass(frozen=True)
class WaterTariff:
    """Block tariff. ``style``: ``progressive`` (each tier prices only its own units) or ``whole``
    (the whole volume at the price of the tier it reaches)."""

    name: str
    title: str
    currency: str
    timezone: str
    decimals: int
    rounding: str
    source: dict[str, str]
    tiers: tuple[WaterTier, ...]
    style: str = "progressive"
    allowance: Allowance | None = None

    kind = "water"

    def to_summary(self) -> dict[str, Any]:
        tiers = []
        lower = 0
        for i, t in enumerate(self.tiers, start=1):
            tiers.append({
                "tier": i,
                "from_m3": fmt_quantity(lower),
                "up_to_m3": None if t.up_to is None else fmt_quantity(t.up_to),
                "price": fmt_price(t.price),
                "components": {k: fmt_price(v) for k, v in t.components.items()},
            })
            lower = t.up_to or lower
        return {"kind": "water", "name": self.name, "title": self.title, "currency": self.currency,
                "style": self.style, "tiers": tiers, "source": self.source}


def load_water_tariff(data: Mapping[str, Any], name: str | None = None) -> WaterTariff:
    """Build a WaterTariff from its TOML table; TariffError (prefixed with ``name``) on anything wrong."""
    try:
        return _load_water_tariff(data)
    except TariffError as exc:
        raise _named(name, exc) from None


def _load_water_tariff(data: Mapping[str, Any]) -> WaterTariff:
    common = _common(data, "water")
    style = data.get("style", "progressive")
    if style not in ("progressive", "whole"):
        raise TariffError("style must be 'progressive' or 'whole'")
    raw = data.get("tiers")
    if not isinstance(raw, list) or not raw:
        raise TariffError("water tariff needs [[tiers]] with up_to (m³ per month) and prices")
    tiers = []
    last = 0
    for i, t in enumerate(raw, start=1):
        if not isinstance(t, Mapping):
            raise TariffError(f"tier {i} must be a table")
        up = t.get("up_to")
        if up is None and i != len(raw):
            raise TariffError(f"tier {i}: only the last tier may be open-ended")
        up_l = None if up is None else parse_quantity(str(up), f"tier {i} up_to")
        if up_l is not None and up_l <= last:
            raise TariffError(f"tier {i}: up_to must increase")
        comps = {k: _price(v, f"tier {i} {k}") for k, v in t.items() if k != "up_to"}
        if not comps:
            raise TariffError(f"tier {i}: needs at least one price component, e.g. water = \"13.76\"")
        tiers.append(WaterTier(up_l, comps))
        last = up_l or last
    if tiers[-1].up_to is not None:
        raise TariffError("the last tier must be open-ended (no up_to)")
    allowance = None
    if "allowance" in data:
        a = data["allowance"]
        try:
            allowance = Allowance(parse_quantity(str(a["every"])), parse_quantity(str(a["free"])),
                                  parse_quantity(str(a["cap"])))
        except (KeyError, TypeError):
            raise TariffError("[allowance] needs every, free and cap (m³)") from None
        if allowance.every <= 0 or allowance.free > allowance.every:
            raise TariffError("[allowance]: free must not exceed every, and every must be > 0")
    return WaterTariff(tiers=tuple(tiers), style=style, allowance=allowance, **common)


def bill_water(tariff: WaterTariff, litres: int, dwellings: int = 1) -> Bill:
    """One month's water bill (WAT tiered tariff). Tier limits are per dwelling, so a shared meter
    of ``dwellings`` homes has its limits multiplied."""
    if litres < 0:
        raise TariffError("consumption must not be negative")
    if dwellings < 1:
        raise TariffError("dwellings must be >= 1")
    notes: list[str] = []
    billed = litres
    if tariff.allowance is not None:
        free = sum(tariff.allowance.free_litres(part) for part in _split_even(litres, dwellings))
        billed -= free
        if free:
            notes.append(f"allowance: {fmt_quantity(free)} m3 not billed")
    lines: list[BillLine] = []
    if tariff.style == "whole":
        for i, tier in enumerate(tariff.tiers, start=1):
            if tier.up_to is None or billed <= tier.up_to * dwellings:
                lines.append(BillLine(f"tier {i}", billed, tier.price, billed * tier.price))
                break
    else:
        lower = 0
        for i, tier in enumerate(tariff.tiers, start=1):
            upper = billed if tier.up_to is None else min(billed, tier.up_to * dwellings)
            qty = max(0, upper - lower)
            lines.append(BillLine(f"tier {i}", qty, tier.price, qty * tier.price))
            if tier.up_to is not None:
                lower = tier.up_to * dwellings
    return Bill(tariff.name, tariff.currency, "m3", tariff.decimals, tariff.rounding, tuple(lines), tuple(notes))


def _split_even(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def bill_water_profile(tariff: WaterTariff, profile: LoadProfile, dwellings: int = 1) -> list[tuple[str, Bill]]:
    """Tiers are per month: bill each calendar month (by interval start) of a volume profile."""
    months = profile.starts.astype("datetime64[M]")
    out = []
    for month in np.unique(months):
        litres = int(profile.quantity[months == month].sum(dtype=np.int64))
        out.append((str(month), bill_water(tariff, litres, dwellings)))
    return out


def load_billing_tariff(data: Mapping[str, Any]) -> EnergyTariff | WaterTariff:
    """Dispatch on ``kind`` (energy / water)."""
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind == "energy":
        return load_energy_tariff(data)
    if kind == "water":
        return load_water_tariff(data)
    raise TariffError(f"tariff kind {kind!r} is not energy or water")


def year_of_15_minute_ends(year: int) -> np.ndarray:
    """Interval-end stamps of one year of 15-minute intervals (bench and tests)."""
    first = np.datetime64(f"{year}-01-01T00:15", "m")
    last = np.datetime64(f"{year + 1}-01-01T00:00", "m")
    return np.arange(first, last + np.timedelta64(1, "m"), np.timedelta64(15, "m"))


__all__ = [
    "Bill", "BillLine", "EnergyTariff", "fmt_price", "fmt_quantity",
    "LoadProfile", "LoadProfileError", "WaterTariff", "band_index",
    "amounts_exact", "band_totals", "bill_load_profile", "grid_band_totals", "round_minor",
    "bill_registers", "bill_water", "bill_water_profile",
    "load_billing_tariff", "load_energy_tariff", "load_water_tariff", "make_load_profile", "parse_load_profile_csv",
    "parse_quantity", "register_deltas", "year_of_15_minute_ends",
]
