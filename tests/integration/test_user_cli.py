"""`osos user list|disable|enable|delete|set-role|reset-password` run as real processes on a SQLite data dir, and
the one-line refusal of `osos serve` / `osos demo` with a short secret key.

covers HES-56, HES-59, HES-60
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from osos.auth import authenticate
from osos.store.db import make_engine, sqlite_url
from osos.store.schema import log_records, users

PASSWORDS = {"ada": "Harbor-violet-lamp-31", "bob": "Copper-meadow-rain-57"}


def osos(data_dir: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OSOS_")}
    return subprocess.run([sys.executable, "-m", "osos.cli.main", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True, timeout=timeout, env={**clean, **(env or {})})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for name, role in (("ada", "admin"), ("bob", "operator")):
        res = osos(data, "user", "create", name, "--role", role, "--password-stdin", stdin=PASSWORDS[name] + "\n")
        assert res.returncode == 0, res.stderr
    return data


def listed(data_dir: Path) -> dict[str, tuple[str, bool]]:
    res = osos(data_dir, "user", "list", "--json")
    assert res.returncode == 0, res.stderr
    return {u["username"]: (u["role"], u["disabled"]) for u in json.loads(res.stdout)}


def audit(data_dir: Path) -> list[tuple[str, str, str]]:
    engine = make_engine(sqlite_url(data_dir))
    with engine.connect() as conn:
        rows = [(r.detail["actor"], r.detail["target"], r.detail["change"]) for r in conn.execute(
            select(log_records).where(log_records.c.category == "user").order_by(log_records.c.id))]
    engine.dispose()
    return rows


def can_log_in(data_dir: Path, username: str, password: str) -> bool:
    engine = make_engine(sqlite_url(data_dir))
    with engine.connect() as conn:
        ok = authenticate(conn, username, password) is not None
    engine.dispose()
    return ok


def test_user_admin_commands(data_dir: Path) -> None:
    assert listed(data_dir) == {"ada": ("admin", False), "bob": ("operator", False)}
    table = osos(data_dir, "user", "list").stdout
    assert re.search(r"ada\s+admin\s+enabled", table) and re.search(r"bob\s+operator\s+enabled", table)

    assert osos(data_dir, "user", "disable", "bob").returncode == 0
    assert listed(data_dir)["bob"] == ("operator", True)
    assert not can_log_in(data_dir, "bob", PASSWORDS["bob"])
    assert osos(data_dir, "user", "enable", "bob").returncode == 0
    assert can_log_in(data_dir, "bob", PASSWORDS["bob"])

    res = osos(data_dir, "user", "set-role", "bob", "viewer")
    assert res.returncode == 0 and "now has role viewer" in res.stdout
    assert osos(data_dir, "user", "set-role", "bob", "root").returncode == 1

    # reset-password: from stdin (never echoed), or generated and printed once
    res = osos(data_dir, "user", "reset-password", "bob", "--password-stdin", stdin="Lantern-orbit-staple-88\n")
    assert res.returncode == 0 and "Lantern-orbit-staple-88" not in res.stdout + res.stderr
    assert can_log_in(data_dir, "bob", "Lantern-orbit-staple-88") and not can_log_in(data_dir, "bob", PASSWORDS["bob"])
    weak = osos(data_dir, "user", "reset-password", "bob", "--password-stdin", stdin="Password1234\n")
    assert weak.returncode == 1 and "common password" in weak.stderr
    res = osos(data_dir, "user", "reset-password", "bob")
    match = re.search(r"password \(shown only now\): (\S+)", res.stdout)
    assert res.returncode == 0 and match
    assert can_log_in(data_dir, "bob", match.group(1))

    res = osos(data_dir, "user", "delete", "bob", "--yes")
    assert res.returncode == 0 and "deleted user 'bob'" in res.stdout
    assert listed(data_dir) == {"ada": ("admin", False)}
    missing = osos(data_dir, "user", "delete", "bob", "--yes")
    assert missing.returncode == 1 and "no user 'bob'" in missing.stderr

    changes = [(target, change) for _actor, target, change in audit(data_dir)]
    assert changes == [("ada", "created"), ("bob", "created"), ("bob", "disabled"), ("bob", "enabled"),
                       ("bob", "set role"), ("bob", "reset password"), ("bob", "reset password"), ("bob", "deleted")]
    assert all(actor.startswith("cli") for actor, _t, _c in audit(data_dir))


def test_the_last_admin_cannot_be_removed_from_the_cli(data_dir: Path) -> None:
    for args in (("disable", "ada"), ("delete", "ada", "--yes"), ("set-role", "ada", "viewer")):
        res = osos(data_dir, "user", *args)
        assert res.returncode == 1, args
        assert "last enabled admin" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert listed(data_dir)["ada"] == ("admin", False)
    assert osos(data_dir, "user", "set-role", "bob", "admin").returncode == 0
    assert osos(data_dir, "user", "disable", "ada").returncode == 0


def test_deleting_needs_confirmation(data_dir: Path) -> None:
    res = osos(data_dir, "user", "delete", "bob", stdin="n\n")
    assert res.returncode == 1
    assert "bob" in listed(data_dir)


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("problem", ["short env", "empty env", "empty file", "short file"])
def test_a_short_secret_key_refuses_to_start(tmp_path: Path, command: str, problem: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env: dict[str, str] = {}
    if problem == "short env":
        env["OSOS_SECRET_KEY"] = "a"
    elif problem == "empty env":
        env["OSOS_SECRET_KEY"] = ""
    else:
        (data / "secret.key").write_bytes(b"" if problem == "empty file" else b"0123456789abcdef0123456789\n")
    args = [command, "--port", "1"] if command == "serve" else [command, "--port", "1", "--gateways", "0"]
    res = osos(data, *args, env={**env, "OSOS_MQTT_PORT": "1"}, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "at least 32" in lines[0], res.stderr
    assert ("OSOS_SECRET_KEY" in lines[0]) == problem.endswith("env")
    assert not (data / "osos.db").exists()  # refused before anything started


def test_users_table_has_no_plain_passwords(data_dir: Path) -> None:
    engine = make_engine(sqlite_url(data_dir))
    with engine.connect() as conn:
        hashes = [r.password_hash for r in conn.execute(select(users))]
    engine.dispose()
    assert all(h.startswith("scrypt$") for h in hashes)
    assert not any(p in h for h in hashes for p in PASSWORDS.values())
