"""`osos schedule add|list|remove|tag`: recurring orders for a device group from the command line (HES-10).

A schedule runs in every head-end process's scheduler thread (``osos.headend.scheduler``); times are in the
configured time zone (``OSOS_TIMEZONE``, default Europe/Istanbul). ``tag`` sets a meter's tags, which groups can
select by (``--tag``).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

DATA_DIR_HELP = "Data directory (default: OSOS_DATA_DIR)."


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"


@contextmanager
def _store(data_dir: Path | None) -> Iterator[tuple[Any, Any]]:
    """(settings, migrated engine); a ScheduleError/GroupError becomes a one-line error and exit code 1."""
    from osos.config import Settings
    from osos.headend.groups import GroupError
    from osos.headend.scheduler import ScheduleError
    from osos.store.db import make_engine, migrate

    settings = Settings.from_env(data_dir=data_dir)
    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
        yield settings, engine
    except (ScheduleError, GroupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _modem_ref(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def register(app: typer.Typer) -> None:
    schedule_app = typer.Typer(help="Recurring orders for a device group (HES-10).", no_args_is_help=True)
    data_dir_opt = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)

    @schedule_app.command("add")
    def add(
        name: str = typer.Argument(..., help="Unique name."),
        kind: str = typer.Option("read", "--kind", help="Order kind (one that needs no request, e.g. read)."),
        cron: str | None = typer.Option(None, "--cron", help="5-field cron, e.g. '0 2 * * *' (local time)."),
        every: int | None = typer.Option(None, "--every", help="Instead of --cron: every N minutes from local "
                                                                "midnight (N divides 1440)."),
        modem: list[str] = typer.Option([], "--modem", help="Modem id or serial (repeatable)."),
        tag: list[str] = typer.Option([], "--tag", help="Meter tag (repeatable; any of them)."),
        meter_kind: str | None = typer.Option(None, "--meter-kind", help="Meter kind, e.g. three-phase."),
        brand: str | None = typer.Option(None, "--brand", help="Meter brand (flag), e.g. MKL."),
        priority: int = typer.Option(5, "--priority", help="Order priority 0..9 (9 the most urgent)."),
        as_json: bool = typer.Option(False, "--json", help="Print the schedule as JSON."),
        data_dir: Path | None = data_dir_opt,
    ) -> None:
        """Add a schedule; with no --modem/--tag/--meter-kind/--brand it covers every meter."""
        from osos.headend.scheduler import add_schedule

        group: dict[str, Any] = {}
        if modem:
            group["modems"] = [_modem_ref(m) for m in modem]
        if tag:
            group["tags"] = tag
        if meter_kind:
            group["kind"] = meter_kind
        if brand:
            group["brand"] = brand
        with _store(data_dir) as (settings, engine), engine.begin() as conn:
            made = add_schedule(conn, name=name, kind=kind, cron=cron, every_minutes=every, group=group,
                                priority=priority, created_by=_actor(), tz=settings.timezone)
        if as_json:
            typer.echo(json.dumps(made))
        else:
            typer.echo(f"schedule {made['id']} {made['name']!r}: next run {made['next_run_at']}")

    @schedule_app.command("list")
    def list_(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        data_dir: Path | None = data_dir_opt,
    ) -> None:
        """List schedules with their next run (UTC)."""
        from osos.headend.scheduler import list_schedules

        with _store(data_dir) as (_, engine), engine.connect() as conn:
            found = list_schedules(conn)
        if as_json:
            typer.echo(json.dumps(found))
            return
        for s in found:
            when = s["cron"] if s["cron"] else f"every {s['every_minutes']} min"
            state = "" if s["enabled"] else " (disabled)"
            typer.echo(f"{s['id']:>4}  {s['name']:<24} {s['kind']:<12} {when:<18} prio {s['priority']}  "
                       f"next {s['next_run_at']}  group {json.dumps(s['group'])}{state}")

    @schedule_app.command("remove")
    def remove(
        ref: str = typer.Argument(..., help="Schedule id or name."),
        data_dir: Path | None = data_dir_opt,
    ) -> None:
        """Remove a schedule (orders it already queued stay)."""
        from osos.headend.scheduler import remove_schedule

        with _store(data_dir) as (_, engine), engine.begin() as conn:
            removed = remove_schedule(conn, ref) or (ref.isdigit() and remove_schedule(conn, int(ref)))
        if not removed:
            typer.echo(f"error: no schedule {ref!r}", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed schedule {ref}")

    @schedule_app.command("tag")
    def tag_(
        meter: int = typer.Argument(..., help="Meter id."),
        tags: list[str] = typer.Argument(None, help="Tags (none: remove all)."),
        data_dir: Path | None = data_dir_opt,
    ) -> None:
        """Set a meter's tags (replacing the ones it had)."""
        from osos.headend.groups import set_tags

        with _store(data_dir) as (_, engine), engine.begin() as conn:
            now = set_tags(conn, meter, tags or [])
        typer.echo(f"meter {meter}: {', '.join(now) or 'no tags'}")

    app.add_typer(schedule_app, name="schedule")
