"""`osos user create`: the only way to make an account - there is no default user or password (HES-56, HES-60).

With ``--password-stdin`` the password is read from standard input (first line), so it never shows in the process
list or shell history; without it a strong random password is generated and printed once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    user_app = typer.Typer(help="Manage web/API users.", no_args_is_help=True)

    @user_app.command("create")
    def create(
        username: str = typer.Argument(..., help="Login name (1-64 characters, no spaces)."),
        role: str = typer.Option(..., "--role", help="admin, operator or viewer."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default: OSOS_DATA_DIR)."),
    ) -> None:
        """Create a user; prints a generated password once unless --password-stdin is given."""
        from osos.auth import ROLES, AuthError, create_user, generate_password
        from osos.config import Settings
        from osos.store.db import make_engine, migrate, utcnow

        if role not in ROLES:
            typer.echo(f"error: unknown role {role!r}; known: {', '.join(ROLES)}", err=True)
            raise typer.Exit(2)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                typer.echo("error: no password on standard input", err=True)
                raise typer.Exit(2)
        else:
            password = generate_password()
        settings = Settings.from_env(data_dir=data_dir)
        engine = make_engine(settings.db_url)
        try:
            migrate(engine)
            with engine.begin() as conn:
                create_user(conn, username, password, role, now=utcnow())
        except AuthError as exc:
            typer.echo(f"error: {exc.reason}", err=True)
            raise typer.Exit(1) from None
        finally:
            engine.dispose()
        typer.echo(f"created user {username!r} with role {role}")
        if not password_stdin:
            typer.echo(f"password (shown only now): {password}")

    app.add_typer(user_app, name="user")
