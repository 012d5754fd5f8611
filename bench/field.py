"""Benchmark: the field side. Prints ONE JSON line.

* ``session_readouts_per_s``: mode C readouts answered by the sans-I/O meter server in-process (no sockets);
* ``tcp_readouts_per_s``: the ``readout`` directive run by the interpreter against a simulated meter over TCP;
* ``fleet_uplink_msgs_per_s`` (with ``--broker``): a fleet of simulated gateways pushing reads through a real
  broker, counted by a subscriber over the measuring window.

    .venv/bin/python bench/field.py --json
    .venv/bin/python bench/field.py --broker 127.0.0.1:1883 --gateways 20 --seconds 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from osos.field.directives import Interpreter, standard_directives  # noqa: E402
from osos.field.links import LinkSpec  # noqa: E402
from osos.field.meters.brands import brand  # noqa: E402
from osos.field.meters.iec import IecPortSession, SimMeter  # noqa: E402
from osos.field.meters.model import MeterModel, SeededLoad  # noqa: E402
from osos.field.meters.serve import TcpMeterServer  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def meter() -> SimMeter:
    return SimMeter(MeterModel("12345678", "kombi", T0, load=SeededLoad(1)), brand("makel"))


def session_rate(seconds: float) -> float:
    m = meter()
    now = [T0]
    s = IecPortSession([m], clock=lambda: now[0])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        now[0] += timedelta(minutes=1)
        s.feed(b"/?!\r\n")
        s.feed(b"\x06060\r\n")
        n += 1
    return n / (time.perf_counter() - start)


def tcp_rate(seconds: float) -> float:
    m = meter()
    with TcpMeterServer([m], clock=lambda: T0 + timedelta(days=1)) as server:
        link = LinkSpec.parse(server.url).open()
        interp, directive = Interpreter(), standard_directives()["readout"]
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            interp.run(directive, link, {})
            n += 1
        link.close()
    return n / (time.perf_counter() - start)


def fleet_rate(broker: str, gateways: int, seconds: float) -> dict[str, float]:
    import paho.mqtt.client as mqtt

    from osos.field.fleet import Fleet

    host, port = broker.rsplit(":", 1)
    root = f"ososbench/{uuid.uuid4().hex[:8]}"
    count = [0]
    lock = threading.Lock()

    def on_message(*_: object) -> None:
        with lock:
            count[0] += 1

    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.connect(host, int(port))
    sub.subscribe(f"{root}/device/#", qos=1)
    sub.loop_start()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Fleet(host, int(port), gateways=gateways, topic_root=root, read_interval_s=0.2,
                      heartbeat_interval_s=5, data_dir=Path(tmp), seed=1, events=False).start()
        try:
            time.sleep(2)  # let them join
            with lock:
                before = count[0]
            start = time.perf_counter()
            time.sleep(seconds)
            with lock:
                after = count[0]
            elapsed = time.perf_counter() - start
        finally:
            fleet.stop()
    sub.loop_stop()
    sub.disconnect()
    meters = sum(len(u.meters) for u in fleet.units)
    return {"fleet_gateways": gateways, "fleet_meters": meters,
            "fleet_uplink_msgs_per_s": round((after - before) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--broker", default="")
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, float] = {
        "session_readouts_per_s": round(session_rate(args.seconds), 1),
        "tcp_readouts_per_s": round(tcp_rate(args.seconds), 1),
    }
    if args.broker:
        out.update(fleet_rate(args.broker, args.gateways, args.seconds))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
