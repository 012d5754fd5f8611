"""`osos bill` end to end through the typer app (HES-27 billing, WAT tiers): output and exit codes."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from osos.cli.main import app

runner = CliRunner()


def test_bill_load_profile_json(tmp_path: Path) -> None:
    csv = tmp_path / "lp.csv"
    csv.write_text("timestamp,kwh\n2025-06-11 05:45,0.100\n2025-06-11 06:00,0.200\n2025-06-11 06:15,0.400\n")
    result = runner.invoke(app, ["bill", "--tariff", "tr-three-time", "--load-profile", str(csv), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    lines = {li["band"]: li for li in out["lines"]}
    assert lines["T3"]["kWh"] == "0.300" and lines["T1"]["kWh"] == "0.400"
    # independent: 0.4 x 1.582541 + 0.3 x 0.711394 = 0.8460746 -> 0.85
    assert out["total"] == "0.85"
    assert Decimal(out["total_kWh"]) == Decimal("0.7")


def test_bill_registers_and_water() -> None:
    r = runner.invoke(app, ["bill", "-t", "tr-single-time", "-r", "T1=100", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["total"] == "259.04"
    w = runner.invoke(app, ["bill", "-t", "iski-2023", "-c", "40", "--json"])
    assert w.exit_code == 0 and json.loads(w.stdout)["total"] == "1037.81"
    table = runner.invoke(app, ["bill", "-t", "iski-2023", "-c", "40"])
    assert table.exit_code == 0 and "total 1037.81 TRY" in table.stdout


def test_water_profile_by_month(tmp_path: Path) -> None:
    csv = tmp_path / "w.csv"
    csv.write_text("timestamp,m3\n2025-01-31 23:00,20\n2025-02-01 00:00,5\n2025-02-01 01:00,5\n")
    r = runner.invoke(app, ["bill", "-t", "iski-2023", "-l", str(csv), "--period", "60", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [m["month"] for m in out["months"]] == ["2025-01", "2025-02"]
    assert Decimal(out["total"]) == sum(Decimal(m["total"]) for m in out["months"])


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("2025-01-01 00:15,0.1\n2025-01-01 00:30,zz\n")
    cases = [
        (["bill", "-t", "no-such-tariff", "-c", "1"], "no tariff"),
        (["bill", "-t", "tr-three-time", "-l", str(bad)], "line 2"),
        (["bill", "-t", "tr-three-time", "-l", str(tmp_path / "missing.csv")], "cannot read"),
        (["bill", "-t", "tr-three-time", "-c", "4"], "energy tariff"),
        (["bill", "-t", "tr-three-time"], "exactly one"),
        (["bill", "-t", "tr-three-time", "-r", "T9=1"], "T9"),
        (["bill", "-t", "iski-2023", "-c", "-3"], "consumption"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
