"""Energy of the simulated DLMS meter as a function of its time and of the tariff calendars it ran
(AMR-2, AMR-4): registers T1..T4 and the total, exact integers in register units."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from osos.field.meters.dlms_meter import MeterProfile


class EnergyModel:
    """Energy as a function of meter time and of the tariff calendars the meter ran (AMR-2, AMR-4).

    Each hour of the day has a consumption (Wh, from the data file) that accrues linearly; the
    tariff register it goes to is chosen by the activity calendar in force (its day profile, week,
    season and special days, evaluated by ``osos.tariff.dlms_calendar``), minute by minute. Script
    selectors 1..4 are T1..T4; any other selector counts as T1. Calendar changes take effect at the
    meter time they happen. Registers and load profile agree by construction (1.8.0 = T1+..+T4)."""

    def __init__(self, profile: MeterProfile, epoch: dt.datetime, calendar: Any) -> None:
        self.p = profile
        self.epoch = epoch  # local midnight where the history starts
        self.per_wh = 10 ** (-profile.scaler)  # register units per Wh (scaler -1 -> 10)
        if self.per_wh < 1:
            raise ValueError("the simulator supports scalers <= 0 only")
        self.history: list[tuple[dt.datetime, Any]] = [(epoch, calendar)]
        self._days: dict[dt.date, list[list[int]]] = {}  # day -> per hour [_, T1..T4]
        self._prefix: list[list[int]] = [[0] * 5]  # cumulative [_, T1..T4] at the start of day i

    def change_calendar(self, when: dt.datetime, calendar: Any) -> None:
        """From ``when`` (meter local time) on, ``calendar`` decides the tariff."""
        when = max(when, self.epoch)
        self.history = sorted([h for h in self.history if h[0] != when] + [(when, calendar)], key=lambda h: h[0])
        first = when.date()
        self._days = {d: v for d, v in self._days.items() if d < first}
        self._prefix = self._prefix[: max(1, (first - self.epoch.date()).days + 1)]

    def tariff_at(self, local: dt.datetime) -> int:
        cal = self.history[0][1]
        for since, c in self.history:
            if since <= local:
                cal = c
        sel = int(cal.selector_at(local.replace(tzinfo=None)))
        return sel if 1 <= sel <= 4 else 1

    def _switches(self, day: dt.date) -> list[tuple[int, int]]:
        """(minute of day, tariff) switch points of ``day`` across the calendars in force."""
        start = dt.datetime.combine(day, dt.time(0), tzinfo=self.epoch.tzinfo)
        cal = self.history[0][1]
        later = []
        for since, c in self.history:
            if since <= start:
                cal = c
            elif since < start + dt.timedelta(days=1):
                later.append((since, c))
        points = [(m, sel) for m, sel in cal.day_switches(day)]
        for since, c in later:
            m0 = -(-int((since - start).total_seconds()) // 60)
            if m0 >= 1440:
                continue
            points = ([p for p in points if p[0] < m0] + [(m0, int(c.selector_at(since.replace(tzinfo=None))))]
                      + [p for p in c.day_switches(day) if p[0] > m0])
        return [(m, sel if 1 <= sel <= 4 else 1) for m, sel in points]

    def _hour_segments(self, points: list[tuple[int, int]], hour: int) -> list[tuple[int, int, int]]:
        """[(tariff, from second, to second)] inside one hour."""
        lo, hi = hour * 60, hour * 60 + 60
        current = points[0][1]
        cuts: list[tuple[int, int]] = []
        for m, sel in points:
            if m <= lo:
                current = sel
            elif m < hi:
                cuts.append((m, sel))
        segs = []
        a, t = 0, current
        for m, sel in cuts:
            segs.append((t, a, (m - lo) * 60))
            a, t = (m - lo) * 60, sel
        segs.append((t, a, 3600))
        return [sg for sg in segs if sg[2] > sg[1]]

    def _day(self, day: dt.date) -> list[list[int]]:
        cached = self._days.get(day)
        if cached is not None:
            return cached
        points = self._switches(day)
        hours = []
        for h in range(24):
            e = self.p.consumption_wh[h] * self.per_wh
            row = [0] * 5
            segs = self._hour_segments(points, h)
            for t, a, b in segs[:-1]:
                row[t] += e * (b - a) // 3600
            row[segs[-1][0]] += e - sum(row)  # the last segment takes the rounding rest: exact total
            hours.append(row)
        self._days[day] = hours
        return hours

    def registers(self, local: dt.datetime) -> list[int]:
        """[total, T1, T2, T3, T4] in register units at local time ``local``."""
        vals = list(self.p.initial)
        if local > self.epoch:
            local = local.astimezone(self.epoch.tzinfo)
            days = (local.date() - self.epoch.date()).days
            while len(self._prefix) <= days:
                i = len(self._prefix) - 1
                day_rows = self._day(self.epoch.date() + dt.timedelta(days=i))
                self._prefix.append([a + sum(r[k] for r in day_rows) for k, a in enumerate(self._prefix[i])])
            acc = list(self._prefix[days])
            rows = self._day(local.date())
            for h in range(local.hour):
                for k in range(1, 5):
                    acc[k] += rows[h][k]
            secs = local.minute * 60 + local.second
            if secs:
                e = self.p.consumption_wh[local.hour] * self.per_wh
                for t, a, b in self._hour_segments(self._switches(local.date()), local.hour):
                    if secs > a:
                        acc[t] += e * (min(secs, b) - a) // 3600
            for k in range(1, 5):
                vals[k] += acc[k]
        vals[0] = sum(vals[1:])
        return vals
