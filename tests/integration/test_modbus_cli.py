"""`osos modbus read` against the simulated analyzer on a real socket (covers HES-31/32/33, HES-40)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from decimal import Decimal

from typer.testing import CliRunner

from osos.cli.main import app
from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer
from osos.protocols import modbus as M

runner = CliRunner()
T = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_read_prints_identity_values_and_alarms() -> None:
    regmap = M.load_map("carlo-gavazzi-em21")
    sim = SimulatedAnalyzer(regmap, seed=8, unit=12, clock=lambda: T, overrides={"phase_sequence": "L1-L3-L2"})
    with AnalyzerServer([sim], framer="rtu") as server:
        out = runner.invoke(app, ["modbus", "read", "--map", "carlo-gavazzi-em21", "--unit", "12", "--words",
                                  f"rtu+tcp://127.0.0.1:{server.port}"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["identity"]["model"] == "EM21" and doc["identity"]["device_id"] == "12"
    assert doc["alarms"] == ["phase_sequence"]
    held = sim.words_at(T)
    # frequency at 0033h, INT16, value weight Hz*10
    assert Decimal(doc["values"]["frequency"]) == Decimal(held[300052]) / 10
    assert doc["words"]["300052"] == held[300052]


def test_read_errors_exit_codes() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = runner.invoke(app, ["modbus", "read", "--map", "eastron-sdm630", f"tcp://127.0.0.1:{port}"])
    assert out.exit_code == 1
    out = runner.invoke(app, ["modbus", "read", "--map", "eastron-sdm630", "--only", "bogus", "tcp://h:1"])
    assert out.exit_code == 2 and "bogus" in out.output
