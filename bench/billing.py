"""Benchmark: ToU-bill one year of 15-minute load profile (35,040 values) for many meters.

Data are generated deterministically in chunks (seeded per chunk, so any worker count gives the same
bills) to bound memory. The vectorised path (osos.tariff.energy.band_index + grid_band_totals +
integer amounts) is compared with a naive per-interval Python loop (band looked up per interval
start with the tariff calendar, Decimal amounts) on a sample of meters: the two must agree to the
kuruş, and their speed ratio is reported. Prints ONE JSON line.

    .venv/bin/python bench/billing.py --json                 # 100,000 meters, 2 workers
    .venv/bin/python bench/billing.py --meters 2000 --json   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from osos.tariff import library  # noqa: E402
from osos.tariff.energy import (  # noqa: E402
    PRICE_SCALE,
    amounts_exact,
    band_index,
    grid_band_totals,
    round_minor,
    year_of_15_minute_ends,
)

SLOTS = 96
_STATE: dict = {}


def _setup(tariff_name: str, year: int) -> None:
    tariff = library.load_tariff(tariff_name)
    ends = year_of_15_minute_ends(year)
    starts = ends - np.timedelta64(15, "m")
    _STATE.update(
        tariff=tariff,
        ends=ends,
        idx=band_index(tariff, starts),
        prices=np.array(list(tariff.bands.values()), dtype=np.int64),
    )


def generate(chunk_no: int, meters: int, n: int, seed: int) -> np.ndarray:
    """Wh per quarter hour, 0..255 (mean ~0.5 kW, ~4,500 kWh a year: a large household), reproducible
    per chunk. uint8 keeps generation (not the billing under test) from dominating the run."""
    rng = np.random.default_rng([seed, chunk_no])
    return rng.integers(0, 256, size=(meters, n), dtype=np.uint8)


def bill_chunk(args: tuple[int, int, int]) -> tuple[int, int, float, float]:
    """-> (meters, sum of rounded totals in kuruş, generate seconds, bill seconds)."""
    chunk_no, meters, seed = args
    t0 = time.perf_counter()
    data = generate(chunk_no, meters, _STATE["ends"].size, seed)
    t1 = time.perf_counter()
    totals = grid_band_totals(_STATE["idx"], data, SLOTS, len(_STATE["prices"]))
    minor = round_minor(amounts_exact(totals, _STATE["prices"]).sum(axis=1), _STATE["tariff"].decimals)
    t2 = time.perf_counter()
    return meters, int(minor.sum()), t1 - t0, t2 - t1


def vector_bills(data: np.ndarray) -> list[Decimal]:
    totals = grid_band_totals(_STATE["idx"], data, SLOTS, len(_STATE["prices"]))
    minor = round_minor(amounts_exact(totals, _STATE["prices"]).sum(axis=1), _STATE["tariff"].decimals)
    return [Decimal(int(x)).scaleb(-_STATE["tariff"].decimals) for x in minor]


def naive_bills(data: np.ndarray) -> list[Decimal]:
    """The obvious loop: for every interval, find its band from its start time, add Wh x price."""
    tariff = _STATE["tariff"]
    prices = {b: Decimal(p) / PRICE_SCALE for b, p in tariff.bands.items()}
    first_end = _STATE["ends"][0].astype(datetime)
    out = []
    for row in data:
        amount = Decimal(0)
        for i, wh in enumerate(row.tolist()):
            start = first_end + timedelta(minutes=15 * i) - timedelta(minutes=15)
            amount += prices[tariff.band_at(start)] * wh / 1000
        out.append(amount.quantize(Decimal(1).scaleb(-tariff.decimals), rounding=ROUND_HALF_UP))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=500, help="meters per chunk (memory: chunk x 35,040 bytes)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--sample", type=int, default=3, help="meters billed by the naive loop too")
    ap.add_argument("--tariff", default="tr-three-time")
    ap.add_argument("--year", type=int, default=2025)
    ap.add_argument("--seed", type=int, default=20261121)
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default output anyway)")
    args = ap.parse_args()

    t_setup = time.perf_counter()
    _setup(args.tariff, args.year)
    setup_s = time.perf_counter() - t_setup
    jobs = []
    left, chunk_no = args.meters, 0
    while left > 0:
        m = min(args.chunk, left)
        jobs.append((chunk_no, m, args.seed))
        left -= m
        chunk_no += 1

    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, initializer=_setup, initargs=(args.tariff, args.year)) as pool:
            results = list(pool.map(bill_chunk, jobs))
    else:
        results = [bill_chunk(j) for j in jobs]
    seconds = time.perf_counter() - t0
    billed = sum(r[0] for r in results)
    checksum = sum(r[1] for r in results)
    gen_s = sum(r[2] for r in results)
    bill_s = sum(r[3] for r in results)

    # the naive loop on a sample (the first meters of chunk 0), and the vectorised path on the same rows
    sample = generate(0, min(args.chunk, args.meters), _STATE["ends"].size, args.seed)[: args.sample]
    tn = time.perf_counter()
    naive = naive_bills(sample)
    naive_s = time.perf_counter() - tn
    tv = time.perf_counter()
    vector = vector_bills(sample)
    vector_sample_s = time.perf_counter() - tv
    naive_per_meter = naive_s / len(sample)
    vector_per_meter = bill_s / billed
    print(json.dumps({
        "bench": "billing",
        "tariff": args.tariff,
        "meters": billed,
        "intervals_per_meter": int(_STATE["ends"].size),
        "values": billed * int(_STATE["ends"].size),
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "meters_per_s": round(billed / seconds, 1),
        "generate_cpu_s": round(gen_s, 3),
        "bill_cpu_s": round(bill_s, 3),
        "setup_s": round(setup_s, 3),
        "naive_sample_meters": len(sample),
        "naive_s_per_meter": round(naive_per_meter, 4),
        "vector_s_per_meter": round(vector_per_meter, 7),
        "speedup_vs_naive": round(naive_per_meter / vector_per_meter, 1),
        "vector_sample_s": round(vector_sample_s, 4),
        "sample_agrees": naive == vector,
        "sample_totals": [str(x) for x in vector],
        "checksum_minor_units": checksum,
        "goal_s": 60,
        "goal_met": billed >= 100_000 and seconds < 60,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }))
    if naive != vector:
        sys.exit(1)


if __name__ == "__main__":
    main()
