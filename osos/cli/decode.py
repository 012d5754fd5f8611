"""`osos decode`: turn a captured frame into JSON, one protocol at a time.

Each protocol module exposes ``decode_to_json(data: bytes, key: bytes | None) -> dict`` and
raises its own error type (a subclass of ``osos.protocols.errors.DecodeError``) on bad input.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import typer

# protocol name -> module path holding decode_to_json()
DECODERS: dict[str, str] = {
    "iec62056-21": "osos.protocols.iec62056_21",
    "s3-tariff": "osos.tariff.binary",
    "mbus": "osos.protocols.mbus",
    "wmbus": "osos.protocols.wmbus",
    "dlms": "osos.protocols.dlms",
    "modbus": "osos.protocols.modbus",
}


def register(app: typer.Typer) -> None:
    @app.command("decode")
    def decode(
        file: Path | None = typer.Argument(None, help="Frame file; standard input when omitted."),
        protocol: str = typer.Option(..., "--protocol", "-p", help="One of: " + ", ".join(DECODERS)),
        key: str | None = typer.Option(None, "--key", help="Decryption key in hex (wM-Bus, DLMS)."),
    ) -> None:
        """Decode one captured frame and print it as JSON (exit 2 on malformed input)."""
        from osos.protocols.errors import DecodeError

        if protocol not in DECODERS:
            typer.echo(f"error: unknown protocol {protocol!r}; known: {', '.join(DECODERS)}", err=True)
            raise typer.Exit(2)
        data = file.read_bytes() if file else sys.stdin.buffer.read()
        try:
            key_bytes = bytes.fromhex(key) if key else None
        except ValueError:
            typer.echo("error: --key must be hexadecimal", err=True)
            raise typer.Exit(2) from None
        module = importlib.import_module(DECODERS[protocol])
        try:
            result = module.decode_to_json(data, key_bytes)
        except DecodeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
