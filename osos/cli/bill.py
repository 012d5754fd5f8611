"""`osos bill`: bill a load profile, register readings or a water volume with a library tariff.

Why a command: operators and tests can check a tariff file against a real profile without the web
UI. Amounts print as decimal strings (exact); bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer


def register(app: typer.Typer) -> None:
    @app.command("bill")
    def bill(
        tariff: str = typer.Option(
            ..., "--tariff", "-t", help="Library tariff name (e.g. tr-three-time) or a TOML path."
        ),
        load_profile: Path | None = typer.Option(
            None, "--load-profile", "-l", help="CSV 'timestamp,kwh' (or 'timestamp,m3'), stamped at interval END."
        ),
        registers: list[str] | None = typer.Option(
            None, "--register", "-r", help="Register advance per band, e.g. -r T1=120.5 -r T2=30 (kWh)."
        ),
        consumption: str | None = typer.Option(None, "--consumption", "-c", help="Water volume of one month in m3."),
        dwellings: int = typer.Option(1, "--dwellings", help="Homes behind a shared water meter (tier limits x N)."),
        period: int | None = typer.Option(None, "--period", help="Interval length in minutes (default: inferred)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Bill energy per band (T1..T4) or water per tier; totals as exact decimal strings."""
        from osos.tariff import energy, library
        from osos.tariff.errors import TariffError

        def fail(message: str) -> NoReturn:
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2)

        try:
            loaded = library.load_tariff(tariff)
        except TariffError as exc:
            fail(str(exc))
        if not isinstance(loaded, energy.EnergyTariff | energy.WaterTariff):
            kind = getattr(loaded, "kind", type(loaded).__name__)
            fail(f"{tariff} is a {kind} tariff; osos bill needs energy or water")
        given = [x for x in (load_profile, registers, consumption) if x]
        if len(given) != 1:
            fail("give exactly one of --load-profile, --register or --consumption")
        try:
            profile = None
            if load_profile is not None:
                try:
                    text = load_profile.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    fail(f"cannot read {load_profile}: {exc}")
                profile = energy.parse_load_profile_csv(text, loaded.timezone, period)
            if isinstance(loaded, energy.EnergyTariff):
                if consumption is not None:
                    fail(f"{loaded.name} is an energy tariff: use --load-profile or --register")
                if profile is not None:
                    result = energy.bill_load_profile(loaded, profile).to_dict()
                else:
                    pairs = {}
                    for item in registers or []:
                        band, sep, value = item.partition("=")
                        if not sep:
                            fail(f"--register {item!r} is not BAND=KWH")
                        pairs[band.strip()] = value.strip()
                    result = energy.bill_registers(loaded, pairs).to_dict()
            else:
                if registers:
                    fail(f"{loaded.name} is a water tariff: use --consumption or --load-profile")
                if profile is not None:
                    months = energy.bill_water_profile(loaded, profile, dwellings)
                    result = _water_months(months)
                else:
                    litres = energy.parse_quantity(str(consumption), "consumption")
                    result = energy.bill_water(loaded, litres, dwellings).to_dict()
        except TariffError as exc:
            fail(str(exc))
        if as_json:
            typer.echo(json.dumps(result, ensure_ascii=False))
        else:
            _print_table(result)


def _water_months(months: list) -> dict:
    from decimal import Decimal

    per_month = [{"month": m, **b.to_dict()} for m, b in months]
    total = sum((Decimal(x["total"]) for x in per_month), Decimal(0))
    first = months[0][1]
    return {"tariff": first.tariff, "currency": first.currency, "months": per_month, "total": str(total)}


def _print_table(result: dict) -> None:
    blocks = result.get("months") or [result]
    for block in blocks:
        if "month" in block:
            typer.echo(f"month {block['month']}")
        for line in block["lines"]:
            qty_key = next(k for k in line if k in ("kWh", "m3"))
            typer.echo(f"  {line['band']:<8} {line[qty_key]:>14} {qty_key:<4} x {line['unit_price']:>10}"
                       f" = {line['amount']:>12} {result['currency']}")
        for note in block.get("notes", []):
            typer.echo(f"  note: {note}")
        if len(blocks) > 1:
            typer.echo(f"  month total {block['total']} {result['currency']}")
    typer.echo(f"total {result['total']} {result['currency']} ({result['tariff']})")
