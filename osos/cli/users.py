"""`osos user create|list|disable|enable|delete|set-role|reset-password`: accounts from the command line - there is
no default user or password (HES-56, HES-60).

With ``--password-stdin`` a password is read from standard input (first line), so it never shows in the process
list or shell history; without it a strong random password is generated and printed once. Every change is audited
(a log_records row of category "user", HES-59) with the actor ``cli:<login name>``; the last enabled admin can be
neither disabled, deleted nor demoted.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
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
def _store(data_dir: Path | None) -> Iterator[Any]:
    """A migrated engine on the configured database; AuthError becomes a one-line error and exit code 1."""
    from osos.auth import AuthError
    from osos.config import Settings
    from osos.store.db import make_engine, migrate

    settings = Settings.from_env(data_dir=data_dir)
    engine = make_engine(settings.db_url)
    try:
        migrate(engine)
        yield engine
    except AuthError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _read_password(password_stdin: bool) -> tuple[str, bool]:
    """(password, generated?)"""
    from osos.auth import generate_password

    if not password_stdin:
        return generate_password(), True
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        typer.echo("error: no password on standard input", err=True)
        raise typer.Exit(2)
    return password, False


def register(app: typer.Typer) -> None:
    user_app = typer.Typer(help="Manage web/API users.", no_args_is_help=True)

    @user_app.command("create")
    def create(
        username: str = typer.Argument(..., help="Login name (1-64 characters, no spaces)."),
        role: str = typer.Option(..., "--role", help="admin, operator or viewer."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """Create a user; prints a generated password once unless --password-stdin is given."""
        from osos.auth import ROLES, create_user
        from osos.store.db import utcnow

        if role not in ROLES:
            typer.echo(f"error: unknown role {role!r}; known: {', '.join(ROLES)}", err=True)
            raise typer.Exit(2)
        password, generated = _read_password(password_stdin)
        with _store(data_dir) as engine, engine.begin() as conn:
            create_user(conn, username, password, role, now=utcnow(), actor=_actor())
        typer.echo(f"created user {username!r} with role {role}")
        if generated:
            typer.echo(f"password (shown only now): {password}")

    @user_app.command("list")
    def list_cmd(
        as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """List users: id, name, role, enabled or disabled."""
        from osos.auth import list_users

        with _store(data_dir) as engine, engine.connect() as conn:
            rows = list_users(conn)
        if as_json:
            typer.echo(json.dumps([{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                                   for r in rows]))
            return
        typer.echo(f"{'id':>5}  {'user':<24} {'role':<9} state")
        for r in rows:
            typer.echo(f"{r['id']:>5}  {r['username']:<24} {r['role']:<9} {'disabled' if r['disabled'] else 'enabled'}")

    def _change(name: str, help_text: str, apply: Callable[[Any, str, str, Any], str]) -> None:
        def command(
            username: str = typer.Argument(..., help="Login name."),
            data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
        ) -> None:
            from osos.store.db import utcnow

            with _store(data_dir) as engine, engine.begin() as conn:
                message = apply(conn, username, _actor(), utcnow())
            typer.echo(message)

        command.__doc__ = help_text
        user_app.command(name)(command)

    def _disable(conn: Any, username: str, actor: str, now: Any) -> str:
        from osos.auth import set_disabled

        set_disabled(conn, username, True, actor=actor, now=now)
        return f"disabled user {username!r} (its sessions have ended)"

    def _enable(conn: Any, username: str, actor: str, now: Any) -> str:
        from osos.auth import set_disabled

        set_disabled(conn, username, False, actor=actor, now=now)
        return f"enabled user {username!r}"

    _change("disable", "Disable a user and end its sessions (not the last enabled admin).", _disable)
    _change("enable", "Enable a disabled user.", _enable)

    @user_app.command("delete")
    def delete_cmd(
        username: str = typer.Argument(..., help="Login name."),
        yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """Delete a user (not the last enabled admin); its tokens stop working."""
        from osos.auth import delete_user
        from osos.store.db import utcnow

        if not yes and not typer.confirm(f"delete user {username!r}?"):
            raise typer.Exit(1)
        with _store(data_dir) as engine, engine.begin() as conn:
            delete_user(conn, username, actor=_actor(), now=utcnow())
        typer.echo(f"deleted user {username!r}")

    @user_app.command("set-role")
    def set_role_cmd(
        username: str = typer.Argument(..., help="Login name."),
        role: str = typer.Argument(..., help="admin, operator or viewer."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """Change a user's role (not demoting the last enabled admin)."""
        from osos.auth import set_role
        from osos.store.db import utcnow

        with _store(data_dir) as engine, engine.begin() as conn:
            set_role(conn, username, role, actor=_actor(), now=utcnow())
        typer.echo(f"user {username!r} now has role {role}")

    @user_app.command("reset-password")
    def reset_password_cmd(
        username: str = typer.Argument(..., help="Login name."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from stdin."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        """Set a new password and end the user's sessions; prints a generated one once unless --password-stdin."""
        from osos.auth import set_password
        from osos.store.db import utcnow

        password, generated = _read_password(password_stdin)
        with _store(data_dir) as engine, engine.begin() as conn:
            set_password(conn, username, password, actor=_actor(), now=utcnow())
        typer.echo(f"password of {username!r} changed; its sessions have ended")
        if generated:
            typer.echo(f"password (shown only now): {password}")

    app.add_typer(user_app, name="user")
