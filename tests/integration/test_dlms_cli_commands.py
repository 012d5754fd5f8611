"""`osos dlms read / relay` against the simulated meter on a real socket (covers HES-11, HES-40)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from osos.cli.main import app
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer

NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
PASSWORD = "Cli-test-pw-3"


def test_read_and_relay_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=PASSWORD.encode()))
    monkeypatch.setenv("OSOS_DLMS_PASSWORD", PASSWORD)
    runner = CliRunner()
    with WrapperServer(meter) as srv:
        port = str(srv.port)
        res = runner.invoke(app, ["dlms", "read", "--port", port, "clock", "registers", "profile",
                                  "--from", "2026-11-21T10:00+03:00", "--to", "2026-11-21T11:00+03:00"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["clock"] == "2026-11-22T00:30:00+03:00"
        total = meter.registers()[0]
        assert out["registers"]["1.8.0"] == {"value": f"{total // 10}.{total % 10}", "unit": "Wh"}
        assert [r[0] for r in out["profile"]] == ["2026-11-21T10:00:00+03:00", "2026-11-21T11:00:00+03:00"]

        res = runner.invoke(app, ["dlms", "relay", "--port", port, "off"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout) == {"output_state": False, "control_state": 0}
        assert meter.disconnector.control_state == 0

        monkeypatch.setenv("OSOS_DLMS_PASSWORD", "wrong-password")
        res = runner.invoke(app, ["dlms", "read", "--port", port, "clock"])
        assert res.exit_code == 1
        assert "authentication_failed" in res.output
