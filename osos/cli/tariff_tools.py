"""`osos tariff encode|decode|print`: the S3 binary image and the parameter printout (TAX-5, TAX-9).

The commands join the `osos tariff` group of ``osos.cli.fare``. They do the file I/O; the formats live
in ``osos.tariff.binary`` and ``osos.tariff.printout``. Exit code 2 with a one-line reason on bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from osos.tariff.model import TaxiTariffSet


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _load(name: str) -> tuple[TaxiTariffSet, int | None, bool]:
    """A library name / TOML path, or an S3 image file: (tariff set, image CRC or None, locked)."""
    from osos.tariff import binary
    from osos.tariff.errors import TariffError
    from osos.tariff.library import load_taxi_tariff

    path = Path(name)
    try:
        if path.is_file() and path.read_bytes()[:4] == binary.MAGIC:
            data = path.read_bytes()
            ts = binary.decode(data)
            locked = bool(binary.unpack_image(data).options & binary.OPT_LOCKED)
            return ts, binary.image_crc(data), locked
        return load_taxi_tariff(name), None, False
    except TariffError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{name}: cannot read: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    """Add the binary/printout commands to the `osos tariff` group (``app`` is unused: the group exists)."""
    from osos.cli.fare import tariff_app

    @tariff_app.command("encode")
    def tariff_encode(
        name: str = typer.Argument(..., help="Library name or path of a taxi tariff file."),
        output: Path = typer.Option(..., "--output", "-o", help="Image file to write (FILE.bin)."),
        locked: bool = typer.Option(False, "--locked", help="Set 'no parameter change without the loader'."),
    ) -> None:
        """Write the S3 binary tariff image (with CRC) for a taximeter loader (TAX-5)."""
        from osos.tariff import binary
        from osos.tariff.errors import TariffError

        ts, _, _ = _load(name)
        try:
            data = binary.encode(ts, locked=locked)
        except TariffError as exc:
            raise _fail(f"{ts.name}: {exc}") from None
        try:
            output.write_bytes(data)
        except OSError as exc:
            raise _fail(f"{output}: cannot write: {exc.strerror}") from None
        crc = int.from_bytes(data[-2:], "little")
        typer.echo(f"{output}: {len(data)} bytes, {len(ts.tariffs)} tariffs, {len(ts.tiers)} tiers, "
                   f"tariff code {ts.tariff_code}, CRC {crc:04X}")

    @tariff_app.command("decode")
    def tariff_decode(
        file: Path = typer.Argument(..., help="S3 binary tariff image."),
        as_params: bool = typer.Option(False, "--params", help="Print the parameter list instead of JSON."),
    ) -> None:
        """Check an image's CRC and print what it holds as JSON (exit 2 on a damaged image)."""
        from osos.tariff import binary
        from osos.tariff.errors import TariffError
        from osos.tariff.printout import render_text

        try:
            data = file.read_bytes()
        except OSError as exc:
            raise _fail(f"{file}: cannot read: {exc.strerror}") from None
        try:
            if as_params:
                ts = binary.decode(data)
                locked = bool(binary.unpack_image(data).options & binary.OPT_LOCKED)
                typer.echo(render_text(ts, crc=binary.image_crc(data), locked=locked), nl=False)
            else:
                typer.echo(json.dumps(binary.decode_to_json(data), ensure_ascii=False, indent=2))
        except TariffError as exc:
            raise _fail(f"{file}: {exc}") from None

    @tariff_app.command("print")
    def tariff_print(
        name: str = typer.Argument(..., help="Library name, tariff file, or S3 image file."),
        pdf: Path | None = typer.Option(None, "--pdf", help="Also write the printout as PDF to this file."),
        width: int = typer.Option(40, "--width", help="Characters per line (thermal printer width)."),
    ) -> None:
        """Print the tariff parameter list as the taximeter's thermal printer does (TAX-9)."""
        from osos.tariff.errors import TariffError
        from osos.tariff.printout import render_pdf, render_text

        ts, crc, locked = _load(name)
        try:
            text = render_text(ts, width=width, crc=crc, locked=locked)
        except TariffError as exc:
            raise _fail(str(exc)) from None
        typer.echo(text, nl=False)
        if pdf is not None:
            try:
                pdf.write_bytes(render_pdf(ts, text=text))
            except OSError as exc:
                raise _fail(f"{pdf}: cannot write: {exc.strerror}") from None
            typer.echo(f"PDF written to {pdf}", err=True)
