"""Benchmark: the head-end's store path (interpret + one transaction per batch), without the broker.

A baseline for the scale work (goal: >= 20,000 meter packets/s end to end on 2 cores into PostgreSQL): it feeds
IEC 62056-21 short reads (8 registers each, BCC-framed) straight into ``Ingestor.process`` in batches and prints
ONE JSON line with packets/s and registers/s, and the ratio against batches of one in the same run.

    .venv/bin/python bench/ingest.py --json                          # SQLite in a temp dir
    .venv/bin/python bench/ingest.py --pg postgresql://postgres@127.0.0.1/postgres --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from functools import reduce

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqlalchemy import create_engine  # noqa: E402

from osos.headend.ingest import Incoming, Ingestor  # noqa: E402
from osos.headend.inventory import ensure_modem  # noqa: E402
from osos.protocols import mass  # noqa: E402
from osos.store.db import make_engine, migrate, utcnow  # noqa: E402

TOPICS = mass.Topics("mass")


def packet(i: int) -> Incoming:
    serial = f"{10_000_000 + i % 5000}"
    lines = [f"0.0.0({serial})", "0.9.1(10:00:00)", "0.9.2(26-11-21)"] + [
        f"1.8.{t}({i + t:06d}.{i % 1000:03d}*kWh)" for t in range(5)
    ]
    body = "".join(line + "\r\n" for line in lines) + "!\r\n\x03"
    raw = "\x02" + body + chr(reduce(lambda a, b: a ^ b, body.encode("latin-1"), 0))
    gw = mass.Device("OSS", f"GW{i % 500:05d}")
    msg = mass.make(
        "read",
        gw,
        response={
            "meter": {"flag": "MKL", "serialNumber": serial},
            "packetClass": "shortRead",
            "data": {"id": "/MKL5X", "rawData": raw},
        },
    )
    return Incoming(TOPICS.uplink(gw), mass.encode(msg))


def run(url: str, n: int, batch: int) -> float:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:  # ingest refuses unknown devices (issue 7): provision the 500 gateways
        for g in range(min(n, 500)):
            ensure_modem(conn, "OSS", f"GW{g:05d}", by="bench", now=utcnow())
    ingestor = Ingestor(engine, TOPICS)
    items = [packet(i) for i in range(n)]
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        outs = ingestor.process(items[k : k + batch])
        assert all(o.status == "stored" for o in outs), outs[0]
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--pg", help="PostgreSQL admin URL: a scratch database is created and dropped")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default output anyway)")
    args = ap.parse_args()

    def fresh_url() -> tuple[str, object]:
        if args.pg:
            name = f"osos_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(
                args.pg.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            return args.pg.rsplit("/", 1)[0] + "/" + name, (admin, name)
        d = tempfile.mkdtemp()
        return f"sqlite:///{d}/bench.db", None

    def drop(handle: object) -> None:
        if handle:
            admin, name = handle  # type: ignore[misc]
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url, h = fresh_url()
    batched = run(url, args.packets, args.batch)
    drop(h)
    single_n = max(200, args.packets // 10)
    url, h = fresh_url()
    single = run(url, single_n, 1)
    drop(h)
    pps = args.packets / batched
    print(
        json.dumps(
            {
                "bench": "ingest_store_path",
                "store": "postgresql" if args.pg else "sqlite",
                "packets": args.packets,
                "batch": args.batch,
                "registers_per_packet": 8,
                "seconds": round(batched, 3),
                "packets_per_s": round(pps, 1),
                "registers_per_s": round(pps * 8, 1),
                "single_packets_per_s": round(single_n / single, 1),
                "speedup_vs_batch_of_one": round(pps / (single_n / single), 2),
                "goal_packets_per_s_end_to_end": 20000,
            }
        )
    )


if __name__ == "__main__":
    main()
