"""`osos modem add|list|disable|enable|rotate-password`: provisioning, the only way a modem enters the inventory.

``add`` creates the inventory row and the modem's own broker account (dynamic security, see
``osos.headend.provisioning``) and prints the generated password once: OSOS keeps only the username, the broker only
a PBKDF2 hash (HES-4, HES-56). The broker is the one in the settings (``OSOS_MQTT_*``, admin account from
``OSOS_BROKER_ADMIN_PASSWORD(_FILE)``); run against the data dir of an ``osos demo`` it finds the demo's broker
through ``demo.json`` and the admin password the demo keeps beside it.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
from pathlib import Path
from typing import Any

import typer


def settings_for(data_dir: Path | None) -> Any:
    """Settings from the environment; a demo data dir fills in its broker's address, CA and admin password."""
    from osos.config import Settings

    settings = Settings.from_env(data_dir=data_dir)
    demo = settings.data_dir / "demo.json"
    if demo.exists() and "OSOS_MQTT_PORT" not in os.environ:
        broker = json.loads(demo.read_text())["broker"]
        tls = broker.get("tls_port") is not None
        settings = dataclasses.replace(
            settings, mqtt_host=broker["host"], mqtt_port=broker["tls_port"] if tls else broker["plain_port"],
            mqtt_tls=tls, mqtt_ca=Path(broker["ca"]) if broker.get("ca") else None,
            topic_root=broker.get("topic_root", settings.topic_root),
        )
    admin_file = settings.data_dir / "broker" / "admin.password"
    if not settings.broker_admin_password and admin_file.exists():
        settings = dataclasses.replace(settings, broker_admin_password=admin_file.read_text().strip())
    return settings


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    modem_app = typer.Typer(help="Provision modems: inventory row + their own broker account.", no_args_is_help=True)
    data_dir_opt = typer.Option(None, "--data-dir", help="Data directory (default: OSOS_DATA_DIR).")

    def _run(data_dir: Path | None, action: Any) -> Any:
        from osos.headend.inventory import InventoryError
        from osos.headend.provisioning import ProvisioningError, admin_from_settings
        from osos.store.db import make_engine, migrate

        settings = settings_for(data_dir)
        engine = make_engine(settings.db_url)
        try:
            migrate(engine)
            with admin_from_settings(settings) as admin:
                return action(settings, engine, admin)
        except (ProvisioningError, InventoryError) as exc:
            _fail(str(exc))
        finally:
            engine.dispose()

    @modem_app.command("add")
    def add(
        flag: str = typer.Argument(..., help="Flag code (3 letters)."),
        serial: str = typer.Argument(..., help="Serial number."),
        legacy: bool = typer.Option(False, "--legacy", help="Allow the shared MASS topics (devices that cannot use "
                                                            "per-device topics); the header must still match."),
        client_id: str | None = typer.Option(None, "--client-id", help="Bind the account to this MQTT client id "
                                                                        "(then no other device can take over "
                                                                        "its session); OSOS gateways: osos-gw-…"),
        data_dir: Path | None = data_dir_opt,
    ) -> None:
        """Add a modem and print its broker username and password (shown only this once)."""
        from osos.headend.provisioning import provision_modem
        from osos.protocols import mass
        from osos.store.db import utcnow

        creds = _run(data_dir, lambda s, engine, admin: provision_modem(
            engine, admin, mass.Topics(s.topic_root), flag, serial, legacy=legacy, by=f"cli:{getpass.getuser()}",
            now=utcnow(), client_id=client_id))
        typer.echo(f"modem {flag}{serial} provisioned{' (legacy shared topics)' if legacy else ''}")
        typer.echo(f"broker username: {creds.username}")
        typer.echo(f"broker password (shown only now): {creds.password}")

    @modem_app.command("list")
    def list_cmd(data_dir: Path | None = data_dir_opt) -> None:
        """Modems with their status, topic style and broker username."""
        from sqlalchemy import select

        from osos.store.db import make_engine, migrate
        from osos.store.schema import modems

        settings = settings_for(data_dir)
        engine = make_engine(settings.db_url)
        try:
            migrate(engine)
            with engine.connect() as conn:
                rows = conn.execute(select(modems).order_by(modems.c.flag, modems.c.serial)).mappings().all()
        finally:
            engine.dispose()
        typer.echo(f"{'modem':<24} {'status':<9} {'topics':<7} {'transport':<9} {'username':<24} provisioned")
        for r in rows:
            when = r["provisioned_at"].isoformat(timespec="seconds") if r["provisioned_at"] else "-"
            typer.echo(f"{r['flag'] + r['serial']:<24} {r['status']:<9} {r['topic_style']:<7} "
                       f"{r['transport'] or '-':<9} {r['mqtt_username'] or '-':<24} {when} {r['provisioned_by'] or ''}")

    def _toggle(flag: str, serial: str, enabled: bool, data_dir: Path | None) -> None:
        from osos.headend.provisioning import set_modem_enabled
        from osos.store.db import utcnow

        _run(data_dir, lambda s, engine, admin: set_modem_enabled(
            engine, admin, flag, serial, enabled, by=f"cli:{getpass.getuser()}", now=utcnow()))
        typer.echo(f"modem {flag}{serial} {'enabled' if enabled else 'disabled'}")

    @modem_app.command("disable")
    def disable(flag: str = typer.Argument(...), serial: str = typer.Argument(...),
                data_dir: Path | None = data_dir_opt) -> None:
        """Disable a modem: status disabled, its broker account disabled and its live session dropped."""
        _toggle(flag, serial, False, data_dir)

    @modem_app.command("enable")
    def enable(flag: str = typer.Argument(...), serial: str = typer.Argument(...),
               data_dir: Path | None = data_dir_opt) -> None:
        """Enable a disabled modem again."""
        _toggle(flag, serial, True, data_dir)

    @modem_app.command("rotate-password")
    def rotate(flag: str = typer.Argument(...), serial: str = typer.Argument(...),
               data_dir: Path | None = data_dir_opt) -> None:
        """Issue a new broker password (printed once); the old one stops working at once."""
        from osos.headend.provisioning import rotate_modem_password
        from osos.store.db import utcnow

        creds = _run(data_dir, lambda s, engine, admin: rotate_modem_password(
            engine, admin, flag, serial, by=f"cli:{getpass.getuser()}", now=utcnow()))
        typer.echo(f"broker username: {creds.username}")
        typer.echo(f"broker password (shown only now): {creds.password}")

    app.add_typer(modem_app, name="modem")
