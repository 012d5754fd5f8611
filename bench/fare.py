"""Benchmark: replay a 1-hour taxi trip sampled at 10 Hz (36,000 samples) through the fare engine.

The trip is generated deterministically (seeded): urban driving with stops at lights, slow traffic
below the cross-over speed and faster stretches, so both distance and time units are charged. It
is replayed (a) as a numpy array (closed-form stretches, the fast path) with and without the
timeline, and (b) sample by sample (the scalar engine) for reference; (a) and (b) must give the same
fare. Prints ONE JSON line with median milliseconds of N runs (goal: < 5 ms for (a)).

    .venv/bin/python bench/fare.py --json
    .venv/bin/python bench/fare.py --tariff london-2013 --runs 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from osos.tariff.fare import replay  # noqa: E402
from osos.tariff.library import load_taxi_tariff  # noqa: E402


def make_trip(seconds: int = 3600, hz: int = 10, seed: int = 7) -> np.ndarray:
    """(n, 2) int64 array of t_ms and cumulative distance mm."""
    rng = np.random.default_rng(seed)
    n = seconds * hz
    speed = np.empty(n)  # m/s
    i = 0
    while i < n:  # phases: stop 10-60 s, crawl 2-3 m/s 20-120 s, cruise 8-17 m/s 30-180 s
        kind = rng.integers(0, 3)
        length = int(rng.integers(*((10, 60), (20, 120), (30, 180))[kind]) * hz)
        level = (0.0, rng.uniform(2, 3), rng.uniform(8, 17))[kind]
        speed[i:i + length] = level
        i += length
    step_mm = np.round(speed * 1000 / hz).astype(np.int64)
    dist = np.concatenate(([0], np.cumsum(step_mm[1:])))
    t = np.arange(n, dtype=np.int64) * (1000 // hz)
    return np.stack([t, dist], axis=1)


def timed(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    out = None
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tariff", default="ankara-2026")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--start", default="2026-03-04T10:00")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ts = load_taxi_tariff(args.tariff)
    start = datetime.fromisoformat(args.start)
    trip = make_trip()
    as_list = [(int(a), int(b)) for a, b in trip]
    fast_ms, fast = timed(lambda: replay(ts, trip, start, record_timeline=False), args.runs)
    tl_ms, with_tl = timed(lambda: replay(ts, trip, start), args.runs)
    scalar_ms, scalar = timed(lambda: replay(ts, as_list, start, record_timeline=False), max(3, args.runs // 10))
    assert fast.fare == with_tl.fare == scalar.fare, (fast, scalar)  # type: ignore[attr-defined]
    result = {
        "bench": "fare_replay",
        "tariff": args.tariff,
        "samples": len(trip),
        "sample_rate_hz": 10,
        "trip_km": round(int(trip[-1, 1]) / 1e6, 3),
        "fare": str(fast.fare),  # type: ignore[attr-defined]
        "currency": ts.currency,
        "distance_units": fast.distance_units,  # type: ignore[attr-defined]
        "time_units": fast.time_units,  # type: ignore[attr-defined]
        "runs": args.runs,
        "replay_ms_median": round(fast_ms, 3),
        "replay_with_timeline_ms_median": round(tl_ms, 3),
        "scalar_replay_ms_median": round(scalar_ms, 3),
        "goal_ms": 5,
        "goal_met": fast_ms < 5,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32} {v}")


if __name__ == "__main__":
    main()
