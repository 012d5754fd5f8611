"""`osos dlms ...`: run the simulated DLMS meter, read it, sync its clock, switch its relay
(HES-11, HES-35, HES-40). Secrets come from the environment (OSOS_DLMS_PASSWORD, OSOS_DLMS_EK,
OSOS_DLMS_AK as hex), never from a default (HES-56)."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import typer

dlms_app = typer.Typer(help="DLMS/COSEM: simulated meter and field client.", no_args_is_help=True)


def _secret(name: str, hex_: bool = False) -> bytes | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return bytes.fromhex(value) if hex_ else value.encode("utf-8")
    except ValueError:
        typer.echo(f"error: {name} must be hexadecimal", err=True)
        raise typer.Exit(2) from None


def _client(host: str, port: int, client: int, transport: str, mechanism: str) -> Any:
    from osos.field import dlms_client as C

    sec = C.Security(mechanism, password=_secret("OSOS_DLMS_PASSWORD"), ek=_secret("OSOS_DLMS_EK", True),
                     ak=_secret("OSOS_DLMS_AK", True))
    if mechanism == "lls" and not sec.password:
        typer.echo("error: set OSOS_DLMS_PASSWORD for LLS", err=True)
        raise typer.Exit(2)
    t = C.HdlcTransport.tcp(host, port, client) if transport == "hdlc" else C.WrapperTransport(host, port, client)
    return C.DlmsClient(t, sec)


def _when(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO date-time: {text}") from None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple | list):
        return [_jsonable(i) for i in v]
    return v


HOST = typer.Option("127.0.0.1", "--host")
PORT = typer.Option(4059, "--port")
CLIENT = typer.Option(32, "--client", help="Client SAP: 16 public, 32 LLS, 1 HLS-GMAC.")
TRANSPORT = typer.Option("wrapper", "--transport", help="wrapper or hdlc.")
MECH = typer.Option("lls", "--auth", help="none, lls or hls-gmac.")


@dlms_app.command("meter")
def meter(
    port: int = typer.Option(4059, "--port", help="Wrapper TCP port."),
    hdlc_port: int = typer.Option(0, "--hdlc-port", help="Also serve raw HDLC on this port (0 = no)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    duration: float = typer.Option(0, "--duration", help="Stop after this many seconds (0 = until Ctrl-C)."),
    kind: str = typer.Option("tri", "--kind", help="mono, tri or kombi (kombi adds reactive + profile 2)."),
    push: str | None = typer.Option(None, "--push", help="HOST:PORT to push an alarm to on every meter event."),
) -> None:
    """Run the simulated meter on the real clock."""
    import signal
    import threading

    from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
    from osos.field.meters.dlms_server import HdlcTcpServer, WrapperServer

    secrets = MeterSecrets(_secret("OSOS_DLMS_PASSWORD"), _secret("OSOS_DLMS_EK", True), _secret("OSOS_DLMS_AK", True))
    if kind not in ("mono", "tri", "kombi"):
        raise typer.BadParameter("--kind is mono, tri or kombi")
    m = SimulatedDlmsMeter(lambda: dt.datetime.now(dt.UTC), secrets, kind=kind)
    alarms = None
    if push:
        from osos.field.meters.dlms_server import AlarmPush

        phost, _, pport = push.rpartition(":")
        if not phost or not pport.isdigit():
            raise typer.BadParameter("--push is HOST:PORT")
        alarms = AlarmPush(m, phost, int(pport), ciphered=secrets.ek is not None and secrets.ak is not None)
    servers = [WrapperServer(m, host, port).start()]
    if hdlc_port:
        servers.append(HdlcTcpServer(m, host, hdlc_port).start())
    typer.echo(json.dumps({"wrapper": [servers[0].host, servers[0].port],
                           "hdlc": [servers[1].host, servers[1].port] if hdlc_port else None,
                           "system_title": m.system_title.hex()}))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(duration if duration > 0 else None)
    for s in servers:
        s.close()
    if alarms is not None:
        alarms.close()


@dlms_app.command("read")
def read(
    what: list[str] = typer.Argument(..., help="Any of: clock registers identity profile events relay calendar."),
    host: str = HOST, port: int = PORT, client: int = CLIENT, transport: str = TRANSPORT, auth: str = MECH,
    start: str | None = typer.Option(None, "--from", help="Profile start, ISO date-time."),
    end: str | None = typer.Option(None, "--to", help="Profile end, ISO date-time."),
) -> None:
    """Read a meter and print JSON (values exact: decimals as strings)."""
    from osos.field import dlms_client as C

    out: dict[str, Any] = {}
    try:
        with _client(host, port, client, transport, auth) as c:
            for item in what:
                if item == "clock":
                    out["clock"] = c.read_clock().isoformat()
                elif item == "registers":
                    out["registers"] = {}
                    for t in range(5):
                        value, unit = c.read_register(f"1.0.1.8.{t}.255")
                        out["registers"][f"1.8.{t}"] = {"value": str(value), "unit": unit}
                elif item == "identity":
                    out["logical_device_name"] = c.read_data("0.0.42.0.0.255").value.decode("ascii", "replace")
                    out["serial"] = c.read_data("0.0.96.1.0.255").value.decode("ascii", "replace")
                elif item in ("profile", "events"):
                    obis = "1.0.99.1.0.255" if item == "profile" else "0.0.99.98.0.255"
                    rows = c.read_profile(obis, _when(start), _when(end)) if start or end else c.read_profile(obis)
                    out[item] = _jsonable(rows)
                elif item == "relay":
                    output, control = c.disconnect_state()
                    out["relay"] = {"output_state": output, "control_state": control}
                elif item == "calendar":
                    cal = c.read_calendar()
                    out["calendar"] = _jsonable([[a.start_time.hour, a.start_time.minute, a.script_selector]
                                                 for d in cal.days for a in d.sorted_actions()])
                else:
                    raise typer.BadParameter(f"unknown item {item!r}")
    except (C.DlmsClientError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@dlms_app.command("clock-sync")
def clock_sync(host: str = HOST, port: int = PORT, client: int = CLIENT, transport: str = TRANSPORT,
               auth: str = MECH) -> None:
    """Set the meter clock to this machine's time (HES-35) and print the drift that was corrected."""
    from osos.field import dlms_client as C

    try:
        with _client(host, port, client, transport, auth) as c:
            before = c.read_clock()
            now = dt.datetime.now(dt.UTC).astimezone(before.tzinfo) if before.tzinfo else dt.datetime.now()
            c.set_clock(now)
            typer.echo(json.dumps({"meter_before": before.isoformat(), "set_to": now.isoformat(),
                                   "drift_seconds": str((before - now).total_seconds())}))
    except (C.DlmsClientError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@dlms_app.command("relay")
def relay(state: str = typer.Argument(..., help="on or off"), host: str = HOST, port: int = PORT,
          client: int = CLIENT, transport: str = TRANSPORT, auth: str = MECH) -> None:
    """Remote disconnect (off) or reconnect (on) through the disconnect control object (HES-11)."""
    from osos.field import dlms_client as C

    if state not in ("on", "off"):
        raise typer.BadParameter("on or off")
    try:
        with _client(host, port, client, transport, auth) as c:
            c.reconnect() if state == "on" else c.disconnect()
            output, control = c.disconnect_state()
    except (C.DlmsClientError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"output_state": output, "control_state": control}))


def register(app: typer.Typer) -> None:
    app.add_typer(dlms_app, name="dlms")
