"""`osos fare` (replay a trip CSV against a tariff) and `osos tariff list|show|validate` (TAX-9).

``tariff_app`` is the `osos tariff` group; other modules add their commands to it
(e.g. ``encode``/``decode``/``print`` of the binary format) with ``@tariff_app.command(...)``.
Exit code 2 on bad input, with a one-line reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from osos.tariff.fare import FareResult
    from osos.tariff.model import TaxiTariffSet

tariff_app = typer.Typer(help="Tariff library: list, show and validate tariff files.", no_args_is_help=True)


_MAX_VALUE = 10**9  # s, m or pulses: keeps every sample inside int64 in ms / mm / um


class TripCsvError(ValueError):
    """A trip CSV problem, with the 1-based line number."""


def read_trip_csv(text: str, k_per_km: int | None = None) -> list[tuple[int, int, int]]:
    """Parse a trip CSV into (t_ms, cumulative distance mm, cumulative extras) samples.

    Columns: ``t_s`` and ``distance_m`` (cumulative) or ``pulses`` (cumulative, needs k); optional
    ``extras`` (cumulative presses). Values round half-up to 1 ms / 1 mm; pulses convert exactly
    (floor of the cumulative value, so no drift).
    """
    import csv
    from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if not header:
        raise TripCsvError("line 1: empty file, expected a header t_s,distance_m[,extras]")
    cols = [h.strip() for h in header]
    if "t_s" not in cols:
        raise TripCsvError("line 1: header needs a t_s column")
    use_pulses = "pulses" in cols and "distance_m" not in cols
    if not use_pulses and "distance_m" not in cols:
        raise TripCsvError("line 1: header needs distance_m (or pulses with --k)")
    if use_pulses and not k_per_km:
        raise TripCsvError("line 1: a pulses column needs --k PULSES_PER_KM")
    i_t, i_x = cols.index("t_s"), cols.index("extras") if "extras" in cols else None
    i_d = cols.index("pulses" if use_pulses else "distance_m")
    out: list[tuple[int, int, int]] = []
    last = (-1, -1, 0)

    def num(value: str, line: int, name: str) -> Decimal:
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise TripCsvError(f"line {line}: {name} is not a number: {value!r}") from None
        if not d.is_finite() or d < 0:
            raise TripCsvError(f"line {line}: {name} must be a finite number >= 0, got {value!r}")
        if d > _MAX_VALUE:
            raise TripCsvError(f"line {line}: {name} {value!r} is out of range (max {_MAX_VALUE})")
        return d

    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise TripCsvError(f"line {line}: {len(row)} fields, header has {len(cols)}")
        t = int((num(row[i_t], line, "t_s") * 1000).to_integral_value(rounding=ROUND_HALF_UP))
        raw = num(row[i_d], line, cols[i_d])
        if use_pulses:
            if raw != raw.to_integral_value():
                raise TripCsvError(f"line {line}: pulses must be an integer count")
            d = int(raw) * 1_000_000 // k_per_km  # type: ignore[operator]
        else:
            d = int((raw * 1000).to_integral_value(rounding=ROUND_HALF_UP))
        x = 0
        if i_x is not None:
            xd = num(row[i_x], line, "extras")
            if xd != xd.to_integral_value():
                raise TripCsvError(f"line {line}: extras must be an integer count")
            x = int(xd)
        if t < last[0]:
            raise TripCsvError(f"line {line}: t_s goes backwards")
        if d < last[1]:
            raise TripCsvError(f"line {line}: distance goes backwards (values are cumulative)")
        if x < last[2]:
            raise TripCsvError(f"line {line}: extras go backwards (values are cumulative presses)")
        last = (t, d, x)
        out.append(last)
    if not out:
        raise TripCsvError("line 2: no samples after the header")
    return out


def _dec_str(value: Any, places: int = 3) -> str:
    from decimal import Decimal

    return str(Decimal(value).quantize(Decimal(1).scaleb(-places)))


def result_to_json(result: FareResult, tariffs: TaxiTariffSet) -> dict[str, Any]:
    """The JSON form of a trip result (amounts as decimal strings)."""
    from osos.tariff.fare import milli_to_decimal

    return {
        "tariff": tariffs.name,
        "fare": str(result.fare),
        "currency": result.currency,
        "extras": str(result.extras),
        "total": str(result.total),
        "tariff_no": result.tariff_no,
        "distance_m": _dec_str(result.distance_m),
        "duration_s": _dec_str(result.duration_s),
        "distance_units": result.distance_units,
        "time_units": result.time_units,
        "extra_count": result.extra_count,
        "timeline": [
            {"t_s": _dec_str(e.t_ms / 1000), "distance_m": _dec_str(e.distance_mm / 1000), "event": e.kind,
             "units": e.units, "fare": str(milli_to_decimal(e.fare_milli, tariffs.decimals)),
             "tariff_no": e.tariff_no}
            for e in result.timeline
        ],
    }


def _receipt(result: FareResult, tariffs: TaxiTariffSet) -> str:
    cur = result.currency
    lines = [
        f"{tariffs.city} taxi ({tariffs.name})  tariff {result.tariff_no}",
        f"distance      {_dec_str(result.distance_m, 1):>12} m",
        f"duration      {_dec_str(result.duration_s, 1):>12} s",
        f"units         {result.distance_units:>6} distance, {result.time_units} time",
        f"fare          {result.fare:>12} {cur}",
        f"extras ({result.extra_count:>2})   {result.extras:>12} {cur}",
        f"TOTAL         {result.total:>12} {cur}",
    ]
    return "\n".join(lines)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@tariff_app.command("list")
def tariff_list(as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table.")) -> None:
    """List the tariff library: name, kind, city, year, currency, source."""
    from osos.tariff.library import list_tariffs

    infos = list_tariffs()
    if as_json:
        for i in infos:
            typer.echo(json.dumps({"name": i.name, "kind": i.kind, "city": i.city, "year": i.year,
                                   "currency": i.currency, "source": i.source, "error": i.error}))
        return
    typer.echo(f"{'NAME':<22} {'KIND':<7} {'CITY':<14} {'YEAR':<5} {'CUR':<4} SOURCE")
    for i in infos:
        src = i.error or i.source
        typer.echo(f"{i.name:<22} {i.kind:<7} {i.city:<14} {i.year:<5} {i.currency:<4} {src}")


@tariff_app.command("show")
def tariff_show(name: str = typer.Argument(..., help="Library name or path of a tariff file.")) -> None:
    """Show one tariff file's parameters (derived units and cross-over speed included)."""
    from osos.tariff.errors import TariffError
    from osos.tariff.library import load_tariff
    from osos.tariff.model import TaxiTariffSet, crossover_kmh

    try:
        ts = load_tariff(name)
    except TariffError as exc:
        raise _fail(str(exc)) from None
    if not isinstance(ts, TaxiTariffSet):  # energy and water tariffs summarise themselves
        import json

        typer.echo(json.dumps(ts.to_summary(), ensure_ascii=False, indent=2, default=str))
        return
    unit = ts.distance_unit
    typer.echo(f"{ts.name}: {ts.city} ({ts.country}) {ts.year}, {ts.currency}, distances in {unit}")
    typer.echo(f"source: {ts.source.title} <{ts.source.url}> accessed {ts.source.accessed}")
    for t in ts.tariffs:
        typer.echo(f"tariff {t.no} {t.name!r}: mode {t.mode}, charge when unit {t.charge}, "
                   f"activation {t.activation.to_dict()}")
        typer.echo(f"  opening {t.opening_fare} covering {t.opening_distance} {unit} / {t.opening_time_s} s; "
                   f"minimum {t.minimum_fare}")
        typer.echo(f"  {t.unit_distance_fare} per {t.unit_distance} {unit}; {t.unit_time_fare} per "
                   f"{t.unit_time_s} s; cross-over {crossover_kmh(t, unit):.2f} km/h")
        typer.echo(f"  extra {t.extra_fare} x max {t.max_extras}; tiers {', '.join(t.tiers) or '-'}")
    for tr in ts.tiers:
        fields = {k: v for k, v in vars(tr).items() if v is not None and k not in ("id", "kind", "limit")}
        typer.echo(f"tier {tr.id}: {tr.kind} >= {tr.limit} {fields}")
    for ex in ts.examples:
        typer.echo(f"example {ex.name!r}: tariff {ex.tariff} -> {ex.expected_fare} {ts.currency}")


@tariff_app.command("validate")
def tariff_validate(path: Path = typer.Argument(..., help="Tariff file (or a library name) to check.")) -> None:
    """Validate a tariff file (exit 2 with the reason when it is invalid)."""
    from osos.tariff.errors import TariffError
    from osos.tariff.library import find_tariff, parse_document, read_document

    if not path.is_file():
        try:
            path = find_tariff(str(path))
        except TariffError:
            raise _fail(f"{path}: no such file or library tariff") from None
    try:
        parse_document(read_document(path), path.stem)
    except TariffError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{path}: ok")


def register(app: typer.Typer) -> None:
    app.add_typer(tariff_app, name="tariff")

    @app.command("fare")
    def fare(
        tariff: str = typer.Option(..., "--tariff", help="Library name (e.g. ankara-2026) or path."),
        trip: Path = typer.Option(..., "--trip", help="CSV: t_s,distance_m[,extras] or t_s,pulses[,extras]."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a receipt."),
        start: str | None = typer.Option(None, "--start", help="Local start time, e.g. 2026-03-02T10:00; "
                                         "chooses the tariff active then (TAX-4)."),
        tariff_no: str | None = typer.Option(None, "--tariff-no", help="Tariff number to hire with."),
        k: int | None = typer.Option(None, "--k", help="Calibration constant, pulses per km (TAX-7)."),
    ) -> None:
        """Replay a trip against a taximeter tariff and print the fare (exit 2 on bad input)."""
        from datetime import datetime

        from osos.tariff.errors import TariffError
        from osos.tariff.fare import replay
        from osos.tariff.library import load_taxi_tariff

        if k is not None and k <= 0:
            raise _fail("--k must be a positive number of pulses per km")
        local = None
        if start is not None:
            try:
                local = datetime.fromisoformat(start)
            except ValueError:
                raise _fail(f"--start {start!r} is not an ISO date-time (2026-03-02T10:00)") from None
        try:
            ts = load_taxi_tariff(tariff)
        except TariffError as exc:
            raise _fail(str(exc)) from None
        try:
            text = trip.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(f"{trip}: cannot read: {exc}") from None
        try:
            samples = read_trip_csv(text, k)
        except TripCsvError as exc:
            raise _fail(f"{trip.name} {exc}") from None
        import numpy as np

        try:  # the array path charges stretches in closed form (same result as sample by sample)
            result = replay(ts, np.array(samples, dtype=np.int64), local, tariff_no=tariff_no)
        except TariffError as exc:
            raise _fail(str(exc)) from None
        if as_json:
            typer.echo(json.dumps(result_to_json(result, ts), ensure_ascii=False))
        else:
            typer.echo(_receipt(result, ts))
