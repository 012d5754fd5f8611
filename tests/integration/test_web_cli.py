"""`osos user create` on a real SQLite data dir, while the web app holds its own engine open (WAL), then the token
endpoint accepts the new account. No default password exists: an empty users table means nobody can log in.

covers HES-56, HES-60, HES-14
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from osos.cli.main import app as cli
from osos.config import Settings
from osos.store.db import make_engine, migrate, sqlite_url
from osos.store.schema import users
from osos.web.app import create_app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("OSOS_DATABASE_URL", raising=False)
    monkeypatch.delenv("OSOS_DATA_DIR", raising=False)
    return tmp_path / "osos-data"


def token_status(client: TestClient, username: str, password: str) -> int:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password}).status_code


def test_user_create_while_the_web_app_runs(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    engine = make_engine(sqlite_url(data_dir))
    migrate(engine)
    with TestClient(create_app(settings, engine)) as client, engine.connect() as reader:
        # a concurrently open read transaction on the same file: WAL lets the CLI write anyway
        reader.execute(text("BEGIN"))
        assert reader.execute(select(users.c.username)).all() == []
        assert token_status(client, "admin", "admin") == 401  # no default account (HES-56)

        result = runner.invoke(cli, ["user", "create", "alice", "--role", "operator", "--password-stdin",
                                     "--data-dir", str(data_dir)], input="Kestrel-window-2026\n")
        assert result.exit_code == 0, result.output
        assert "created user 'alice' with role operator" in result.output
        assert "Kestrel-window-2026" not in result.output  # a given password is never echoed
        reader.execute(text("ROLLBACK"))

        res = client.post("/api/v1/auth/token", json={"username": "alice", "password": "Kestrel-window-2026"})
        assert res.status_code == 200
        bearer = {"Authorization": f"Bearer {res.json()['access_token']}"}
        assert client.get("/api/v1/meters", headers=bearer).json() == []
        assert token_status(client, "alice", "kestrel-window-2026") == 401

        generated = runner.invoke(cli, ["user", "create", "bob", "--role", "viewer", "--data-dir", str(data_dir)])
        assert generated.exit_code == 0, generated.output
        match = re.search(r"password \(shown only now\): (\S+)", generated.output)
        assert match, generated.output
        assert len(match.group(1)) >= 24
        assert token_status(client, "bob", match.group(1)) == 200

    with engine.connect() as conn:
        rows = {r.username: (r.role, r.password_hash) for r in conn.execute(select(users))}
    assert rows["alice"][0] == "operator" and rows["bob"][0] == "viewer"
    assert rows["alice"][1].startswith("scrypt$") and "Kestrel-window-2026" not in rows["alice"][1]
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["carol", "--role", "root", "--password-stdin"], "Copper-field-2026\n", 2, "unknown role 'root'"),
        (["carol", "--role", "viewer", "--password-stdin"], "short\n", 1, "at least 12 characters"),
        (["carol", "--role", "viewer", "--password-stdin"], "\n", 2, "no password on standard input"),
        (["carol", "--role", "viewer", "--password-stdin"], "carol-Carol-2026\n", 1, "must not contain the user name"),
    ],
)
def test_user_create_refuses_bad_input(data_dir: Path, args: list[str], stdin: str, code: int, message: str) -> None:
    result = runner.invoke(cli, ["user", "create", *args, "--data-dir", str(data_dir)], input=stdin)
    assert result.exit_code == code
    assert message in result.output


def test_user_create_refuses_a_duplicate(data_dir: Path) -> None:
    args = ["user", "create", "dave", "--role", "admin", "--password-stdin", "--data-dir", str(data_dir)]
    assert runner.invoke(cli, args, input="Harbor-lamp-2026\n").exit_code == 0
    again = runner.invoke(cli, args, input="Other-secret-2026\n")
    assert again.exit_code == 1 and "user 'dave' already exists" in again.output
