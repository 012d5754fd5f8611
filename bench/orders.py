"""Benchmark: create, deduplicate, prioritise and dispatch N read orders in PostgreSQL (issue 8 item 10).

Set-based where it matters: the fleet (N meters, 10 per modem) is inserted with generate_series (not timed);
orders are created per device group with one INSERT ... SELECT per chunk (osos.headend.orders.bulk_create),
asked again for a tenth of the meters (all answered by the open orders: dedup through the partial unique index),
plus 1,000 single submits through the API's path; then dispatched in batches (orders.claim_batch: priority 9
first, one order per modem at a time), each claimed order turned into its MASS message (encoded, not published:
the broker is not under test), and answered in bulk so the modem takes its next order. Memory stays flat: no step
holds more than one batch. Each count runs in its own process (peak RSS is a high-water mark); without --single
the run for N is followed by one for 100,000, and ONE JSON line carries both.

    .venv/bin/python bench/orders.py --json                       # 1,000,000 and 100,000
    .venv/bin/python bench/orders.py --json --count 20000         # quick
    .venv/bin/python bench/orders.py --json --pg postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa  # noqa: E402

from osos.headend import orders  # noqa: E402
from osos.protocols import mass  # noqa: E402
from osos.store.db import make_engine, migrate, utcnow  # noqa: E402
from osos.store.schema import meters, order_attempts  # noqa: E402
from osos.store.schema import orders as orders_table  # noqa: E402

METERS_PER_MODEM = 10
CREATE_CHUNK = 100_000
SINGLE_SUBMITS = 1_000


def _admin_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url


def _fleet(engine: sa.Engine, count: int) -> None:
    modems_n = (count + METERS_PER_MODEM - 1) // METERS_PER_MODEM
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO modems (id, flag, serial, topic_style, status, transport, registered_at, last_seen_at) "
            "SELECT g, 'OSS', 'B' || g, 'device', 'active', 'tls', now(), now() FROM generate_series(1, :n) g"),
            {"n": modems_n})
        conn.execute(sa.text(
            "INSERT INTO meters (id, flag, serial, modem_id, first_seen_at) "
            "SELECT g, 'MKL', 'M' || g, (g - 1) / :per + 1, now() FROM generate_series(1, :n) g"),
            {"n": count, "per": METERS_PER_MODEM})
        conn.execute(sa.text("ANALYZE modems; ANALYZE meters"))


def run(url: str, count: int, batch: int) -> dict:
    name = f"osos_bench_orders_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(_admin_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = make_engine(url.rsplit("/", 1)[0] + "/" + name)
    try:
        migrate(engine)
        _fleet(engine, count)
        phases: dict[str, float] = {}
        started = time.perf_counter()

        t = time.perf_counter()
        created = 0
        for low in range(1, count + 1, CREATE_CHUNK):  # one device group per chunk
            group = sa.select(meters.c.id).where(meters.c.id.between(low, low + CREATE_CHUNK - 1))
            with engine.begin() as conn:
                created += orders.bulk_create(conn, "read", group, priority=(meters.c.id * 7) % 10,
                                              created_by="bench")
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE orders"))
        phases["create"] = time.perf_counter() - t

        t = time.perf_counter()
        again = sa.select(meters.c.id).where(meters.c.id <= count // 10)
        with engine.begin() as conn:
            duplicates_created = orders.bulk_create(conn, "read", again, created_by="bench")
        answered_by_existing = 0
        with engine.begin() as conn:
            for meter_id in range(1, min(SINGLE_SUBMITS, count) + 1):
                answered_by_existing += not orders.submit_order(conn, "read", meter_id=meter_id,
                                                                created_by="bench")[1]
        phases["dedup"] = time.perf_counter() - t

        t = time.perf_counter()
        dispatched = 0
        last_priority = 9
        in_order = True
        while True:
            with engine.begin() as conn:
                claimed = orders.claim_batch(conn, limit=batch, timeout_s=60)
            if not claimed:
                break
            for order in claimed:  # what the dispatcher publishes for each
                if order["priority"] > last_priority:
                    in_order = False
                last_priority = order["priority"]
                device = mass.Device(order["modem_flag"], order["modem_serial"])
                request = orders.directive_request(order["kind"], order["request"] or {})
                request["meter"] = {"flag": order["meter_flag"], "serialNumber": order["meter_serial"]}
                mass.encode(mass.make("read", device, reference_id=order["reference_id"], request=request))
            ids = [o["id"] for o in claimed]
            now = utcnow()
            with engine.begin() as conn:  # the answers, in bulk: the modems are free for their next order
                conn.execute(sa.update(orders_table).where(orders_table.c.id.in_(ids),
                                                           orders_table.c.status == "running")
                             .values(status="succeeded", finished_at=now, updated_at=now))
                conn.execute(sa.update(order_attempts).where(order_attempts.c.order_id.in_(ids))
                             .values(answered_at=now, outcome="succeeded"))
            dispatched += len(claimed)
            del claimed, ids
        phases["dispatch"] = time.perf_counter() - t
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(orders_table)).scalar_one()
        return {
            "count": count,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "phases": {k: round(v, 2) for k, v in phases.items()},
            "created": created,
            "orders_in_table": total,
            "duplicates_created": duplicates_created,
            "single_submits_answered_by_existing": answered_by_existing,
            "dispatched": dispatched,
            "priority_order_ok": in_order,
            "batch": batch,
        }
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line (the only output format)")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server URL; the bench makes and drops its own database there")
    parser.add_argument("--batch", type=int, default=20_000, help="orders per dispatcher claim")
    parser.add_argument("--single", action="store_true", help="run this count only, in this process")
    args = parser.parse_args()
    if args.single:
        print(json.dumps(run(args.pg, args.count, args.batch)))
        return
    results = []
    for count in dict.fromkeys([args.count, 100_000]):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--single", "--count", str(count),
                              "--pg", args.pg, "--batch", str(args.batch)], check=True, capture_output=True,
                             text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = results[0]
    if len(results) > 1:
        first["at_100k"] = {k: results[1][k] for k in ("count", "seconds", "peak_rss_mb", "phases")}
    print(json.dumps(first))


if __name__ == "__main__":
    main()
