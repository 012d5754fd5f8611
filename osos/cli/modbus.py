"""`osos modbus`: list register maps, read an analyzer, run a simulated one, decode a captured frame
(HES-31/32/33, HES-40)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def _parse_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise typer.BadParameter(f"not an integer: {text!r} (decimal or 0x hex)") from None


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Modbus energy analyzers: register maps, reads, simulator.", no_args_is_help=True)
    app.add_typer(group, name="modbus")

    @group.command("maps")
    def maps() -> None:
        """List the shipped register maps and where each comes from."""
        from osos.protocols.modbus import available_maps, load_map

        for name in available_maps():
            m = load_map(name)
            typer.echo(f"{name}\t{m.device.get('manufacturer', '')} {m.device.get('model', '')}\t"
                       f"{len(m.registers)} registers\t{m.source['title']} {m.source['version']} "
                       f"({m.source['date']}) {m.source['url']}")

    @group.command("read")
    def read(
        url: str = typer.Argument(..., help="tcp://host:port (Modbus TCP), rtu+tcp://host:port (RTU over TCP) "
                                             "or serial:///dev/ttyUSB0 (RTU on a serial port)"),
        map_name: str = typer.Option(..., "--map", "-m", help="Map name (osos modbus maps) or a .toml path."),
        unit: int = typer.Option(1, "--unit", "-u", help="Modbus unit (device) id."),
        only: str | None = typer.Option(None, "--only", help="Comma-separated register names."),
        words: bool = typer.Option(False, "--words", help="Also print the raw words."),
    ) -> None:
        """Read an analyzer and print identity, values and alarms as JSON (exit 1: no answer, 2: bad input)."""
        from osos.field.links import LinkError, LinkSpec
        from osos.field.modbus_client import ModbusClientError, open_client, read_map
        from osos.protocols.modbus import ModbusMapError, load_map

        try:
            regmap = load_map(map_name)
        except ModbusMapError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        names = [n.strip() for n in only.split(",")] if only else None
        known = {r.name for r in regmap.registers}
        if names and set(names) - known:
            typer.echo(f"error: not in {regmap.name}: {', '.join(sorted(set(names) - known))}", err=True)
            raise typer.Exit(2)
        try:
            if url.startswith(("serial://", "pty://")):
                carrier = LinkSpec.parse(url).open()
                serial = regmap.serial  # RTU on RS485: 8 data bits, the map's default speed and framing
                carrier.configure(int(serial.get("baud", 9600)), 8, str(serial.get("parity", "N")),
                                  int(serial.get("stop_bits", 1)))
            else:
                carrier = open_client(url)
        except (ModbusClientError, LinkError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        try:
            result = read_map(carrier, regmap, unit=unit, names=names)
        except (ModbusClientError, LinkError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            carrier.close()
        out = result.to_json()
        if not words:
            out.pop("words")
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))

    @group.command("simulate")
    def simulate(
        map_name: str = typer.Option(..., "--map", "-m", help="Map name or .toml path."),
        port: int = typer.Option(5020, "--port", "-p"),
        host: str = typer.Option("127.0.0.1", "--host"),
        framer: str = typer.Option("socket", "--framer", help="socket (Modbus TCP) or rtu (RTU over TCP)."),
        units: str = typer.Option("1", "--units", help="Comma-separated unit ids, one analyzer each."),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Serve simulated analyzers until interrupted."""
        import time

        from osos.field.meters.modbus_analyzer import AnalyzerServer, SimulatedAnalyzer
        from osos.protocols.modbus import ModbusMapError, load_map

        try:
            regmap = load_map(map_name)
            ids = [_parse_int(u) for u in units.split(",")]
            server = AnalyzerServer([SimulatedAnalyzer(regmap, seed=seed + i, unit=u) for i, u in enumerate(ids)],
                                    framer=framer, host=host, port=port)
        except (ModbusMapError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        with server:
            typer.echo(f"simulated {regmap.name} units {ids} on {host}:{server.port} ({framer})", err=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass

    @group.command("decode")
    def decode(
        file: Path | None = typer.Argument(None, help="Captured response frame (binary); stdin when omitted."),
        map_name: str | None = typer.Option(None, "--map", "-m", help="Map to name the words with."),
        address: str | None = typer.Option(None, "--address", help="Start address of the request (0x.. ok)."),
        table: str = typer.Option("input", "--table", help="input (function 04) or holding (function 03)."),
        hex_input: bool = typer.Option(False, "--hex", help="The input is hexadecimal text."),
    ) -> None:
        """Decode a captured read response (RTU with CRC, or Modbus TCP) and print JSON (exit 2 if malformed)."""
        from osos.protocols.modbus import ModbusError, decode_frame, load_map

        data = file.read_bytes() if file else sys.stdin.buffer.read()
        try:
            if hex_input:
                data = bytes.fromhex(data.decode("ascii", "replace").strip())
            regmap = load_map(map_name) if map_name else None
            result = decode_frame(data, regmap, table, _parse_int(address) if address else None)
        except (ModbusError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
