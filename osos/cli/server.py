"""`osos demo`, `osos serve`, `osos headend`, `osos migrate`: the long-running jobs."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger("osos")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("uvicorn.access", "transitions", "pymodbus", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run_web(app: Any, host: str, port: int, stop: threading.Event) -> None:
    """Serve the web app until ``stop`` is set (uvicorn in this thread; signals are handled by us)."""
    import uvicorn

    # proxy_headers=False: the app decides the client address (osos.web.middleware.ClientAddress, trusted proxies)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    watcher = threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True)
    watcher.start()
    server.run()


def _safe_settings(**overrides: Any) -> Any:
    """Settings from the environment, refusing to start on an unsafe one (a secret key under 32 bytes, a bad
    OSOS_TRUSTED_PROXIES): one line saying what to do, exit code 2. Creates the data dir 0700."""
    from osos.config import ConfigError, Settings

    try:
        settings = Settings.from_env(**overrides)
        settings.ensure_data_dir()
        settings.secret_key()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _start_headend(settings: Any) -> tuple[Any, Any, threading.Event]:
    """Migrate the store, start one head-end worker, and return (engine, head-end, stop event set by signals)."""
    from osos.headend.service import HeadEnd
    from osos.store.db import make_engine, migrate

    engine = make_engine(settings.db_url)
    migrate(engine)
    stop = threading.Event()
    _stop_on_signals(stop)
    headend = HeadEnd(settings, engine)
    headend.start()
    return engine, headend, stop


def ensure_first_admin(engine: Any) -> tuple[str, str] | None:
    """The demo's first login: a generated password shown once, never a default one (HES-56)."""
    from sqlalchemy import func, select

    from osos.auth import create_user, generate_password
    from osos.store.db import utcnow
    from osos.store.schema import users

    with engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar_one() > 0:
            return None
        password = generate_password()
        create_user(conn, "admin", password, role="admin", now=utcnow())
    return "admin", password


def register(app: typer.Typer) -> None:
    @app.command("migrate")
    def migrate_cmd(
        data_dir: Path | None = typer.Option(None, help="Data directory (SQLite lives here unless OSOS_DATABASE_URL)."),
    ) -> None:
        """Create or upgrade the database schema to the newest revision."""
        from osos.config import Settings
        from osos.store.db import current_revision, make_engine, migrate

        settings = Settings.from_env(data_dir=data_dir)
        engine = make_engine(settings.db_url)
        migrate(engine)
        typer.echo(f"schema at revision {current_revision(engine)}")

    @app.command("headend")
    def headend_cmd(
        data_dir: Path | None = typer.Option(None, help="Data directory."),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Run one head-end worker (ingest + dispatcher) against the configured broker and database.
        Start several with OSOS_SHARE_GROUP set to share the uplink (MQTT 5 shared subscriptions)."""
        from osos.config import Settings

        _setup_logging(verbose)
        settings = Settings.from_env(data_dir=data_dir)
        _engine, headend, stop = _start_headend(settings)
        scheme = "mqtts" if settings.mqtt_tls or settings.mqtt_ca else "mqtt"
        typer.echo(f"head-end {settings.headend_id} on {scheme}://{settings.mqtt_host}:{settings.mqtt_port}")
        stop.wait()
        headend.stop()

    @app.command("serve")
    def serve_cmd(
        port: int | None = typer.Option(None, help="Web port (default OSOS_WEB_PORT or 8000)."),
        host: str | None = typer.Option(None, help="Web bind address (default 127.0.0.1)."),
        data_dir: Path | None = typer.Option(None, help="Data directory."),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Run the head-end and the web UI/API against the configured broker and database."""
        from osos.web.app import create_app

        _setup_logging(verbose)
        settings = _safe_settings(data_dir=data_dir, web_port=port, web_host=host)
        engine, headend, stop = _start_headend(settings)
        typer.echo(f"OSOS web on http://{settings.web_host}:{settings.web_port}")
        try:
            _run_web(create_app(settings, engine), settings.web_host, settings.web_port, stop)
        finally:
            headend.stop()

    @app.command("demo")
    def demo_cmd(
        port: int = typer.Option(8000, help="Web port."),
        data_dir: Path = typer.Option(Path("./var/demo"), help="Where the demo keeps its SQLite file and logs."),
        gateways: int = typer.Option(10, help="Simulated gateways (each with 1-4 meters)."),
        read_interval: float = typer.Option(20.0, help="Seconds between the gateways' periodic reads."),
        tls: bool = typer.Option(True, "--tls/--no-tls", help="Broker TLS listener (private CA) for head-end and "
                                                             "gateways, beside a plain one (HES-52..55)."),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Everything on one machine: a private Mosquitto (authentication on, TLS by default), the head-end, the web
        and a simulated fleet whose gateways are provisioned like real modems (own broker accounts)."""
        from osos.field.fleet import Fleet
        from osos.headend.broker import BrokerError, read_or_create_secret, start_mosquitto
        from osos.headend.provisioning import HEADEND_ROLE
        from osos.protocols import mass
        from osos.web.app import create_app

        _setup_logging(verbose)
        data_dir = data_dir.resolve()
        settings = _safe_settings(data_dir=data_dir, web_port=port, web_host="127.0.0.1")  # data dir 0700
        try:
            local = start_mosquitto(data_dir / "broker", tls=tls)
        except BrokerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        try:
            topics = mass.Topics(settings.topic_root)
            headend_password = read_or_create_secret(local.data_dir / "headend.password")
            with local.admin() as admin:
                admin.ensure_headend(topics, HEADEND_ROLE, headend_password)
            settings = dataclasses.replace(
                settings, database_url=None, share_group="",  # the demo is self-contained
                mqtt_host=local.host, mqtt_port=local.port, mqtt_username=HEADEND_ROLE,
                mqtt_password=headend_password, mqtt_tls=tls, mqtt_ca=local.ca, mqtt_cert=None, mqtt_key=None,
                broker_admin_username=local.admin_username, broker_admin_password=local.admin_password,
                device_tls=tls,
            )
            listeners = f"plain {local.plain_port}" + (f", TLS {local.tls_port} (CA {local.ca})" if tls else "")
            typer.echo(f"broker: mosquitto on {local.host}: {listeners}; anonymous clients refused")
            engine, headend, stop = _start_headend(settings)
        except BaseException:
            local.stop()
            raise
        first = ensure_first_admin(engine)
        fleet = Fleet(
            local.host,
            local.port,  # the TLS listener when on: gateways verify the broker with the demo's CA
            gateways=gateways,
            topic_root=settings.topic_root,
            read_interval_s=read_interval,
            heartbeat_interval_s=30,
            data_dir=data_dir / "fleet",
            seed=1,
            broker_ca=local.ca,
        )
        try:
            with local.admin() as admin:  # provision the fleet's gateways before any of them connects (HES-4)
                fleet.broker_credentials = fleet_credentials(engine, admin, topics, data_dir / "fleet")
                fleet.build()
            fleet.start()
            write_demo_json(data_dir, port, local, settings.topic_root)
        except BaseException:
            fleet.stop()
            headend.stop()
            local.stop()
            raise
        typer.echo(f"OSOS demo: http://127.0.0.1:{port}  (database {settings.db_url})")
        if first:
            typer.echo(f"first login: user {first[0]!r}, password {first[1]!r}")
            typer.echo("(the password is shown only this once; `osos user create` adds more users)")
        try:
            _run_web(create_app(settings, engine), "127.0.0.1", port, stop)
        finally:
            typer.echo("stopping demo")
            fleet.stop()
            headend.stop()
            local.stop()


def _write_private_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def fleet_credentials(engine: Any, admin: Any, topics: Any, fleet_dir: Path) -> Any:
    """The demo's gateways as provisioned modems: inventory row and broker account made on first start, the
    password kept in the gateway's own data dir (0600) and reused on restart, as a real modem keeps it."""
    from osos.field.gateway import gateway_client_id
    from osos.headend.inventory import InventoryError
    from osos.headend.provisioning import provision_modem, rotate_modem_password
    from osos.store.db import utcnow

    def get(flag: str, serial: str) -> tuple[str, str]:
        path = fleet_dir / f"{flag}{serial}" / "broker-credentials.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return str(saved["username"]), str(saved["password"])
        try:  # bound to the gateway's client id: no other account can take over its session
            creds = provision_modem(engine, admin, topics, flag, serial, by="demo", now=utcnow(),
                                    client_id=gateway_client_id(flag, serial, topics.root))
        except InventoryError:  # already provisioned but the gateway's data dir was removed: a new password
            creds = rotate_modem_password(engine, admin, flag, serial, by="demo", now=utcnow())
        os.makedirs(path.parent, mode=0o700, exist_ok=True)
        _write_private_json(path, {"username": creds.username, "password": creds.password})
        return creds.username, creds.password

    return get


def write_demo_json(data_dir: Path, web_port: int, local: Any, topic_root: str) -> None:
    """``<data-dir>/demo.json``: where tools and tests find the demo (no secret in it)."""
    info = {
        "web_url": f"http://127.0.0.1:{web_port}",
        "broker": {
            "host": local.host,
            "plain_port": local.plain_port,
            "tls_port": local.tls_port,
            "ca": str(local.ca) if local.ca else None,
            "plain_mount_point": "plain/" if local.tls else None,
            "topic_root": topic_root,
        },
    }
    tmp = data_dir / "demo.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, data_dir / "demo.json")
