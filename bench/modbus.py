"""Benchmark: decode Modbus analyzer reads, and read the simulated analyzer over a real socket.

Decoding: the whole SDM630 map (73 registers, float32) and EM21 map (39 registers, scaled INT32 LSW first)
from held words, many times. Wire: full-map reads of the simulated SDM630 over Modbus TCP and RTU over TCP
on 127.0.0.1 (pymodbus client and server in one process). Prints ONE JSON line.

    .venv/bin/python bench/modbus.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer  # noqa: E402
from osos.field.modbus_client import open_client, read_map  # noqa: E402
from osos.protocols import modbus as M  # noqa: E402

T = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def decode_rate(name: str, rounds: int) -> dict[str, float]:
    regmap = M.load_map(name)
    words = SimulatedAnalyzer(regmap, seed=1).words_at(T)
    start = time.perf_counter()
    for _ in range(rounds):
        M.decode_words(regmap, words)
    elapsed = time.perf_counter() - start
    return {"maps_per_s": round(rounds / elapsed, 1), "values_per_s": round(rounds * len(regmap.registers) / elapsed)}


def wire_rate(framer: str, reads: int) -> dict[str, float]:
    regmap = M.load_map("eastron-sdm630")
    sim = SimulatedAnalyzer(regmap, seed=1, clock=lambda: T)
    with AnalyzerServer([sim], framer=framer) as server:
        client = open_client(f"{'rtu+tcp' if framer == 'rtu' else 'tcp'}://127.0.0.1:{server.port}")
        start = time.perf_counter()
        for _ in range(reads):
            read_map(client, regmap, unit=1)
        elapsed = time.perf_counter() - start
        client.close()
    return {"full_reads_per_s": round(reads / elapsed, 1), "requests_per_read": len(M.plan_reads(regmap)),
            "ms_per_read": round(1000 * elapsed / reads, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {
        "bench": "modbus",
        "decode_sdm630": decode_rate("eastron-sdm630", args.rounds),
        "decode_em21": decode_rate("carlo-gavazzi-em21", args.rounds),
        "wire_modbus_tcp": wire_rate("socket", args.reads),
        "wire_rtu_over_tcp": wire_rate("rtu", args.reads),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
