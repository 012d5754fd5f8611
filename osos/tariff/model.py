"""Taximeter tariff model: dataclasses, the TOML schema and its validation (TAX-1, TAX-2, TAX-3, TAX-9).

A city's tariff set is one TOML file (``kind = "taxi"``) under ``osos/data/tariffs/``. The schema
follows S3 section 4.3: per tariff an opening fare/distance/time, unit fares and unit distance/time
(or a monetary step they are derived from), extras, tier references; tiers are stored apart so one
tier serves several tariffs. The format is documented in docs/taximeter.md ("Tariff file format").

Values are kept as ``Decimal`` exactly as the regulation states them; ``fare.py`` turns them into
integers (1/1000 currency unit, micrometres, microseconds). Derived values (unit distance from a
monetary step and a km fare) are computed once here, rounded to 1 micrometre / 1 microsecond, and a
unit distance the regulation states (e.g. "111.70 m per 0.20 EUR") is kept, never recomputed.
This module is pure: it parses a dict (from tomllib) and reads no files and no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from osos.tariff.calendar import Activation
from osos.tariff.errors import TariffError

Mode = Literal["S", "D"]
ChargeRule = Literal["completed", "started"]
TierKind = Literal["distance", "time", "amount", "speed"]
DistanceUnit = Literal["m", "yd"]

MONEY_SCALE = 1000  # money is exact to 1/1000 currency unit (S3: "1/10 kurus")
METRES_PER_YARD = Decimal("0.9144")
TARIFF_NO_RE = re.compile(r"^[1-9A-Z]$")
MAX_TIERS = {"distance": 16, "time": 8, "amount": 8, "speed": 8}  # TAX-3 flag widths


@dataclass(frozen=True)
class Source:
    """Where a tariff comes from (every data file cites its public source)."""

    url: str
    title: str
    accessed: str
    note: str = ""


@dataclass(frozen=True)
class Tier:
    """A tier (kademe, TAX-3): once its limit is reached its fields override the tariff's.

    ``limit`` is in the file's distance unit (distance tiers), seconds (time), currency (amount,
    compared with the fare without extras) or km/h (speed; active while the speed stays above the
    limit for longer than ``dwell_s``). Unset unit fields inherit from the tariff. ``switch_to``
    changes the tariff number shown (None = keep).
    """

    id: str
    kind: TierKind
    limit: Decimal
    dwell_s: int = 0
    switch_to: str | None = None
    unit_distance_fare: Decimal | None = None
    unit_time_fare: Decimal | None = None
    unit_distance: Decimal | None = None
    unit_time_s: Decimal | None = None
    monetary_step: Decimal | None = None
    km_fare: Decimal | None = None
    hourly_fare: Decimal | None = None


@dataclass(frozen=True)
class TaxiTariff:
    """One tariff (TAX-1) with its unit fares and units resolved (see module docstring)."""

    no: str
    name: str
    mode: Mode
    charge: ChargeRule
    opening_fare: Decimal
    opening_distance: Decimal
    opening_time_s: Decimal
    unit_distance_fare: Decimal
    unit_distance: Decimal
    unit_time_fare: Decimal
    unit_time_s: Decimal
    extra_fare: Decimal = Decimal(0)
    max_extras: int = 0
    minimum_fare: Decimal = Decimal(0)
    crossover_kmh: Decimal | None = None
    monetary_step: Decimal | None = None
    km_fare: Decimal | None = None
    hourly_fare: Decimal | None = None
    tiers: tuple[str, ...] = ()
    activation: Activation = field(default_factory=Activation)
    # more activation windows for the same tariff (S3 Ireland: 23 ranges for 3 tariffs); added for
    # the binary format and holiday tables, each is one more (tariff no, Activation) candidate
    also_active: tuple[Activation, ...] = ()


@dataclass(frozen=True)
class ExampleLeg:
    """One constant-speed piece of an example trip."""

    distance: Decimal  # in the file's distance unit
    duration_s: Decimal


@dataclass(frozen=True)
class Example:
    """A published (or independently computed) example fare a test replays."""

    name: str
    tariff: str
    legs: tuple[ExampleLeg, ...]
    expected_fare: Decimal
    extras: int = 0
    expected_total: Decimal | None = None
    start: str | None = None
    source: str = ""


@dataclass(frozen=True)
class TaxiTariffSet:
    """A city's taximeter tariffs (TAX-1..TAX-4, TAX-9): what one TOML file holds."""

    name: str
    city: str
    country: str
    year: int
    currency: str
    decimals: int
    distance_unit: DistanceUnit
    source: Source
    tariffs: tuple[TaxiTariff, ...]
    tiers: tuple[Tier, ...] = ()
    examples: tuple[Example, ...] = ()
    tariff_code: int = 0
    only_one_active: bool = False
    dst_switch: bool = False
    notes: str = ""
    kind: str = "taxi"

    def tariff(self, no: str) -> TaxiTariff:
        """The tariff with number ``no`` (TariffError if there is none)."""
        for t in self.tariffs:
            if t.no == no:
                return t
        raise TariffError(f"{self.name}: no tariff number {no!r}")

    def tier(self, tier_id: str) -> Tier:
        for t in self.tiers:
            if t.id == tier_id:
                return t
        raise TariffError(f"{self.name}: no tier {tier_id!r}")


# --------------------------------------------------------------------------- parsing helpers


def _dec(value: Any, where: str, *, allow_none: bool = False, positive: bool = False) -> Decimal:
    if value is None:
        if allow_none:
            return None  # type: ignore[return-value]
        raise TariffError(f"{where}: missing")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TariffError(f"{where}: write numbers as integers or quoted decimals (\"4.20\"), got {value!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise TariffError(f"{where}: not a decimal number: {value!r}") from None
    if not d.is_finite():
        raise TariffError(f"{where}: not a finite number: {value!r}")
    if d < 0:
        raise TariffError(f"{where}: must not be negative ({d})")
    if positive and d == 0:
        raise TariffError(f"{where}: must be greater than zero")
    return d


def _opt_dec(table: dict[str, Any], key: str, where: str, *, positive: bool = False) -> Decimal | None:
    if key not in table:
        return None
    return _dec(table[key], f"{where}.{key}", positive=positive)


def _money(value: Decimal, where: str) -> Decimal:
    if (value * MONEY_SCALE) != (value * MONEY_SCALE).to_integral_value():
        raise TariffError(f"{where}: {value} is finer than 1/{MONEY_SCALE} of the currency unit")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TariffError(f"{where}: must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise TariffError(f"{where}: {value} out of range {lo}..{hi}")
    return value


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise TariffError(f"{where}.{key}: missing")
    if not isinstance(value, str):
        raise TariffError(f"{where}.{key}: must be a string, got {value!r}")
    return value


def _bool(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise TariffError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise TariffError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _quant(value: Decimal, step: str) -> Decimal:
    from decimal import ROUND_HALF_UP

    return value.quantize(Decimal(step), rounding=ROUND_HALF_UP)


def _per_unit_length(distance_unit: str) -> Decimal:
    """Length of the fare's long unit: 1000 m (km fare) or 1760 yd (mile fare)."""
    return Decimal(1000) if distance_unit == "m" else Decimal(1760)


def _resolve_units(
    table: dict[str, Any], where: str, distance_unit: str, *, required: bool
) -> dict[str, Decimal | None]:
    """Resolve unit fares and units from what the file states (S3 2.1.7: one of the two ways).

    Stated values always win; missing ones are derived from km/hourly fare and monetary step.
    """
    step = _opt_dec(table, "monetary_step", where, positive=True)
    km = _opt_dec(table, "km_fare", where)
    hourly = _opt_dec(table, "hourly_fare", where)
    udf = _opt_dec(table, "unit_distance_fare", where)
    utf = _opt_dec(table, "unit_time_fare", where)
    ud = _opt_dec(table, "unit_distance", where, positive=True)
    ut = _opt_dec(table, "unit_time_s", where, positive=True)
    per = _per_unit_length(distance_unit)
    if udf is None and step is not None:
        udf = step
    if udf is None and km is not None and ud is not None:
        udf = km * ud / per
    if ud is None and udf is not None and km is not None:
        if km == 0:
            raise TariffError(f"{where}: km_fare is 0, cannot derive unit_distance")
        ud = _quant(udf * per / km, "0.000001")
    if utf is None and step is not None:
        utf = step
    if utf is None and hourly is not None and ut is not None:
        utf = hourly * ut / 3600
    if ut is None and utf is not None and hourly is not None:
        if hourly == 0:
            raise TariffError(f"{where}: hourly_fare is 0, cannot derive unit_time_s")
        ut = _quant(utf * 3600 / hourly, "0.000001")
    if required:
        for key, val in (("unit_distance_fare", udf), ("unit_distance", ud),
                         ("unit_time_fare", utf), ("unit_time_s", ut)):
            if val is None:
                raise TariffError(
                    f"{where}: cannot resolve {key}: give unit fares with unit_distance/unit_time_s, "
                    "or monetary_step with km_fare/hourly_fare"
                )
    # A unit fare derived from a km/hourly fare is kept to 1/10 kurus (S3 3.1: "at least 1/10 kurus"),
    # rounded half-up; a stated unit fare must already be exact.
    if udf is not None and "unit_distance_fare" not in table and step is None:
        udf = _quant(udf, "0.001")
    if utf is not None and "unit_time_fare" not in table and step is None:
        utf = _quant(utf, "0.001")
    for key, val in (("unit_distance_fare", udf), ("unit_time_fare", utf)):
        if val is not None:
            _money(val, f"{where}.{key}")
    return {"unit_distance_fare": udf, "unit_distance": ud, "unit_time_fare": utf, "unit_time_s": ut,
            "monetary_step": step, "km_fare": km, "hourly_fare": hourly}


_UNIT_KEYS = {"unit_distance_fare", "unit_time_fare", "unit_distance", "unit_time_s", "monetary_step",
              "km_fare", "hourly_fare"}


def _parse_activation(table: Any, where: str) -> Activation:
    """The activation table in osos.tariff.calendar's form (TAX-4); absent = always (N)."""
    if table is None:
        return Activation()
    try:
        return Activation.from_dict(table)
    except TariffError as exc:
        raise TariffError(f"{where}: {exc}") from None


def _parse_also_active(value: Any, where: str) -> tuple[Activation, ...]:
    """Further activation windows of one tariff (``also_active = [{kind = "HD", ...}, ...]``)."""
    if not isinstance(value, list):
        raise TariffError(f"{where}: must be an array of activation tables")
    return tuple(_parse_activation(t, f"{where}[{i}]") for i, t in enumerate(value))


def _parse_tariff_no(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not TARIFF_NO_RE.match(value):
        raise TariffError(f"{where}: tariff number must be one character '1'..'9' or 'A'..'Z', got {value!r}")
    return value


_TIER_KEYS = {"id", "kind", "limit", "dwell_s", "switch_to"} | _UNIT_KEYS


def _parse_tier(table: Any, where: str, distance_unit: str) -> Tier:
    if not isinstance(table, dict):
        raise TariffError(f"{where}: must be a table")
    _check_keys(table, _TIER_KEYS, where)
    tier_id = _str(table, "id", where)
    kind = _str(table, "kind", where)
    if kind not in MAX_TIERS:
        raise TariffError(f"{where}.kind: {kind!r} is not one of distance, time, amount, speed")
    limit = _dec(table.get("limit"), f"{where}.limit")
    if kind == "amount":
        _money(limit, f"{where}.limit")
    dwell = _int(table.get("dwell_s", 0), f"{where}.dwell_s", 0, 255)
    if dwell and kind != "speed":
        raise TariffError(f"{where}.dwell_s: only speed tiers have a dwell time")
    switch = table.get("switch_to")
    switch_to = None if switch in (None, 0, "0", "") else _parse_tariff_no(switch, f"{where}.switch_to")
    units = _resolve_units(table, where, distance_unit, required=False)
    return Tier(tier_id, kind, limit, dwell, switch_to, **units)  # type: ignore[arg-type]


_TARIFF_KEYS = {"no", "name", "mode", "charge", "opening_fare", "opening_distance", "opening_time_s",
                "extra_fare", "max_extras", "minimum_fare", "crossover_kmh", "tiers", "activation",
                "also_active"} | _UNIT_KEYS


def _parse_tariff(table: Any, where: str, defaults: dict[str, Any], distance_unit: str) -> TaxiTariff:
    if not isinstance(table, dict):
        raise TariffError(f"{where}: must be a table")
    _check_keys(table, _TARIFF_KEYS, where)
    no = _parse_tariff_no(table.get("no"), f"{where}.no")
    mode = table.get("mode", defaults["mode"])
    if mode not in ("S", "D"):
        raise TariffError(f"{where}.mode: must be \"S\" (single) or \"D\" (double), got {mode!r}")
    charge = table.get("charge", defaults["charge"])
    if charge not in ("completed", "started"):
        raise TariffError(f"{where}.charge: must be \"completed\" or \"started\", got {charge!r}")
    units = _resolve_units(table, where, distance_unit, required=True)
    if units["unit_distance_fare"] == 0 and units["unit_time_fare"] == 0:
        raise TariffError(f"{where}: both unit fares are zero")
    tiers = table.get("tiers", [])
    if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
        raise TariffError(f"{where}.tiers: must be a list of tier ids")
    min_raw = table.get("minimum_fare", defaults["minimum_fare"])
    return TaxiTariff(
        no=no,
        name=_str(table, "name", where, f"Tariff {no}"),
        mode=mode,
        charge=charge,
        opening_fare=_money(_dec(table.get("opening_fare"), f"{where}.opening_fare"), f"{where}.opening_fare"),
        opening_distance=_dec(table.get("opening_distance", 0), f"{where}.opening_distance"),
        opening_time_s=_dec(table.get("opening_time_s", 0), f"{where}.opening_time_s"),
        extra_fare=_money(_dec(table.get("extra_fare", 0), f"{where}.extra_fare"), f"{where}.extra_fare"),
        max_extras=_int(table.get("max_extras", 0), f"{where}.max_extras", 0, 255),
        minimum_fare=_money(_dec(min_raw, f"{where}.minimum_fare"), f"{where}.minimum_fare"),
        crossover_kmh=_opt_dec(table, "crossover_kmh", where, positive=True),
        tiers=tuple(tiers),
        activation=_parse_activation(table.get("activation"), f"{where}.activation"),
        also_active=_parse_also_active(table.get("also_active", []), f"{where}.also_active"),
        **units,  # type: ignore[arg-type]
    )


def _parse_example(table: Any, where: str, nos: set[str]) -> Example:
    if not isinstance(table, dict):
        raise TariffError(f"{where}: must be a table")
    _check_keys(table, {"name", "tariff", "legs", "expected_fare", "extras", "expected_total", "start",
                        "source"}, where)
    tariff = _parse_tariff_no(table.get("tariff", "1"), f"{where}.tariff")
    if tariff not in nos:
        raise TariffError(f"{where}.tariff: no tariff {tariff!r} in this file")
    legs_raw = table.get("legs")
    if not isinstance(legs_raw, list) or not legs_raw:
        raise TariffError(f"{where}.legs: a non-empty list of {{distance = ..., duration_s = ...}}")
    legs = []
    for i, leg in enumerate(legs_raw):
        lw = f"{where}.legs[{i}]"
        if not isinstance(leg, dict):
            raise TariffError(f"{lw}: must be a table")
        _check_keys(leg, {"distance", "duration_s"}, lw)
        legs.append(ExampleLeg(_dec(leg.get("distance", 0), f"{lw}.distance"),
                               _dec(leg.get("duration_s", 0), f"{lw}.duration_s")))
    total = table.get("expected_total")
    start = table.get("start")
    if start is not None:
        try:
            datetime.fromisoformat(str(start))
        except ValueError:
            raise TariffError(f"{where}.start: not an ISO local date-time: {start!r}") from None
    return Example(
        name=_str(table, "name", where),
        tariff=tariff,
        legs=tuple(legs),
        expected_fare=_money(_dec(table.get("expected_fare"), f"{where}.expected_fare"), f"{where}.expected_fare"),
        extras=_int(table.get("extras", 0), f"{where}.extras", 0, 255),
        expected_total=None if total is None else _dec(total, f"{where}.expected_total"),
        start=None if start is None else str(start),
        source=_str(table, "source", where, ""),
    )


_TOP_KEYS = {"kind", "name", "city", "country", "year", "currency", "decimals", "distance_unit", "mode",
             "charge", "minimum_fare", "tariff_code", "only_one_active", "dst_switch", "notes", "source",
             "tariffs", "tiers", "examples"}


def parse_taxi_tariff_set(doc: dict[str, Any], name: str | None = None) -> TaxiTariffSet:
    """Validate a parsed TOML document (``kind = "taxi"``) and build the tariff set (TAX-1, TAX-3).

    Raises TariffError naming the offending key on any problem.
    """
    if not isinstance(doc, dict):
        raise TariffError("tariff document must be a table")
    where = name or str(doc.get("name", "tariff"))
    _check_keys(doc, _TOP_KEYS, where)
    if doc.get("kind") != "taxi":
        raise TariffError(f"{where}.kind: expected \"taxi\", got {doc.get('kind')!r}")
    distance_unit = doc.get("distance_unit", "m")
    if distance_unit not in ("m", "yd"):
        raise TariffError(f"{where}.distance_unit: must be \"m\" or \"yd\"")
    src = doc.get("source")
    if not isinstance(src, dict):
        raise TariffError(f"{where}.source: every tariff file cites its public source (url, title, accessed)")
    _check_keys(src, {"url", "title", "accessed", "note"}, f"{where}.source")
    source = Source(_str(src, "url", f"{where}.source"), _str(src, "title", f"{where}.source"),
                    _str(src, "accessed", f"{where}.source"), _str(src, "note", f"{where}.source", ""))
    defaults = {"mode": doc.get("mode", "S"), "charge": doc.get("charge", "completed"),
                "minimum_fare": doc.get("minimum_fare", 0)}
    tiers_raw = doc.get("tiers", [])
    if not isinstance(tiers_raw, list):
        raise TariffError(f"{where}.tiers: must be an array of tables [[tiers]]")
    tiers = tuple(_parse_tier(t, f"{where}.tiers[{i}]", distance_unit) for i, t in enumerate(tiers_raw))
    ids = [t.id for t in tiers]
    if len(set(ids)) != len(ids):
        raise TariffError(f"{where}.tiers: duplicate tier id")
    for kind, cap in MAX_TIERS.items():
        if sum(1 for t in tiers if t.kind == kind) > cap:
            raise TariffError(f"{where}.tiers: more than {cap} {kind} tiers (TAX-3)")
    tariffs_raw = doc.get("tariffs")
    if not isinstance(tariffs_raw, list) or not tariffs_raw:
        raise TariffError(f"{where}.tariffs: at least one [[tariffs]] table is required")
    tariffs = tuple(_parse_tariff(t, f"{where}.tariffs[{i}]", defaults, distance_unit)
                    for i, t in enumerate(tariffs_raw))
    nos = [t.no for t in tariffs]
    if len(set(nos)) != len(nos):
        raise TariffError(f"{where}.tariffs: duplicate tariff number")
    known = set(ids)
    for i, t in enumerate(tariffs):
        for ref in t.tiers:
            if ref not in known:
                raise TariffError(f"{where}.tariffs[{i}].tiers: unknown tier {ref!r}")
    examples_raw = doc.get("examples", [])
    if not isinstance(examples_raw, list):
        raise TariffError(f"{where}.examples: must be an array of tables [[examples]]")
    examples = tuple(_parse_example(e, f"{where}.examples[{i}]", set(nos)) for i, e in enumerate(examples_raw))
    year = doc.get("year")
    decimals = doc.get("decimals", 2)
    return TaxiTariffSet(
        name=_str(doc, "name", where, name),
        city=_str(doc, "city", where),
        country=_str(doc, "country", where),
        year=_int(year, f"{where}.year", 1900, 2100),
        currency=_str(doc, "currency", where),
        decimals=_int(decimals, f"{where}.decimals", 0, 3),
        distance_unit=distance_unit,
        source=source,
        tariffs=tariffs,
        tiers=tiers,
        examples=examples,
        tariff_code=_int(doc.get("tariff_code", 0), f"{where}.tariff_code", 0, 65535),
        only_one_active=_bool(doc, "only_one_active", where),
        dst_switch=_bool(doc, "dst_switch", where),
        notes=_str(doc, "notes", where, ""),
    )


def crossover_kmh(tariff: TaxiTariff, distance_unit: str = "m") -> Decimal:
    """Cross-over speed in km/h (TAX-2): hourly time fare / km fare (yard tariffs converted to km).

    An explicit ``crossover_kmh`` in the file wins (some cities publish it instead).
    """
    if tariff.crossover_kmh is not None:
        return tariff.crossover_kmh
    if tariff.unit_distance_fare == 0:
        return Decimal("Infinity")
    metres = tariff.unit_distance * (METRES_PER_YARD if distance_unit == "yd" else 1)
    hourly = tariff.unit_time_fare * 3600 / tariff.unit_time_s
    per_km = tariff.unit_distance_fare * 1000 / metres
    return hourly / per_km


def _overlay_side(
    stated_fare: Decimal | None, stated_unit: Decimal | None, step: Decimal | None, rate: Decimal | None,
    base_fare: Decimal, base_unit: Decimal, base_rate: Decimal | None, per: Decimal, quantum: str,
    base_step: Decimal | None,
) -> tuple[Decimal, Decimal]:
    """One side (distance or time) of a tier overlay: stated values win, then a step, then a rate.

    A new rate keeps the monetary step of a step-based tariff (the unit shrinks or grows) and keeps
    the unit of a unit-based tariff (the unit fare changes), as S3 2.3.1 describes.
    """
    fare = stated_fare if stated_fare is not None else step
    unit = stated_unit
    if unit is not None:
        return (fare if fare is not None else base_fare), unit
    if fare is None and rate is not None:
        if base_step is None:  # unit-based tariff: keep the unit, new unit fare
            return _quant(rate * base_unit / per, "0.001"), base_unit
        fare = base_step  # step-based tariff: keep the step, new unit
    if fare is None:
        return base_fare, base_unit
    if stated_fare is not None:  # a new unit fare: the unit stays
        return fare, base_unit
    eff_rate = rate if rate is not None else base_rate  # a (new) step: the unit follows the rate
    if eff_rate:
        return fare, _quant(fare * per / eff_rate, quantum)
    return fare, base_unit


def overlay(tariff: TaxiTariff, tier: Tier, distance_unit: str = "m") -> TaxiTariff:
    """The tariff as it charges once ``tier`` is active (TAX-3).

    A tier states either new unit fares (units kept), new units (fares kept), a new km/hourly fare
    (units kept, unit fares recomputed) or a new monetary step (units re-derived from the rates).
    """
    from dataclasses import replace

    per = _per_unit_length(distance_unit)
    udf, ud = _overlay_side(tier.unit_distance_fare, tier.unit_distance, tier.monetary_step, tier.km_fare,
                            tariff.unit_distance_fare, tariff.unit_distance, tariff.km_fare, per, "0.000001",
                            tariff.monetary_step)
    utf, ut = _overlay_side(tier.unit_time_fare, tier.unit_time_s, tier.monetary_step, tier.hourly_fare,
                            tariff.unit_time_fare, tariff.unit_time_s, tariff.hourly_fare, Decimal(3600),
                            "0.000001", tariff.monetary_step)
    return replace(tariff, no=tier.switch_to or tariff.no, unit_distance_fare=udf, unit_distance=ud,
                   unit_time_fare=utf, unit_time_s=ut,
                   km_fare=tier.km_fare if tier.km_fare is not None else tariff.km_fare,
                   hourly_fare=tier.hourly_fare if tier.hourly_fare is not None else tariff.hourly_fare,
                   monetary_step=tier.monetary_step or tariff.monetary_step)
