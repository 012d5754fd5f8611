"""`osos fare` and `osos tariff list|show|validate` (TAX-9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osos.cli.fare import TripCsvError, read_trip_csv
from osos.cli.main import app

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "trip.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_fare_json_for_an_ankara_trip(tmp_path: Path) -> None:
    # 5 km at 30 km/h then 3 minutes waiting: 65 + 50 x 4 + 3 x 7 = 286.00 TRY (published unit prices)
    rows = ["t_s,distance_m"] + [f"{i * 6},{i * 50}" for i in range(101)] + ["780,5000"]
    trip = write(tmp_path, "\n".join(rows) + "\n")
    res = runner.invoke(app, ["fare", "--tariff", "ankara-2026", "--trip", str(trip), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["fare"], out["currency"], out["extras"], out["total"], out["tariff_no"]) == (
        "286.00", "TRY", "0.00", "286.00", "1")
    assert out["timeline"][0]["event"] == "hire" and out["timeline"][0]["fare"] == "65.00"
    assert out["timeline"][-1]["event"] == "stop"


def test_fare_receipt_and_start_time_choose_the_tariff(tmp_path: Path) -> None:
    # London 2013 on a Saturday noon is tariff 2: 3 minutes stopped = 2.40 + 7 x 0.20 = 3.80 GBP
    trip = write(tmp_path, "t_s,distance_m\n0,0\n180,0\n")
    res = runner.invoke(app, ["fare", "--tariff", "london-2013", "--trip", str(trip),
                              "--start", "2013-06-08T12:00"])
    assert res.exit_code == 0, res.output
    assert "tariff 2" in res.stdout and "3.80 GBP" in res.stdout


def test_fare_with_pulses_and_k(tmp_path: Path) -> None:
    # k = 5000 pulses/km: 50000 pulses = 10 km -> 65 + 100 x 4 = 465.00 (at 40 km/h)
    trip = write(tmp_path, "t_s,pulses\n0,0\n450,25000\n900,50000\n")
    res = runner.invoke(app, ["fare", "--tariff", "ankara-2026", "--trip", str(trip), "--k", "5000", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fare"] == "465.00"


def test_fare_extras_column(tmp_path: Path, ) -> None:
    tariff = tmp_path / "x.toml"
    tariff.write_text("""
kind = "taxi"
name = "x"
city = "X"
country = "XX"
year = 2026
currency = "EUR"
[source]
url = "https://example.org"
title = "t"
accessed = "2026-11-21"
[[tariffs]]
no = "1"
opening_fare = "3.00"
unit_distance_fare = "0.20"
unit_distance = "100"
unit_time_fare = "0.20"
unit_time_s = "20"
extra_fare = "1.50"
max_extras = 3
""", encoding="utf-8")
    trip = write(tmp_path, "t_s,distance_m,extras\n0,0,0\n50,1000,1\n100,2000,2\n")
    res = runner.invoke(app, ["fare", "--tariff", str(tariff), "--trip", str(trip), "--json"])
    out = json.loads(res.stdout)
    # 2 km at 72 km/h: 3.00 + 20 x 0.20 = 7.00, extras 2 x 1.50 shown apart, total 10.00
    assert (out["fare"], out["extras"], out["total"]) == ("7.00", "3.00", "10.00")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("t_s,distance_m\n0,0\n5,x\n", "line 3: distance_m is not a number"),
        ("t_s,distance_m\n0,0\n5,10\n4,20\n", "line 4: t_s goes backwards"),
        ("t_s,distance_m\n0,0\n5,10\n6,9\n", "line 4: distance goes backwards"),
        ("t_s,distance_m\n0,0\n5\n", "line 3: 1 fields"),
        ("time,distance_m\n0,0\n", "line 1: header needs a t_s"),
        ("t_s,pulses\n0,0\n", "needs --k"),
        ("", "line 1: empty"),
        ("t_s,distance_m\n", "no samples"),
        ("t_s,distance_m\n0,-5\n", "line 2: distance_m must be"),
        ("t_s,distance_m\n1e30,0\n", "line 2: t_s '1e30' is out of range"),
    ],
)
def test_bad_csv_is_one_line_with_line_number_and_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    trip = write(tmp_path, text)
    res = runner.invoke(app, ["fare", "--tariff", "ankara-2026", "--trip", str(trip)])
    assert res.exit_code == 2
    assert fragment in res.stderr
    assert res.stderr.count("\n") == 1
    with pytest.raises(TripCsvError):
        read_trip_csv(text)


def test_fare_unknown_tariff_and_bad_start(tmp_path: Path) -> None:
    trip = write(tmp_path, "t_s,distance_m\n0,0\n")
    res = runner.invoke(app, ["fare", "--tariff", "atlantis", "--trip", str(trip)])
    assert res.exit_code == 2 and "no tariff file" in res.stderr
    res = runner.invoke(app, ["fare", "--tariff", "ankara-2026", "--trip", str(trip), "--start", "noon"])
    assert res.exit_code == 2 and "--start" in res.stderr


def test_tariff_list_show_validate(tmp_path: Path) -> None:
    res = runner.invoke(app, ["tariff", "list"])
    assert res.exit_code == 0
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("nyc-2022"))
    assert "taxi" in line and "New York" in line and "2022" in line and "USD" in line and "https://" in line
    res = runner.invoke(app, ["tariff", "show", "ankara-2026"])
    assert res.exit_code == 0 and "cross-over 10.50 km/h" in res.stdout
    from osos.tariff.library import TARIFF_DIR

    res = runner.invoke(app, ["tariff", "validate", str(TARIFF_DIR / "london-2013.toml")])
    assert res.exit_code == 0 and res.stdout.strip().endswith("ok")
    bad = tmp_path / "bad.toml"
    bad.write_text((TARIFF_DIR / "ankara-2026.toml").read_text(encoding="utf-8").replace(
        'no = "1"', 'no = "12"'), encoding="utf-8")
    res = runner.invoke(app, ["tariff", "validate", str(bad)])
    assert res.exit_code == 2 and "tariff number must be one character" in res.stderr


def test_tariff_show_summarises_an_energy_tariff_and_validate_takes_a_library_name() -> None:
    import tomllib

    from osos.tariff.library import find_tariff

    doc = tomllib.loads(find_tariff("tr-three-time").read_text("utf-8"))
    shown = runner.invoke(app, ["tariff", "show", "tr-three-time"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    assert summary["kind"] == "energy" and summary["name"] == "tr-three-time"
    assert set(summary["bands"]) == set(doc["bands"])
    ok = runner.invoke(app, ["tariff", "validate", "iski-2023"])
    assert ok.exit_code == 0 and "ok" in ok.output
    missing = runner.invoke(app, ["tariff", "validate", "no-such-tariff"])
    assert missing.exit_code == 2
