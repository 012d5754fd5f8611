"""`osos logs categories|purge`: the HES-59 log categories with their retention, and the retention job on demand
(the head-end also runs it every hour)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

DATA_DIR_HELP = "Data directory (default: OSOS_DATA_DIR)."


def register(app: typer.Typer) -> None:
    logs_app = typer.Typer(help="Head-end log records: categories and retention (HES-59).", no_args_is_help=True)

    @logs_app.command("categories")
    def categories_cmd() -> None:
        """Each spec category, its retention in days and the stored category names it covers."""
        from osos.headend.logs import categories

        for cat in categories().values():
            typer.echo(f"{cat.name:20} {cat.retention_days:3} days  {', '.join(cat.stored):14} {cat.en}")

    @logs_app.command("purge")
    def purge_cmd(
        now: str | None = typer.Option(None, "--now", help="Purge as of this ISO 8601 time (default: now)."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """Delete log records older than their category's retention; prints the counts as JSON."""
        from osos.config import Settings
        from osos.headend.logs import purge
        from osos.store.db import make_engine, migrate, utcnow

        try:
            at = datetime.fromisoformat(now) if now else utcnow()
        except ValueError:
            typer.echo(f"error: --now {now!r} is not an ISO 8601 time", err=True)
            raise typer.Exit(2) from None
        engine = make_engine(Settings.from_env(data_dir=data_dir).db_url)
        try:
            migrate(engine)
            with engine.begin() as conn:
                deleted = purge(conn, at)
        finally:
            engine.dispose()
        typer.echo(json.dumps(deleted, sort_keys=True))

    app.add_typer(logs_app, name="logs")
