"""`osos gateway` (one real gateway agent), `osos gateway-secret` (its meter secret store) and `osos simulate`
(a fleet of simulated gateways and meters).

Meter secrets never appear on a command line (issue 7, HES-56): ``--meter`` URLs name a secret store entry
(``?secret=m1``) and ``osos gateway-secret set`` reads the value from standard input.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import typer

#: query keys that would put a meter secret into the process list; refused with the way to do it instead
SECRET_QUERY_KEYS = ("password", "pw", "pass", "ek", "ak", "key")


def _meter_query(url: str) -> dict[str, str]:
    """The ``--meter`` URL's query; a secret given by value is refused with how to use the store instead."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
    given = [k for k in q if k.lower() in SECRET_QUERY_KEYS]
    if given:
        field = given[0] if given[0] in ("ek", "ak") else "password"
        raise typer.BadParameter(
            f"--meter must not carry {given[0]}= (command lines are visible to every local user in ps): store the "
            f"secret with `osos gateway-secret set NAME {field} --data-dir DIR` (it reads the value from standard "
            "input) and name it in the URL with ?secret=NAME")
    if "secret" in q and not q["secret"]:
        raise typer.BadParameter("--meter ?secret= needs the name of a secret store entry")
    return q


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("use HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def _password(password_file: Path | None) -> str | None:
    """The broker password from a file or OSOS_MQTT_PASSWORD: never from the command line, where ``ps`` shows it."""
    import os

    if password_file is not None:
        try:
            return password_file.read_text().strip() or None
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {password_file}: {exc}") from None
    return os.environ.get("OSOS_MQTT_PASSWORD") or None


def _tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> None:
    for path in (ca, cert, key):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"no such file: {path}")
    if (cert is None) != (key is None):
        raise typer.BadParameter("--cert and --key go together")


def _wait(duration: float) -> None:
    """Block until Ctrl-C / SIGTERM, or for ``duration`` seconds when > 0."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(duration if duration > 0 else None)


def register(app: typer.Typer) -> None:
    @app.command("gateway")
    def gateway(
        broker: str = typer.Option("127.0.0.1:1883", "--broker", help="MQTT broker HOST:PORT."),
        flag: str = typer.Option(..., "--flag", help="Gateway flag code (3 letters)."),
        serial: str = typer.Option(..., "--serial", help="Gateway serial number."),
        meter: list[str] = typer.Option(
            [], "--meter",
            help="Meter link: tcp://host:port or serial:///dev/ttyUSB0, optional ?address=&flag=&serial="
                 "&secret=&max_baud=&kind=&profile= (flag/serial are discovered by a readout when absent; "
                 "profile names a meter library entry, e.g. landis-gyr-e450, which sets the protocol; secret names "
                 "the entry of `osos gateway-secret` holding the meter's password/keys - never the value itself).",
        ),
        sim_meter: list[str] = typer.Option(
            [], "--sim-meter", help="Also start a simulated meter BRAND:KIND (e.g. makel:kombi) on a local port."
        ),
        topic_root: str = typer.Option("mass", "--topic-root"),
        data_dir: Path = typer.Option(Path("gateway-data"), "--data-dir",
                                      help="Outbox, added directives, secret store and DLMS counters."),
        heartbeat: float = typer.Option(60.0, "--heartbeat", help="Heartbeat period in seconds."),
        read_interval: float = typer.Option(0.0, "--read-interval", help="Push-read period in s (0 = off)."),
        push_directive: str = typer.Option("short-read", "--push-directive"),
        mqtt_protocol: str = typer.Option("v5", "--mqtt", help="v5 or v311."),
        duration: float = typer.Option(0.0, "--duration", help="Stop after this many seconds (0 = Ctrl-C)."),
        username: str | None = typer.Option(None, "--username", help="Broker account (default: FLAG+SERIAL)."),
        password_file: Path | None = typer.Option(
            None, "--password-file", help="File holding the broker password (else env OSOS_MQTT_PASSWORD)."
        ),
        ca: Path | None = typer.Option(None, "--ca", help="CA certificate: connect with TLS and verify the broker."),
        cert: Path | None = typer.Option(None, "--cert", help="Client certificate (with --key), optional."),
        key: Path | None = typer.Option(None, "--key", help="Client certificate key."),
    ) -> None:
        """Run one gateway agent: MASS over MQTT to the head-end; IEC 62056-21, DLMS, Modbus or M-Bus to its meters."""
        import logging
        from datetime import UTC, datetime

        from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
        from osos.field.links import LinkError, LinkSpec
        from osos.field.meters.brands import BrandError, brand
        from osos.field.meters.iec import SimMeter
        from osos.field.meters.model import MeterModel, MeterModelError
        from osos.field.meters.serve import TcpMeterServer
        from osos.field.secrets import SecretStoreError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        host, port = _broker(broker)
        if mqtt_protocol not in ("v5", "v311"):
            raise typer.BadParameter("--mqtt must be v5 or v311")
        _tls_files(ca, cert, key)
        secret = _password(password_file)
        configs: list[MeterConfig] = []
        servers: list[TcpMeterServer] = []
        for i, spec_text in enumerate(sim_meter):
            brand_key, _, kind = spec_text.partition(":")
            try:
                profile = brand(brand_key)
                model = MeterModel(f"{9000000 + i:08d}", kind or "single-phase", datetime.now(UTC), seed=i)
            except (BrandError, MeterModelError) as exc:
                raise typer.BadParameter(str(exc)) from None
            sim = SimMeter(model, profile)
            server = TcpMeterServer([sim]).start()
            servers.append(server)
            configs.append(MeterConfig(link=server.url, flag=profile.flag, serial=sim.serial, brand=profile.name,
                                       model=profile.models[sim.kind], kind=sim.kind, password=sim.password,
                                       max_baud=profile.max_baud, date_format=profile.date_format))
            typer.echo(f"simulated {profile.name} {sim.kind} meter {sim.serial} on {server.url}")
        for url in meter:
            try:
                LinkSpec.parse(url)
            except LinkError as exc:
                raise typer.BadParameter(str(exc)) from None
            q = _meter_query(url)
            protocol = "iec62056-21"
            if q.get("profile"):
                from osos.meterlib import MeterLibraryError, profile

                try:
                    protocol = profile(q["profile"]).protocol
                except MeterLibraryError as exc:
                    raise typer.BadParameter(str(exc)) from None
            configs.append(MeterConfig(
                link=url, flag=q.get("flag", ""), serial=q.get("serial", ""), kind=q.get("kind", "single-phase"),
                secret=q.get("secret", ""), max_baud=int(q.get("max_baud", "19200")),
                protocol=protocol, profile=q.get("profile", ""),
            ))
        config = GatewayConfig(
            flag=flag, serial=serial, data_dir=data_dir, broker_host=host, broker_port=port,
            topic_root=topic_root, mqtt_protocol=mqtt_protocol, heartbeat_interval_s=heartbeat,
            read_interval_s=read_interval or None, push_directive=push_directive,
            broker_username=(username or f"{flag}{serial}") if secret else username, broker_password=secret,
            broker_tls=ca is not None, broker_ca=ca, broker_cert=cert, broker_key=key,
        )
        try:
            agent = Gateway(config, configs)
        except SecretStoreError as exc:
            for server in servers:
                server.stop()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        agent.discover()
        for m in configs:
            typer.echo(f"meter {m.flag or '?'} {m.serial or '?'} on {m.link}")
        agent.start()
        typer.echo(f"gateway {flag}{serial} connecting to {host}:{port} (topic root {topic_root!r}); Ctrl-C stops")
        try:
            _wait(duration)
        finally:
            agent.stop()
            for server in servers:
                server.stop()

    secret_app = typer.Typer(
        help="The gateway's meter secret store (<data-dir>/secrets.enc, AES-GCM, key in OSOS_GATEWAY_KEY).",
        no_args_is_help=True)
    app.add_typer(secret_app, name="gateway-secret")
    store_dir = typer.Option(Path("gateway-data"), "--data-dir", help="The gateway's data directory.")

    def _store(data_dir: Path):  # type: ignore[no-untyped-def]
        from osos.field.secrets import SecretStore, SecretStoreError

        try:
            return SecretStore.open(data_dir)
        except SecretStoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    @secret_app.command("keygen")
    def secret_keygen() -> None:
        """Print a new random store key (32 bytes, base64): export it as OSOS_GATEWAY_KEY and keep a copy apart."""
        from osos.field.secrets import generate_key

        typer.echo(generate_key())

    @secret_app.command("set")
    def secret_set(
        name: str = typer.Argument(..., help="Entry name the meters refer to (--meter ...?secret=NAME)."),
        field: str = typer.Argument("password", help="password (IEC P1 / DLMS LLS), ek or ak (hex, 16 bytes)."),
        data_dir: Path = store_dir,
    ) -> None:
        """Set one field of an entry; the value is read from standard input (first line), never an argument."""
        from osos.field.secrets import SecretStoreError

        if sys.stdin.isatty():  # typed by hand: not echoed
            import getpass

            value = getpass.getpass(f"{field} for {name}: ")
        else:
            value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            typer.echo("error: no value on standard input", err=True)
            raise typer.Exit(2)
        store = _store(data_dir)
        try:
            store.set(name, field, value)
        except SecretStoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{name}: {field} stored in {store.path}")

    @secret_app.command("list")
    def secret_list(data_dir: Path = store_dir) -> None:
        """Entry names and which fields each holds (never the values)."""
        store = _store(data_dir)
        for name in store.names():
            typer.echo(f"{name}\t{','.join(store.fields(name))}")

    @secret_app.command("delete")
    def secret_delete(
        name: str = typer.Argument(...),
        field: str | None = typer.Argument(None, help="Only this field (default: the whole entry)."),
        data_dir: Path = store_dir,
    ) -> None:
        """Delete an entry or one of its fields."""
        from osos.field.secrets import SecretStoreError

        store = _store(data_dir)
        try:
            removed = store.delete(name, field)
        except SecretStoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if not removed:
            typer.echo(f"error: no {field + ' in ' if field else ''}secret {name!r}", err=True)
            raise typer.Exit(1)
        typer.echo(f"deleted {name}{' ' + field if field else ''}")

    @app.command("simulate")
    def simulate(
        broker: str = typer.Option("127.0.0.1:1883", "--broker", help="MQTT broker HOST:PORT."),
        gateways: int = typer.Option(10, "--gateways", min=1, help="Number of simulated gateways."),
        seed: int = typer.Option(1, "--seed"),
        topic_root: str = typer.Option("mass", "--topic-root"),
        read_interval: float = typer.Option(20.0, "--read-interval", help="Push-read period in s (0 = off)."),
        heartbeat: float = typer.Option(30.0, "--heartbeat"),
        acceleration: float = typer.Option(1.0, "--acceleration", help="Meter clock speed-up for demos."),
        events: bool = typer.Option(True, "--events/--no-events", help="Inject outages and cover openings."),
        data_dir: Path = typer.Option(Path("fleet-data"), "--data-dir"),
        mqtt_protocol: str = typer.Option("v5", "--mqtt", help="v5 or v311."),
        duration: float = typer.Option(0.0, "--duration", help="Stop after this many seconds (0 = Ctrl-C)."),
        credentials: Path | None = typer.Option(
            None, "--credentials",
            help="JSON file {\"FLAGSERIAL\": \"password\", ...} with each gateway's broker password (keep it 0600).",
        ),
        ca: Path | None = typer.Option(None, "--ca", help="CA certificate: connect with TLS and verify the broker."),
    ) -> None:
        """Run a fleet of simulated gateways, each with 1-4 simulated meters, against a broker."""
        import logging

        from osos.field.fleet import Fleet

        logging.basicConfig(level=logging.WARNING)
        host, port = _broker(broker)
        if mqtt_protocol not in ("v5", "v311"):
            raise typer.BadParameter("--mqtt must be v5 or v311")
        _tls_files(ca, None, None)
        lookup = None
        if credentials is not None:
            import json

            try:
                table = json.loads(credentials.read_text())
            except (OSError, ValueError) as exc:
                raise typer.BadParameter(f"cannot read {credentials}: {exc}") from None

            def lookup(flag: str, serial: str) -> tuple[str, str]:
                if f"{flag}{serial}" not in table:
                    raise typer.BadParameter(f"no broker password for gateway {flag}{serial} in {credentials}")
                return f"{flag}{serial}", str(table[f"{flag}{serial}"])

        fleet = Fleet(host, port, gateways=gateways, topic_root=topic_root, read_interval_s=read_interval or None,
                      heartbeat_interval_s=heartbeat, data_dir=data_dir, seed=seed, mqtt_protocol=mqtt_protocol,
                      acceleration=acceleration, events=events, broker_credentials=lookup, broker_ca=ca)
        fleet.start()
        meters = sum(len(u.meters) for u in fleet.units)
        typer.echo(f"fleet: {len(fleet.units)} gateways, {meters} meters -> {host}:{port} ({topic_root!r}); "
                   "Ctrl-C stops")
        try:
            _wait(duration)
        finally:
            fleet.stop()
            typer.echo(f"stopped; {len(fleet.injected)} events injected")
