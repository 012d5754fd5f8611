"""`osos demo`, `osos serve`, `osos headend`, `osos migrate`: the long-running jobs."""

from __future__ import annotations

import dataclasses
import logging
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
    for noisy in ("uvicorn.access", "amqtt", "transitions", "pymodbus", "alembic"):
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


def _start_headend(settings: Any, protocol: str = "v5") -> tuple[Any, Any, threading.Event]:
    """Migrate the store, start one head-end worker, and return (engine, head-end, stop event set by signals)."""
    from osos.headend.service import HeadEnd
    from osos.store.db import make_engine, migrate

    engine = make_engine(settings.db_url)
    migrate(engine)
    stop = threading.Event()
    _stop_on_signals(stop)
    headend = HeadEnd(settings, engine, protocol=protocol)
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
        typer.echo(f"head-end {settings.headend_id} on mqtt://{settings.mqtt_host}:{settings.mqtt_port}")
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
        broker: str = typer.Option("auto", help="auto | mosquitto | embedded"),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """Everything on one machine with no external services: broker, head-end, web and a simulated fleet."""
        from osos.config import Settings
        from osos.field.fleet import Fleet
        from osos.headend.broker import start_local_broker
        from osos.headend.inventory import ensure_modem
        from osos.store.db import utcnow
        from osos.web.app import create_app

        _setup_logging(verbose)
        data_dir = data_dir.resolve()
        _safe_settings(data_dir=data_dir)
        local = start_local_broker(data_dir, prefer="amqtt" if broker == "embedded" else broker)
        typer.echo(f"broker: {local.kind} on {local.host}:{local.port} (MQTT {local.protocol})")
        settings = Settings.from_env(
            data_dir=data_dir, mqtt_host=local.host, mqtt_port=local.port, web_port=port, web_host="127.0.0.1"
        )
        settings = dataclasses.replace(settings, database_url=None, share_group="")  # the demo is self-contained
        engine, headend, stop = _start_headend(settings, protocol=local.protocol)
        first = ensure_first_admin(engine)
        fleet = Fleet(
            local.host,
            local.port,
            gateways=gateways,
            topic_root=settings.topic_root,
            read_interval_s=read_interval,
            heartbeat_interval_s=30,
            data_dir=data_dir / "fleet",
            seed=1,
            mqtt_protocol=local.protocol,
        )
        fleet.build()
        with engine.begin() as conn:  # ingest refuses unknown devices (issue 7): the demo provisions its own fleet
            for unit in fleet.units:
                ensure_modem(conn, unit.gateway.device.flag, unit.gateway.device.serial, by="demo", now=utcnow())
        fleet.start()
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
