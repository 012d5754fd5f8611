"""The physics of a simulated electricity meter: registers, tariff bands, demand, load profile and events.

Pure and deterministic: no I/O, no clock. Time only moves when the caller passes a later ``datetime`` to
:meth:`MeterModel.advance`, so a seed plus a sequence of times always gives the same registers (the demo
speeds this up by passing an accelerated clock).

Energy is exact: registers count watt-seconds in ``int`` (3600 W·s = 1 Wh, the register resolution), never
float. Covers AMR-2 (OBIS registers), AMR-3 (kinds), AMR-4 (T1 06-17, T2 17-22, T3 22-06, T4 on the fixed-date
official holidays; monthly demand reset), AMR-5 (load profile periods and retention, an entry at a power
cut), AMR-6 (events).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

WS_PER_WH = 3600
KINDS = ("single-phase", "three-phase", "kombi")
PHASES = ("L1", "L2", "L3")
SHORT_OUTAGE_LIMIT_S = 180  # AMR-6: an outage of 180 s or more is a long one
EVENT_RECORDS = 99  # AMR-6: 99 records per list, oldest dropped first
TERMINAL_COVER_ARM_WS = 1 * 1000 * WS_PER_WH  # AMR-6: terminal cover armed once total import exceeds 1 kWh
DEMAND_PERIOD_MIN = 15

#: AMR-4 default bands in local time: (first hour, end hour exclusive, tariff index)
DEFAULT_BANDS: tuple[tuple[int, int, int], ...] = ((6, 17, 1), (17, 22, 2), (22, 24, 3), (0, 6, 3))
#: AMR-4 official holidays with fixed dates (month, day): the whole day counts on T4. Religious holidays move
#: with the lunar calendar; a caller that wants them passes its own set.
FIXED_HOLIDAYS: frozenset[tuple[int, int]] = frozenset({(1, 1), (4, 23), (5, 1), (5, 19), (7, 15), (8, 30), (10, 29)})


class MeterModelError(ValueError):
    """A request the simulated meter refuses (time going backwards, unknown kind ...)."""


def tariff_for(
    local: datetime,
    bands: tuple[tuple[int, int, int], ...] = DEFAULT_BANDS,
    holidays: frozenset[tuple[int, int]] = frozenset(),
) -> int:
    """Tariff index (1..4) active at a local wall-clock time."""
    if (local.month, local.day) in holidays:
        return 4
    for start, end, index in bands:
        if start <= local.hour < end:
            return index
    raise MeterModelError(f"no tariff band covers hour {local.hour}")


def _unit_hash(seed: int, *parts: object) -> int:
    """A stable 0..999 value for (seed, parts): the noise source, same on every platform and run."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 1000


@dataclass
class SeededLoad:
    """Household-like demand: base load, an evening peak, seeded noise; power is constant per 15 minutes.

    ``solar_w`` > 0 makes the meter bidirectional: around noon generation exceeds demand and the net power
    goes negative (export, 2.8.x).
    """

    seed: int
    base_w: int = 300
    peak_w: int = 1800
    solar_w: int = 0

    def power_w(self, slot_start_local: datetime) -> int:
        hour = slot_start_local.hour
        shape = 1000 if 17 <= hour < 22 else (500 if 6 <= hour < 17 else 150)
        noise = _unit_hash(self.seed, slot_start_local.isoformat())
        power = self.base_w + (self.peak_w - self.base_w) * shape * (500 + noise) // 1_000_000
        if self.solar_w and 10 <= hour < 15:
            power -= self.solar_w
        return power


@dataclass(frozen=True)
class ConstantLoad:
    """A fixed net power, for tests that check the registers against hand arithmetic."""

    watts: int

    def power_w(self, slot_start_local: datetime) -> int:
        return self.watts


@dataclass
class Outage:
    phase: str  # "L1".."L3" or "3P" (all phases at once)
    start: datetime
    end: datetime | None = None

    def duration_s(self, now: datetime) -> int:
        return int(((self.end or now) - self.start).total_seconds())


@dataclass
class LoadProfileEntry:
    """One load-profile record: the end of the period (UTC) and the energy of the period in Wh."""

    end: datetime
    import_wh: int
    export_wh: int = 0
    reactive_varh: dict[str, int] = field(default_factory=dict)
    power_cut: bool = False  # AMR-5: written at the moment of a cut, not at a period boundary


class MeterModel:
    """One meter's registers and event memory. All ``datetime`` arguments are timezone-aware UTC."""

    def __init__(
        self,
        serial: str,
        kind: str,
        start: datetime,
        *,
        load: SeededLoad | ConstantLoad | None = None,
        seed: int = 0,
        utc_offset_min: int = 180,
        profile_period_min: int | None = None,
        initial_wh: int = 0,
        reactive_per_mille: int = 300,
        bands: tuple[tuple[int, int, int], ...] = DEFAULT_BANDS,
        holidays: frozenset[tuple[int, int]] = FIXED_HOLIDAYS,
        rtc_ok: bool = True,
    ) -> None:
        if kind not in KINDS:
            raise MeterModelError(f"unknown meter kind {kind!r}; known: {', '.join(KINDS)}")
        if start.tzinfo is None:
            raise MeterModelError("start time must be timezone-aware")
        self.serial = serial
        self.kind = kind
        self.tz = timezone(timedelta(minutes=utc_offset_min))
        self.load = load or SeededLoad(seed)
        self.bands = bands
        self.holidays = holidays
        self.rtc_ok = rtc_ok  # AMR-4: with a failed clock every unit goes to T1
        self.reactive_per_mille = reactive_per_mille
        # AMR-5: 60 min for mono/tri; kombi 15 min (30/60 allowed); kept 180 / 360 days
        self.profile_period_min = profile_period_min or (15 if kind == "kombi" else 60)
        if 60 % self.profile_period_min:
            raise MeterModelError("load profile period must divide 60 minutes")
        retention_days = 360 if kind == "kombi" else 180
        self.profile: deque[LoadProfileEntry] = deque(
            maxlen=retention_days * 24 * 60 // self.profile_period_min
        )
        self.now = start
        # registers in W·s; index 0 unused so that [1..4] reads as T1..T4
        self.import_ws = [0, initial_wh * WS_PER_WH, 0, 0, 0]
        self.export_ws = [0, 0, 0, 0, 0]
        self.reactive_ws = {"5.8.0": 0, "6.8.0": 0, "7.8.0": 0, "8.8.0": 0}
        self.max_demand_w = 0
        self.max_demand_at: datetime | None = None
        self.previous_max_demand: deque[tuple[str, int, datetime | None]] = deque(maxlen=12)
        self._demand_ws = 0
        self._period_import_ws = 0
        self._period_export_ws = 0
        self._period_reactive_ws = {k: 0 for k in self.reactive_ws}
        self.phases_down: set[str] = set()
        self.outages: dict[tuple[str, str], deque[Outage]] = {
            (phase, length): deque(maxlen=EVENT_RECORDS)
            for phase in (*self.phase_names, "3P")
            for length in ("short", "long")
        }
        self._open_outages: dict[str, Outage] = {}
        self.outage_count: dict[str, int] = {p: 0 for p in (*self.phase_names, "3P")}
        self.top_cover_first_open: datetime | None = None
        self.top_cover_open = False
        self.terminal_cover_open = False
        self.terminal_cover_months: dict[str, tuple[datetime, int]] = {}  # "YYYY-MM" -> (first, count)
        self.clock_offset = timedelta(0)  # set by W1 0.9.1 / 0.9.2 (time sync)

    # ------------------------------------------------------------------ time and energy
    @property
    def phase_names(self) -> tuple[str, ...]:
        return ("L1",) if self.kind == "single-phase" else PHASES

    def local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz)

    def meter_time(self) -> datetime:
        """The meter's own clock (local), which a W1 time set moves relative to true time."""
        return self.local(self.now + self.clock_offset)

    def set_meter_time(self, local_wall: datetime) -> None:
        """W1 0.9.1/0.9.2: set the clock. ``local_wall`` is naive local time."""
        target = local_wall.replace(tzinfo=self.tz)
        self.clock_offset = target - self.local(self.now)

    def advance(self, to: datetime) -> None:
        """Integrate consumption up to ``to``, splitting at 15-minute slots (tariff bands, demand periods and
        load-profile periods all end on slot boundaries)."""
        if to.tzinfo is None:
            raise MeterModelError("time must be timezone-aware")
        if to < self.now:
            raise MeterModelError(f"time went backwards: {to.isoformat()} < {self.now.isoformat()}")
        while self.now < to:
            slot_end = self._next_boundary(self.now, DEMAND_PERIOD_MIN)
            step_end = min(slot_end, to)
            seconds = int((step_end - self.now).total_seconds())
            if seconds > 0:
                self._integrate(self.now, seconds)
            self.now = step_end
            self._check_outage_lengths()
            if step_end == slot_end:
                self._close_slot(slot_end)

    @staticmethod
    def _next_boundary(t: datetime, minutes: int) -> datetime:
        base = t.replace(second=0, microsecond=0)
        base -= timedelta(minutes=base.minute % minutes)
        return base + timedelta(minutes=minutes)

    def _live_fraction(self) -> tuple[int, int]:
        phases = self.phase_names
        live = sum(1 for p in phases if p not in self.phases_down)
        return live, len(phases)

    def _integrate(self, start: datetime, seconds: int) -> None:
        local = self.local(start)
        slot = local.replace(minute=local.minute - local.minute % DEMAND_PERIOD_MIN, second=0, microsecond=0)
        live, total = self._live_fraction()
        power = self.load.power_w(slot) * live // total
        energy = power * seconds
        tariff = tariff_for(local, self.bands, self.holidays) if self.rtc_ok else 1
        if energy >= 0:
            self.import_ws[tariff] += energy
            self._demand_ws += energy
            self._period_import_ws += energy
        else:
            self.export_ws[tariff] += -energy
            self._period_export_ws += -energy
        if self.kind == "kombi" and energy:
            reactive = abs(energy) * self.reactive_per_mille // 1000
            quadrant = "5.8.0" if energy > 0 else "7.8.0"
            self.reactive_ws[quadrant] += reactive
            self._period_reactive_ws[quadrant] += reactive

    def _close_slot(self, slot_end: datetime) -> None:
        demand_w = self._demand_ws // (DEMAND_PERIOD_MIN * 60)
        self._demand_ws = 0
        local_end = self.local(slot_end)
        if local_end.day == 1 and local_end.hour == 0 and local_end.minute == 0:
            # AMR-4: automatic demand reset at the month change (the closing period belongs to the old month)
            self._update_demand(demand_w, slot_end)
            month = (local_end - timedelta(days=1)).strftime("%Y-%m")
            self.previous_max_demand.append((month, self.max_demand_w, self.max_demand_at))
            self.max_demand_w, self.max_demand_at = 0, None
        else:
            self._update_demand(demand_w, slot_end)
        if local_end.minute % self.profile_period_min == 0:
            self._write_profile(slot_end, power_cut=False)

    def _update_demand(self, demand_w: int, at: datetime) -> None:
        if demand_w > self.max_demand_w:
            self.max_demand_w, self.max_demand_at = demand_w, at

    def _write_profile(self, at: datetime, *, power_cut: bool) -> None:
        self.profile.append(
            LoadProfileEntry(
                end=at,
                import_wh=self._period_import_ws // WS_PER_WH,
                export_wh=self._period_export_ws // WS_PER_WH,
                reactive_varh={k: v // WS_PER_WH for k, v in self._period_reactive_ws.items()}
                if self.kind == "kombi"
                else {},
                power_cut=power_cut,
            )
        )
        self._period_import_ws = self._period_export_ws = 0
        self._period_reactive_ws = {k: 0 for k in self.reactive_ws}

    # ------------------------------------------------------------------ registers
    def import_wh(self, tariff: int = 0) -> int:
        if tariff == 0:
            return sum(self.import_ws[1:]) // WS_PER_WH
        return self.import_ws[tariff] // WS_PER_WH

    def export_wh(self, tariff: int = 0) -> int:
        if tariff == 0:
            return sum(self.export_ws[1:]) // WS_PER_WH
        return self.export_ws[tariff] // WS_PER_WH

    def reactive_varh(self, obis: str) -> int:
        return self.reactive_ws[obis] // WS_PER_WH

    def ff_code(self) -> int:
        """F.F.0 status bits as the (unverified, data-kept) table in REQUIREMENTS reads them."""
        bits = 0
        if not self.rtc_ok:
            bits |= 1 << 0
        if self.terminal_cover_open:
            bits |= 1 << 5
        if self.top_cover_open:
            bits |= 1 << 6
        if self.top_cover_first_open is not None:
            bits |= 1 << 7
        for i, phase in enumerate(PHASES):
            if phase in self.phases_down and phase in self.phase_names:
                bits |= 1 << (20 + i)
        if self.phase_names == PHASES and self.phases_down >= set(PHASES):
            bits |= 1 << 23
        return bits

    # ------------------------------------------------------------------ events (AMR-6)
    def open_top_cover(self, at: datetime) -> None:
        self.advance(at)
        self.top_cover_open = True
        if self.top_cover_first_open is None:  # first opening is never overwritten
            self.top_cover_first_open = at

    def close_top_cover(self, at: datetime) -> None:
        self.advance(at)
        self.top_cover_open = False

    def open_terminal_cover(self, at: datetime) -> bool:
        """Returns whether the opening was recorded (only once total import exceeds 1 kWh)."""
        self.advance(at)
        self.terminal_cover_open = True
        if sum(self.import_ws[1:]) <= TERMINAL_COVER_ARM_WS:
            return False
        month = self.local(at).strftime("%Y-%m")
        first, count = self.terminal_cover_months.get(month, (at, 0))
        self.terminal_cover_months[month] = (first, count + 1)
        while len(self.terminal_cover_months) > 12:
            del self.terminal_cover_months[next(iter(self.terminal_cover_months))]
        return True

    def close_terminal_cover(self, at: datetime) -> None:
        self.advance(at)
        self.terminal_cover_open = False

    def power_off(self, at: datetime, phases: tuple[str, ...] | None = None) -> None:
        """Phases lose voltage at ``at`` (all of the meter's phases when None)."""
        self.advance(at)
        targets = tuple(phases or self.phase_names)
        for phase in targets:
            if phase not in self.phase_names:
                raise MeterModelError(f"{self.kind} meter has no phase {phase}")
        was_all_down = self._all_down()
        new = [p for p in targets if p not in self.phases_down]
        if not new:
            return
        for phase in new:
            self.phases_down.add(phase)
            self._start_outage(phase, at)
        if self._all_down() and not was_all_down:
            if len(self.phase_names) > 1:
                self._start_outage("3P", at)
            self._write_profile(at, power_cut=True)  # AMR-5: entry at the moment of the cut

    def power_on(self, at: datetime, phases: tuple[str, ...] | None = None) -> None:
        self.advance(at)
        targets = tuple(phases or self.phase_names)
        if self._all_down() and "3P" in self._open_outages:
            self._end_outage("3P", at)
        for phase in targets:
            if phase in self.phases_down:
                self.phases_down.discard(phase)
                self._end_outage(phase, at)

    def _all_down(self) -> bool:
        return self.phases_down >= set(self.phase_names)

    def _start_outage(self, phase: str, at: datetime) -> None:
        outage = Outage(phase, at)
        self._open_outages[phase] = outage
        self.outages[(phase, "short")].append(outage)
        self.outage_count[phase] += 1

    def _end_outage(self, phase: str, at: datetime) -> None:
        outage = self._open_outages.pop(phase, None)
        if outage is None:
            return
        outage.end = at
        self._promote_if_long(outage, at)

    def _check_outage_lengths(self) -> None:
        for outage in self._open_outages.values():
            self._promote_if_long(outage, self.now)

    def _promote_if_long(self, outage: Outage, now: datetime) -> None:
        """AMR-6: a short record becomes a long one once the outage passes 180 s."""
        if outage.duration_s(now) < SHORT_OUTAGE_LIMIT_S:
            return
        short = self.outages[(outage.phase, "short")]
        if outage in short:
            short.remove(outage)
            self.outages[(outage.phase, "long")].append(outage)

    # ------------------------------------------------------------------ queries
    def profile_between(self, start: datetime, end: datetime) -> list[LoadProfileEntry]:
        """Load-profile entries whose period end lies in [start, end] (AMR-5: readable by range)."""
        return [e for e in self.profile if start <= e.end <= end]

