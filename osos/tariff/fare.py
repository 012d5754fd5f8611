"""Taximeter fare engine: S/D modes, units, tiers, charge rules, states, extras, totalizers.

Covers TAX-2 (S and D modes, cross-over speed), TAX-3 (distance/time/amount/speed tiers, tariff
number switching, partial units carried), TAX-6 (FREE -> HIRED -> STOPPED -> FREE, CALIBRATION),
TAX-7 (distance from pulses with constant k), TAX-8 (totalizers). Pure: time and distance are
passed in; nothing reads a clock or a file.

Exact integer arithmetic throughout:
- money in 1/1000 currency unit ("milli", S3's 1/10 kurus),
- distance in micrometres (samples arrive in mm; yard tariffs convert exactly, 1 yd = 914400 um),
- time in microseconds (samples arrive in ms; S3's s/64 = 15625 us is exact).

Charging model. The opening fare covers ``opening_distance`` on the distance counter and
``opening_time_s`` on the time counter. Past that, each counter charges its unit fare per unit
(distance or time). In S mode a segment between two samples advances exactly one counter: the
distance counter when the segment's money rate by distance is at least the rate by time (speed at or
above the cross-over speed), else the time counter; in D mode both advance. ``completed`` charges a
unit when it is completed; ``started`` charges it as soon as it begins ("or part thereof").

Tiers: a tier becomes active once hired distance / hired time / metered fare reaches its limit, or
while the speed stays above its limit for ``dwell_s`` (speed tiers drop off when the speed falls).
Per kind the reached tier with the highest limit counts; kinds overlay in the order distance, time,
amount, speed. A segment crossing a limit is split there (linear in time/distance), and each
counter keeps its partial unit across the boundary (the distance or time already run toward the
next unit counts toward the new unit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any

from osos.tariff.calendar import select_tariff
from osos.tariff.errors import TariffError
from osos.tariff.model import (
    METRES_PER_YARD,
    MONEY_SCALE,
    TaxiTariff,
    TaxiTariffSet,
    Tier,
    overlay,
)

UM_PER_MM = 1000
_CHUNK = 8192  # samples per closed-form stretch: bounds the work wasted when a tier limit falls early
_WINDOW = 512  # first stretch after an event; doubles up to _CHUNK while no event is found
US_PER_MS = 1000
MIN_FARE_STATE_US = 10_000_000  # TAX-6: STOPPED/FARE lasts at least 10 s before FREE


class TaximeterError(TariffError):
    """An operation the taximeter state machine does not allow (TAX-6), or bad trip input."""


class State(StrEnum):
    FREE = "FREE"
    HIRED = "HIRED"
    STOPPED = "STOPPED"  # S3 "UCRET" (FARE)
    CALIBRATION = "CALIBRATION"


def money_to_milli(value: Decimal) -> int:
    return int(value * MONEY_SCALE)


def milli_to_decimal(milli: int, decimals: int) -> Decimal:
    """Money for display: exact value rounded half-up to the currency's shown decimals."""
    return (Decimal(milli) / MONEY_SCALE).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _length_um(value: Decimal, distance_unit: str) -> int:
    metres = value * (METRES_PER_YARD if distance_unit == "yd" else 1)
    return int((metres * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))


def _time_us(seconds: Decimal) -> int:
    return int((seconds * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class _Regime:
    """A tariff (with its active tiers overlaid) compiled to integers."""

    no: str
    double: bool
    started: bool
    udf: int  # milli per unit distance
    ud: int  # um
    utf: int  # milli per unit time
    ut: int  # us
    fast_p: int  # segment is "fast" (distance charged) iff dd * fast_p >= dt * fast_q
    fast_q: int


def _compile(t: TaxiTariff, distance_unit: str) -> _Regime:
    ud, ut = _length_um(t.unit_distance, distance_unit), _time_us(t.unit_time_s)
    if ud <= 0 or ut <= 0:
        raise TariffError(f"tariff {t.no}: unit distance and unit time must be positive")
    udf, utf = money_to_milli(t.unit_distance_fare), money_to_milli(t.unit_time_fare)
    if t.crossover_kmh is not None:
        v = Fraction(t.crossover_kmh)  # km/h; um/us = m/s = km/h / 3.6
        p, q = 36 * v.denominator, 10 * v.numerator
    else:  # money rate by distance >= money rate by time  <=>  dd*udf/ud >= dt*utf/ut
        p, q = udf * ut, utf * ud
    return _Regime(t.no, t.mode == "D", t.charge == "started", udf, ud, utf, ut, p, q)


@dataclass(frozen=True)
class Event:
    """One line of the trip timeline: where and when the fare changed and why."""

    t_ms: int
    distance_mm: int
    kind: str  # hire | distance | time | tier | extra | stop | resume
    fare_milli: int
    tariff_no: str
    units: int = 0


@dataclass(frozen=True)
class FareResult:
    """The outcome of one trip (``replay`` or ``Taximeter.free``)."""

    fare: Decimal  # after the minimum fare, without extras
    extras: Decimal
    total: Decimal
    tariff_no: str
    currency: str
    distance_m: Decimal
    duration_s: Decimal
    distance_units: int
    time_units: int
    extra_count: int
    timeline: tuple[Event, ...] = ()


@dataclass
class Totalizers:
    """TAX-8: kept across trips."""

    total_distance_um: int = 0
    hired_distance_um: int = 0
    trips: int = 0
    extras_milli: int = 0
    money_milli: int = 0
    shift: int = 0  # optional shift number (S3 2.1.8), set by the operator
    trip_log: list[FareResult] = field(default_factory=list)  # per-trip records (without timeline)


@dataclass
class _Counter:
    open_left: int = 0
    acc: int = 0  # progress past the opening toward the next unit (negative: prepaid, "started")
    units: int = 0


class Taximeter:
    """The taximeter state machine (TAX-6) around the fare engine.

    ``sample(t_ms, odometer_mm)`` takes cumulative distance; ``pulses(t_ms, count)`` takes the
    cumulative pulse count and converts it with ``k_per_km`` (TAX-7).
    """

    def __init__(self, tariffs: TaxiTariffSet, *, k_per_km: int | None = None,
                 record_timeline: bool = True) -> None:
        if k_per_km is not None and k_per_km <= 0:
            raise TaximeterError("calibration constant k must be a positive number of pulses per km")
        self.tariffs = tariffs
        self.k_per_km = k_per_km
        self.state = State.FREE
        self.cal_d = self.cal_t = 0  # um / us measured in CALIBRATION
        self.totals = Totalizers()
        self.record_timeline = record_timeline
        self._regimes: dict[tuple[str, tuple[str, ...]], _Regime] = {}
        self._last_t: int | None = None  # us
        self._last_d: int | None = None  # um
        self._reset_trip()

    # ------------------------------------------------------------------ state machine (TAX-6)

    def _reset_trip(self) -> None:
        self.base: TaxiTariff | None = None
        self.regime: _Regime | None = None
        self.metered = 0
        self.extra_count = 0
        self.dist = _Counter()
        self.time = _Counter()
        self.hired_t = 0
        self.hired_d = 0
        self._has_tiers = False
        self.stop_t = 0
        self._evt_at: tuple[int, int] | None = None
        self._now = self._last_t or 0  # us: the point up to which the trip has been charged
        self._dnow = self._last_d or 0  # um
        self.timeline: list[Event] = []
        self._tiers: dict[str, list[tuple[int, Tier]]] = {}
        self._active: dict[str, Tier] = {}
        self._above_since: dict[str, int | None] = {}

    def available(self, local_dt: datetime) -> tuple[str, ...]:
        """Tariff numbers the driver may choose at ``local_dt`` (TAX-4, TAX-6 FREE state)."""
        cands = [(t.no, act) for t in self.tariffs.tariffs for act in (t.activation, *t.also_active)]
        chosen = select_tariff(cands, local_dt, self.tariffs.only_one_active)
        return tuple(dict.fromkeys(chosen))  # a tariff with several windows is offered once

    def hire(self, t_ms: int, odometer_mm: int | None = None, *, tariff_no: str | None = None,
             local_dt: datetime | None = None) -> None:
        """FREE -> HIRED: choose a tariff valid at ``local_dt`` and show its opening fare."""
        if self.state is not State.FREE:
            raise TaximeterError(f"hire is only possible in FREE (now {self.state.value})")
        if local_dt is not None:
            valid = self.available(local_dt)
            if not valid:
                raise TaximeterError(f"no tariff of {self.tariffs.name} is active at {local_dt.isoformat()}")
            if tariff_no is None:
                tariff_no = valid[0]
            elif tariff_no not in valid:
                raise TaximeterError(f"tariff {tariff_no} is not active at {local_dt.isoformat()}")
        elif tariff_no is None:
            tariff_no = self.tariffs.tariffs[0].no
        base = self.tariffs.tariff(tariff_no)
        self._advance_totals(t_ms, odometer_mm)
        self._reset_trip()
        self.base = base
        self.state = State.HIRED
        unit = self.tariffs.distance_unit
        self.dist.open_left = _length_um(base.opening_distance, unit)
        self.time.open_left = _time_us(base.opening_time_s)
        self.metered = money_to_milli(base.opening_fare)
        for kind in ("distance", "time", "amount", "speed"):
            tiers = [self.tariffs.tier(i) for i in base.tiers]
            lst = [(self._limit(tr), tr) for tr in tiers if tr.kind == kind]
            lst.sort(key=lambda x: x[0])
            self._tiers[kind] = lst
        for _, tr in self._tiers["speed"]:
            self._above_since[tr.id] = None
        self._has_tiers = any(self._tiers.values())
        self._apply_tiers()
        self._event("hire")

    def stop(self, t_ms: int, odometer_mm: int | None = None) -> None:
        """HIRED -> STOPPED (FARE): counting ends, the minimum fare applies."""
        if self.state is not State.HIRED:
            raise TaximeterError(f"stop is only possible in HIRED (now {self.state.value})")
        self.sample(t_ms, odometer_mm if odometer_mm is not None else self._last_d_mm())
        self.state = State.STOPPED
        self.stop_t = self._last_t or 0
        self._event("stop")

    def resume(self, t_ms: int, odometer_mm: int | None = None) -> None:
        """STOPPED -> HIRED: the passenger stays; counting continues from where it stopped."""
        if self.state is not State.STOPPED:
            raise TaximeterError(f"resume is only possible in STOPPED (now {self.state.value})")
        self._advance_totals(t_ms, odometer_mm)
        self._now, self._dnow = self._last_t or 0, self._last_d or 0
        self.state = State.HIRED
        self._event("resume")

    def free(self, t_ms: int, odometer_mm: int | None = None) -> FareResult:
        """STOPPED -> FREE after at least 10 s; books the trip into the totalizers (TAX-8)."""
        if self.state is not State.STOPPED:
            raise TaximeterError(f"free is only possible from STOPPED (now {self.state.value})")
        if t_ms * US_PER_MS - self.stop_t < MIN_FARE_STATE_US:
            raise TaximeterError("the fare must be shown for at least 10 s before FREE")
        result = self.result()
        self.totals.trip_log.append(replace(result, timeline=()))
        self.totals.trips += 1
        self.totals.extras_milli += self.extras_milli
        self.totals.money_milli += self.fare_milli + self.extras_milli
        self._advance_totals(t_ms, odometer_mm)
        self.state = State.FREE
        self._reset_trip()
        return result

    def calibrate(self) -> None:
        """FREE -> CALIBRATION: distance and time are measured from here (no fare), TAX-7 checks."""
        if self.state is not State.FREE:
            raise TaximeterError("CALIBRATION is only reachable from FREE")
        self.state = State.CALIBRATION
        self.cal_d = self.cal_t = 0

    def end_calibration(self) -> tuple[Decimal, Decimal]:
        """CALIBRATION -> FREE; returns the distance (m) and time (s) measured meanwhile."""
        if self.state is not State.CALIBRATION:
            raise TaximeterError("not in CALIBRATION")
        self.state = State.FREE
        return Decimal(self.cal_d) / 1_000_000, Decimal(self.cal_t) / 1_000_000

    def extra(self, count: int = 1) -> None:
        """EXTRA key: only in HIRED and STOPPED, up to the tariff's maximum count (TAX-6)."""
        if self.state not in (State.HIRED, State.STOPPED):
            raise TaximeterError(f"extras are only possible in HIRED or STOPPED (now {self.state.value})")
        assert self.base is not None
        if count < 0 or self.extra_count + count > self.base.max_extras:
            raise TaximeterError(f"at most {self.base.max_extras} extras in tariff {self.base.no}")
        if count:
            self.extra_count += count
            self._event("extra", count)

    # ------------------------------------------------------------------ readings

    @property
    def fare_milli(self) -> int:
        """Fare shown: metered, and in STOPPED at least the minimum fare."""
        if self.base is None:
            return 0
        if self.state is State.STOPPED:
            return max(self.metered, money_to_milli(self.base.minimum_fare))
        return self.metered

    @property
    def extras_milli(self) -> int:
        return 0 if self.base is None else self.extra_count * money_to_milli(self.base.extra_fare)

    @property
    def tariff_no(self) -> str:
        return self.regime.no if self.regime else ""

    def result(self) -> FareResult:
        dec = self.tariffs.decimals
        fare, extras = self.fare_milli, self.extras_milli
        return FareResult(
            fare=milli_to_decimal(fare, dec),
            extras=milli_to_decimal(extras, dec),
            total=milli_to_decimal(fare + extras, dec),
            tariff_no=self.tariff_no,
            currency=self.tariffs.currency,
            distance_m=Decimal(self.hired_d) / 1_000_000,
            duration_s=Decimal(self.hired_t) / 1_000_000,
            distance_units=self.dist.units,
            time_units=self.time.units,
            extra_count=self.extra_count,
            timeline=tuple(self.timeline),
        )

    # ------------------------------------------------------------------ measurement input

    def pulses(self, t_ms: int, pulse_count: int) -> None:
        """Cumulative pulse count -> distance with k pulses per km (TAX-7), exact to 1 um."""
        if self.k_per_km is None:
            raise TaximeterError("pulses need the calibration constant k (pulses per km)")
        if pulse_count < 0:
            raise TaximeterError("pulse count must not be negative")
        self._sample_um(t_ms * US_PER_MS, pulse_count * 1_000_000_000 // self.k_per_km)

    def sample(self, t_ms: int, odometer_mm: int) -> None:
        """Cumulative distance (mm) at time ``t_ms``; charges the segment since the last sample."""
        self._sample_um(t_ms * US_PER_MS, odometer_mm * UM_PER_MM)

    def _last_d_mm(self) -> int:
        return (self._last_d or 0) // UM_PER_MM

    def _advance_totals(self, t_ms: int, odometer_mm: int | None) -> None:
        d = (self._last_d or 0) if odometer_mm is None else odometer_mm * UM_PER_MM
        self._check_and_total(t_ms * US_PER_MS, d)
        self._last_t, self._last_d = t_ms * US_PER_MS, d

    def _check_and_total(self, t: int, d: int) -> None:
        if self._last_t is not None:
            if t < self._last_t:
                raise TaximeterError(f"time went backwards ({t / 1e6} s < {self._last_t / 1e6} s)")
            if d < (self._last_d or 0):
                raise TaximeterError("distance went backwards")
            self.totals.total_distance_um += d - (self._last_d or 0)

    def _sample_um(self, t: int, d: int) -> None:
        last_t, last_d = self._last_t, self._last_d
        if last_t is None or last_d is None:
            self._last_t, self._last_d = t, d
            return
        dt, dd = t - last_t, d - last_d
        if dt < 0:
            raise TaximeterError(f"time went backwards ({t / 1e6} s < {last_t / 1e6} s)")
        if dd < 0:
            raise TaximeterError("distance went backwards")
        self.totals.total_distance_um += dd
        self._last_t, self._last_d = t, d
        if self.state is State.CALIBRATION:
            self.cal_d += dd
            self.cal_t += dt
        if self.state is State.HIRED:
            self.totals.hired_distance_um += dd
            self._segment(last_t, last_d, dt, dd)

    # ------------------------------------------------------------------ vectorised stretches

    def samples_array(self, t_ms: Any, odometer_mm: Any) -> None:
        """Feed many samples at once (numpy int arrays, ms and cumulative mm): same result as calling
        ``sample`` for each, but stretches without a tier boundary are charged in closed form.

        Each counter's units after k samples are floor((acc + max(0, X_k - opening_left)) / unit)
        ("completed"; ceil for "started"), X_k the cumulative charged distance or time, so a whole
        stretch costs a few array operations. The segment in which a distance, time or amount tier
        is reached, or a speed tier starts or stops counting, goes through the exact scalar path
        (``_segment``). Values that would overflow int64 use the scalar path throughout.
        """
        import numpy as np

        # arrays stay in ms / mm (the um/us scale factor 1000 cancels in the speed comparison and is
        # applied to the few scalars and cumulative values that meet um/us state)
        t = np.asarray(t_ms, dtype=np.int64)
        d = np.asarray(odometer_mm, dtype=np.int64)
        n = len(t)
        if n == 0:
            return
        last_t, last_d = self._last_t, self._last_d or 0
        if (last_t is None or self.state is not State.HIRED
                or last_t % US_PER_MS or last_d % UM_PER_MM
                or any(since is not None and since % US_PER_MS for since in self._above_since.values())):
            self._scalar_run(t, d, 0)
            return
        dt_all = np.empty(n, dtype=np.int64)
        dd_all = np.empty(n, dtype=np.int64)
        dt_all[0], dd_all[0] = int(t[0]) - last_t // US_PER_MS, int(d[0]) - last_d // UM_PER_MM
        np.subtract(t[1:], t[:-1], out=dt_all[1:])
        np.subtract(d[1:], d[:-1], out=dd_all[1:])
        if dt_all.min() < 0 or dd_all.min() < 0:
            self._scalar_run(t, d, 0)  # raises at the first bad sample with the scalar message
            return
        # int64 bounds of the products below (segment x speed factor, cumulative um/us x unit fare)
        max_dd, max_dt = int(dd_all.max()), int(dt_all.max())
        span_d = (int(d[-1]) - last_d // UM_PER_MM) * UM_PER_MM
        span_t = (int(t[-1]) - last_t // US_PER_MS) * US_PER_MS
        i, win = 0, _WINDOW
        while i < n:
            reg = self.regime
            assert reg is not None
            dt, dd = dt_all[i:i + win], dd_all[i:i + win]
            if max_dd * max(reg.fast_p, 1) >= 2**62 or max_dt * max(reg.fast_q, 1) >= 2**62 or \
                    (self.hired_d + span_d) * max(reg.udf, 1) >= 2**62 or \
                    (self.hired_t + span_t) * max(reg.utf, 1) >= 2**62:
                self._scalar_run(t, d, i)
                return
            if reg.double:
                xd, xt = dd, dt
            else:
                fast = dd * reg.fast_p >= dt * reg.fast_q
                xd, xt = np.where(fast, dd, 0), np.where(fast, 0, dt)
            j = len(dt)
            pending = {k: [lim for lim, _ in self._tiers[k] if lim > v] for k, v in
                       (("distance", self.hired_d), ("time", self.hired_t), ("amount", self.metered))}
            # a limit is searched for only when the stretch's totals reach it (one sum, no cumsum)
            if pending["distance"]:
                lim = -(-(min(pending["distance"]) - self.hired_d) // UM_PER_MM)  # first mm at/after it
                if int(dd.sum()) >= lim:
                    j = min(j, int(np.searchsorted(np.cumsum(dd), lim)))
            if pending["time"]:
                lim = -(-(min(pending["time"]) - self.hired_t) // US_PER_MS)
                if int(dt.sum()) >= lim:
                    j = min(j, int(np.searchsorted(np.cumsum(dt), lim)))
            units: tuple[Any, Any] | None = None
            amount_hit = False
            if pending["amount"]:
                end_fare = (self._units_for(self.dist, int(xd.sum()) * UM_PER_MM, reg.ud, reg.started) * reg.udf
                            + self._units_for(self.time, int(xt.sum()) * US_PER_MS, reg.ut, reg.started) * reg.utf)
                amount_hit = end_fare >= min(pending["amount"]) - self.metered
            if self.record_timeline or amount_hit:
                nd = self._units_after(self.dist, np.cumsum(xd) * UM_PER_MM, reg.ud, reg.started)
                nt = self._units_after(self.time, np.cumsum(xt) * US_PER_MS, reg.ut, reg.started)
                units = (nd, nt)
                if amount_hit:
                    fare = nd * reg.udf + nt * reg.utf
                    j = min(j, int(np.searchsorted(fare, min(pending["amount"]) - self.metered)))
            speed_after: list[tuple[str, Any, Any]] = []
            if self._tiers["speed"]:
                j, speed_after = self._speed_events(t[i:i + len(dt)], dt, dd, j, max_dd, max_dt)
                if j < 0:
                    self._scalar_run(t, d, i)
                    return
            if j > 0:
                self._bulk_apply(reg, t[i:i + j], d[i:i + j], dt[:j], dd[:j], xd[:j], xt[:j], units, j)
                for tier_id, above, run_start in speed_after:  # what the scalar path would have tracked
                    self._above_since[tier_id] = int(run_start[j - 1]) * US_PER_MS if above[j - 1] else None
            if j < len(dt):
                self._sample_um(int(t[i + j]) * US_PER_MS, int(d[i + j]) * UM_PER_MM)
                j += 1
                win = _WINDOW  # events come in bursts: look close again
            else:
                win = min(2 * win, _CHUNK)
            i += j

    def _speed_events(self, tend: Any, dt: Any, dd: Any, j: int, max_dd: int,
                      max_dt: int) -> tuple[int, list[tuple[str, Any, Any]]]:
        """First segment where a speed tier starts or stops counting (-1: values too large).

        A tier counting now (its dwell already run) stops at the first segment not above its limit;
        another starts at the first segment whose above-limit run has lasted ``dwell_s`` by its end.
        Also returns, per tier, the above-limit mask and each segment's run start (ms) so the bulk
        step can leave ``_above_since`` exactly as the scalar path would.
        """
        import numpy as np

        out = []
        tstart = tend - dt
        idx = np.arange(len(dt))
        for _, tier in self._tiers["speed"]:
            v = Fraction(tier.limit)
            p, q = 36 * v.denominator, 10 * v.numerator
            if max_dd * p >= 2**62 or max_dt * max(q, 1) >= 2**62:
                return -1, []
            above = dd * p > dt * q
            since = self._above_since.get(tier.id)
            counting = since is not None and self._now - since >= tier.dwell_s * 1_000_000
            if counting:  # stops at the first segment not above; until then its run just continues
                stop = int(np.argmin(above)) if not above.all() else len(above)
                j = min(j, stop)
                out.append((tier.id, above, np.full(len(above), since // US_PER_MS)))
                continue
            starts = above.copy()
            starts[1:] &= ~above[:-1]
            if since is not None:
                starts[0] = False  # the run in progress continues
            first = np.maximum.accumulate(np.where(starts, idx, -1))
            run_start = np.where(first >= 0, tstart[np.maximum(first, 0)],
                                 -1 if since is None else since // US_PER_MS)
            go = np.flatnonzero(above & (tend - run_start >= tier.dwell_s * 1000))
            if len(go):
                j = min(j, int(go[0]))
            out.append((tier.id, above, run_start))
        return j, out

    def _scalar_run(self, t_ms: Any, d_mm: Any, start: int) -> None:
        for k in range(start, len(t_ms)):
            self._sample_um(int(t_ms[k]) * US_PER_MS, int(d_mm[k]) * UM_PER_MM)

    @staticmethod
    def _units_for(c: _Counter, cum: int, unit: int, started: bool) -> int:
        progress = c.acc + max(cum - c.open_left, 0)
        return max(-((-progress) // unit), 0) if started else progress // unit

    def _units_after(self, c: _Counter, cum: Any, unit: int, started: bool) -> Any:
        import numpy as np

        progress = (cum - c.open_left).clip(0) + c.acc
        if started:
            return np.maximum(-((-progress) // unit), 0)
        return progress // unit

    def _bulk_apply(self, reg: _Regime, t: Any, d: Any, dt: Any, dd: Any, xd: Any, xt: Any,
                    units: tuple[Any, Any] | None, j: int) -> None:
        import numpy as np

        if units is not None and self.record_timeline:
            nd, nt = units[0][:j], units[1][:j]
            m0 = self.metered
            prev_nd = np.concatenate(([0], nd[:-1]))
            prev_nt = np.concatenate(([0], nt[:-1]))
            for k in np.flatnonzero((nd != prev_nd) | (nt != prev_nt)).tolist():
                ts, ds = int(t[k]), int(d[k])
                a, b, pa, pb = int(nd[k]), int(nt[k]), int(prev_nd[k]), int(prev_nt[k])
                if a != pa:
                    self.timeline.append(Event(ts, ds, "distance", m0 + a * reg.udf + pb * reg.utf, reg.no, a - pa))
                if b != pb:
                    self.timeline.append(Event(ts, ds, "time", m0 + a * reg.udf + b * reg.utf, reg.no, b - pb))
        sum_dd = int(dd.sum()) * UM_PER_MM
        for c, cum, unit, fare in ((self.dist, int(xd.sum()) * UM_PER_MM, reg.ud, reg.udf),
                                   (self.time, int(xt.sum()) * US_PER_MS, reg.ut, reg.utf)):
            n_units = self._units_for(c, cum, unit, reg.started)
            used = min(cum, c.open_left)
            c.acc += cum - used - n_units * unit
            c.open_left -= used
            c.units += n_units
            self.metered += n_units * fare
        self.hired_t += int(dt.sum()) * US_PER_MS
        self.hired_d += sum_dd
        self.totals.total_distance_um += sum_dd
        self.totals.hired_distance_um += sum_dd
        self._last_t, self._last_d = int(t[-1]) * US_PER_MS, int(d[-1]) * UM_PER_MM
        self._now, self._dnow = self._last_t, self._last_d

    # ------------------------------------------------------------------ charging core

    def _limit(self, tier: Tier) -> int:
        if tier.kind == "distance":
            return _length_um(tier.limit, self.tariffs.distance_unit)
        if tier.kind == "time":
            return _time_us(tier.limit)
        if tier.kind == "amount":
            return money_to_milli(tier.limit)
        return int(tier.limit)  # speed: compared exactly in _speed_above

    def _regime_for(self, key: tuple[str, ...]) -> _Regime:
        assert self.base is not None
        cache_key = (self.base.no, key)
        reg = self._regimes.get(cache_key)
        if reg is None:
            t = self.base
            for tier_id in key:
                t = overlay(t, self.tariffs.tier(tier_id), self.tariffs.distance_unit)
            reg = _compile(t, self.tariffs.distance_unit)
            self._regimes[cache_key] = reg
        return reg

    def _apply_tiers(self) -> bool:
        """Recompute the active tiers; switch regime if they changed. True when it changed."""
        values = {"distance": self.hired_d, "time": self.hired_t, "amount": self.metered}
        active: dict[str, Tier] = {}
        for kind in ("distance", "time", "amount"):
            for limit, tier in self._tiers[kind]:
                if values[kind] >= limit:
                    active[kind] = tier
        for _, tier in self._tiers["speed"]:
            since = self._above_since.get(tier.id)
            if since is not None and self._now - since >= tier.dwell_s * 1_000_000:
                active["speed"] = tier
        key = tuple(active[k].id for k in ("distance", "time", "amount", "speed") if k in active)
        reg = self._regime_for(key)
        changed = reg is not self.regime
        old = self.regime
        self.regime = reg
        self._active = active
        if changed and old is not None:
            self._event("tier")
            self._normalise()
        return changed

    def _normalise(self) -> None:
        """After a tier switch a carried partial unit may already cover a (shorter) new unit."""
        reg = self.regime
        assert reg is not None
        self._add(self.dist, 0, reg.ud, reg.udf, "distance", reg.started)
        self._add(self.time, 0, reg.ut, reg.utf, "time", reg.started)

    def _add(self, c: _Counter, x: int, unit: int, unit_fare: int, kind: str, started: bool) -> None:
        if c.open_left:
            use = x if x < c.open_left else c.open_left
            c.open_left -= use
            x -= use
            if c.open_left:
                return
        c.acc += x
        acc = c.acc
        if started:
            if acc <= 0:
                return
            n = -((-acc) // unit)
        else:
            if acc < unit:
                return
            n = acc // unit
        c.acc = acc - n * unit
        c.units += n
        self.metered += n * unit_fare
        if self.record_timeline:
            self._event(kind, n)

    def _speed_above(self, tier: Tier, dt: int, dd: int) -> bool:
        v = Fraction(tier.limit)  # km/h;  dd/dt [m/s] * 3.6 > v
        return dd * 36 * v.denominator > dt * 10 * v.numerator

    def _segment(self, t0: int, d0: int, dt: int, dd: int) -> None:
        if dt == 0 and dd == 0:
            return
        self._evt_at = (t0 + dt, d0 + dd)  # events of this segment are stamped with its end sample
        try:
            self._segment_inner(t0, d0, dt, dd)
        finally:
            self._evt_at = None

    def _segment_inner(self, t0: int, d0: int, dt: int, dd: int) -> None:
        if not self._has_tiers:
            self._now, self._dnow = t0 + dt, d0 + dd
            self._charge(self.regime, dt, dd)  # type: ignore[arg-type]
            return
        speed_tiers = self._tiers["speed"]
        if speed_tiers:
            changed = False
            for tier in (tr for _, tr in speed_tiers):
                if self._speed_above(tier, dt, dd):
                    if self._above_since[tier.id] is None:
                        self._above_since[tier.id] = t0
                elif self._above_since[tier.id] is not None:
                    self._above_since[tier.id] = None
                    changed = True
            if changed:
                self._apply_tiers()
        while dt > 0 or dd > 0:
            reg = self.regime
            assert reg is not None
            cut_d, cut_t = self._next_cut(reg, t0, dt, dd)
            if cut_d is not None:
                sub_dd, sub_dt = cut_d, (dt * cut_d // dd if dd else dt)
            elif cut_t is not None:
                sub_dt, sub_dd = cut_t, (dd * cut_t // dt if dt else dd)
            else:
                sub_dt, sub_dd = dt, dd
            t0 += sub_dt
            d0 += sub_dd
            self._now, self._dnow = t0, d0
            self._charge(reg, sub_dt, sub_dd)
            dt -= sub_dt
            dd -= sub_dd
            self._apply_tiers()

    def _charge(self, reg: _Regime, dt: int, dd: int) -> None:
        self.hired_t += dt
        self.hired_d += dd
        if reg.double:
            self._add(self.dist, dd, reg.ud, reg.udf, "distance", reg.started)
            self._add(self.time, dt, reg.ut, reg.utf, "time", reg.started)
        elif dd * reg.fast_p >= dt * reg.fast_q:
            self._add(self.dist, dd, reg.ud, reg.udf, "distance", reg.started)
        else:
            self._add(self.time, dt, reg.ut, reg.utf, "time", reg.started)

    def _next_cut(self, reg: _Regime, t0: int, dt: int, dd: int) -> tuple[int | None, int | None]:
        """The first tier boundary inside this segment, as a distance or a time into it."""
        best_d: int | None = None
        best_t: int | None = None
        best_frac = Fraction(1)
        for limit, _tier in self._tiers["distance"]:
            if self.hired_d < limit < self.hired_d + dd:
                f = Fraction(limit - self.hired_d, dd)
                if f < best_frac:
                    best_frac, best_d, best_t = f, limit - self.hired_d, None
                break
        for limit, _tier in self._tiers["time"]:
            if self.hired_t < limit < self.hired_t + dt:
                f = Fraction(limit - self.hired_t, dt)
                if f < best_frac:
                    best_frac, best_d, best_t = f, None, limit - self.hired_t
                break
        for _, tier in self._tiers["speed"]:
            since = self._above_since.get(tier.id)
            if since is not None and tier.id not in {t.id for t in self._active.values()}:
                at = since + tier.dwell_s * 1_000_000 - t0
                if 0 < at < dt:
                    f = Fraction(at, dt)
                    if f < best_frac:
                        best_frac, best_d, best_t = f, None, at
        amount = [lim for lim, _ in self._tiers["amount"] if lim > self.metered]
        if amount:
            nxt = self._next_drop(reg, dt, dd)
            if nxt is not None:
                f, x, is_dist = nxt
                if f < best_frac:
                    best_frac = f
                    best_d, best_t = (x, None) if is_dist else (None, x)
        return best_d, best_t

    def _next_drop(self, reg: _Regime, dt: int, dd: int) -> tuple[Fraction, int, bool] | None:
        """Where in the segment the next unit is charged (so an amount tier can switch exactly)."""
        out: list[tuple[Fraction, int, bool]] = []
        fast = reg.double or dd * reg.fast_p >= dt * reg.fast_q
        slow = reg.double or not fast
        for c, unit, total, is_dist, on in ((self.dist, reg.ud, dd, True, fast),
                                            (self.time, reg.ut, dt, False, slow)):
            if not on or total == 0:
                continue
            need = c.open_left + (max(0, -c.acc) + 1 if reg.started else unit - c.acc)
            if 0 < need < total:
                out.append((Fraction(need, total), need, is_dist))
        return min(out) if out else None

    def _event(self, kind: str, units: int = 0) -> None:
        if not self.record_timeline and kind in ("distance", "time"):
            return
        ev = Event(
            t_ms=(self._evt_at or (self._now, 0))[0] // US_PER_MS,
            distance_mm=(self._evt_at or (0, self._dnow))[1] // UM_PER_MM,
            kind=kind,
            fare_milli=self.fare_milli,
            tariff_no=self.tariff_no,
            units=units,
        )
        last = self.timeline[-1] if self.timeline else None
        if (kind in ("distance", "time") and last is not None and last.kind == kind
                and (last.t_ms, last.distance_mm, last.tariff_no) == (ev.t_ms, ev.distance_mm, ev.tariff_no)):
            # one event per counter per sample: units charged in pieces of one segment are summed
            self.timeline[-1] = Event(ev.t_ms, ev.distance_mm, kind, ev.fare_milli, ev.tariff_no, last.units + units)
            return
        self.timeline.append(ev)


@dataclass(frozen=True)
class Sample:
    """One trip sample: time (ms), cumulative distance (mm), cumulative EXTRA presses."""

    t_ms: int
    distance_mm: int
    extras: int = 0


def replay(tariff_set: TaxiTariffSet, samples: Iterable[Sample | tuple[int, int] | tuple[int, int, int]],
           start_local_dt: datetime | None = None, *, tariff_no: str | None = None,
           record_timeline: bool = True) -> FareResult:
    """Replay a whole trip: hire at the first sample, stop at the last; pure (TAX-2, TAX-3).

    ``samples`` are (t_ms, cumulative distance mm[, cumulative extra presses]) in time order.
    """
    meter = Taximeter(tariff_set, record_timeline=record_timeline)
    if hasattr(samples, "shape"):  # a numpy array: vectorised stretches
        return _replay_array(meter, samples, start_local_dt, tariff_no)
    it = iter(samples)
    first = next(it, None)
    if first is None:
        raise TaximeterError("a trip needs at least one sample")
    t0, d0, x0 = _unpack(first)
    meter.sample(t0, d0)
    meter.hire(t0, d0, tariff_no=tariff_no, local_dt=start_local_dt)
    extras = 0
    if x0:
        meter.extra(x0)
        extras = x0
    last_t, last_d = t0, d0
    sample = meter.sample
    for s in it:
        if type(s) is tuple and len(s) == 2:
            last_t, last_d = s
            sample(last_t, last_d)
            continue
        last_t, last_d, x = _unpack(s)
        sample(last_t, last_d)
        if x != extras:
            if x < extras:
                raise TaximeterError("extra presses are cumulative and must not decrease")
            meter.extra(x - extras)
            extras = x
    meter.stop(last_t, last_d)
    return meter.result()


def _replay_array(meter: Taximeter, samples: Any, start_local_dt: datetime | None,
                  tariff_no: str | None) -> FareResult:
    """``replay`` for an (n, 2) or (n, 3) integer array: stretches between EXTRA presses go in bulk."""
    import numpy as np

    arr = np.asarray(samples, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3) or arr.shape[0] == 0:
        raise TaximeterError("samples must be an (n, 2) or (n, 3) array of t_ms, distance_mm[, extras]")
    t0, d0 = int(arr[0, 0]), int(arr[0, 1])
    meter.sample(t0, d0)
    meter.hire(t0, d0, tariff_no=tariff_no, local_dt=start_local_dt)
    if arr.shape[1] == 3:
        x = arr[:, 2]
        if (np.diff(x) < 0).any():
            raise TaximeterError("extra presses are cumulative and must not decrease")
        if x[0]:
            meter.extra(int(x[0]))
        cuts = (np.flatnonzero(np.diff(x)) + 1).tolist()
    else:
        x, cuts = None, []
    start = 1
    for cut in [*cuts, len(arr)]:
        meter.samples_array(arr[start:cut + (1 if cut < len(arr) else 0), 0],
                            arr[start:cut + (1 if cut < len(arr) else 0), 1])
        if cut < len(arr):
            assert x is not None
            meter.extra(int(x[cut] - x[cut - 1]))
        start = cut + 1
    meter.stop(int(arr[-1, 0]), int(arr[-1, 1]))
    return meter.result()


def _unpack(s: Sample | tuple[int, ...]) -> tuple[int, int, int]:
    if isinstance(s, Sample):
        return s.t_ms, s.distance_mm, s.extras
    if len(s) == 2:
        return s[0], s[1], 0
    return s[0], s[1], s[2]


def legs_to_samples(legs: Iterable[tuple[Decimal, Decimal]], distance_unit: str = "m",
                    step_ms: int = 1000) -> list[tuple[int, int]]:
    """Constant-speed legs (distance in the file unit, seconds) -> samples every ``step_ms``.

    Used for the [[examples]] of tariff files; positions are exact rational points rounded to mm/ms.
    """
    out: list[tuple[int, int]] = [(0, 0)]
    t_ms, d_mm = 0, Fraction(0)
    for distance, duration_s in legs:
        metres = Fraction(distance) * (Fraction(METRES_PER_YARD) if distance_unit == "yd" else 1)
        total_mm = metres * 1000
        dur_ms = Fraction(duration_s) * 1000
        if dur_ms == 0:
            if total_mm:
                raise TaximeterError("a leg with distance needs a duration")
            continue
        n = max(1, int(dur_ms // step_ms))
        for i in range(1, n + 1):
            frac = Fraction(i, n)
            out.append((t_ms + round(dur_ms * frac), round(d_mm + total_mm * frac)))
        t_ms += round(dur_ms)
        d_mm += total_mm
    return out


def within_mpe(quantity: str, measured: Decimal, reference: Decimal, *, in_service: bool = False) -> bool:
    """TAX-7 maximum permissible error: is ``measured`` close enough to ``reference``?

    Distance (m): type approval the greater of 4 m and 0.2 %, in service 2 %; time (s): type approval
    the greater of 0.2 s and 0.1 %, in service 0.2 % (S3 Table 2.1).
    """
    error = abs(measured - reference)
    if quantity == "distance":
        limit = reference * Decimal("0.02") if in_service else max(Decimal(4), reference * Decimal("0.002"))
    elif quantity == "time":
        limit = reference * Decimal("0.002") if in_service else max(Decimal("0.2"), reference * Decimal("0.001"))
    else:
        raise TaximeterError(f"quantity must be 'distance' or 'time', got {quantity!r}")
    return error <= limit
