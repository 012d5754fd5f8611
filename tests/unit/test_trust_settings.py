"""Settings and edge pieces of the web trust boundary: secret key length, private files, trusted proxies, the
X-Forwarded-For resolution, and the per-client counting of security rejections.

covers HES-6, HES-56, HES-59
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from osos.config import ConfigError, Settings, parse_networks
from osos.store.db import make_engine, migrate
from osos.web.middleware import ClientAddress
from osos.web.security import RejectionCounter

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files used to come out 0644 and directories 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSOS_SECRET_KEY", raising=False)


# ------------------------------------------------------------------------------------------ files (HES-59)


def test_data_dir_database_and_key_are_private(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    engine = make_engine(settings.db_url)
    migrate(engine)
    key = settings.secret_key()
    assert len(key) >= 32
    with engine.connect() as conn:  # an open WAL connection: -wal and -shm exist now
        conn.execute(text("SELECT 1"))
        companions = [data / "osos.db-wal", data / "osos.db-shm"]
        assert all(p.exists() for p in companions)
        assert [mode(p) for p in companions] == [0o600, 0o600]
    assert mode(data) == 0o700
    assert mode(data / "osos.db") == 0o600
    assert mode(data / "secret.key") == 0o600
    engine.dispose()


def test_existing_loose_files_are_tightened(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    db = data / "osos.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    engine.dispose()
    key = data / "secret.key"
    key.write_bytes(b"k" * 40)
    for path in (db, key):
        os.chmod(path, 0o644)
    assert mode(db) == 0o644 and mode(data) == 0o755
    settings = Settings(data_dir=data)
    engine = make_engine(settings.db_url)
    assert settings.secret_key() == b"k" * 40
    assert (mode(data), mode(db), mode(key)) == (0o700, 0o600, 0o600)
    engine.dispose()


# ------------------------------------------------------------------------------------- secret key (HES-56)


@pytest.mark.parametrize("content", [b"", b"\n", b"short", b"x" * 31 + b"\n"])
def test_short_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    tmp_path.joinpath("secret.key").write_bytes(content)
    with pytest.raises(ConfigError, match="holds .* bytes, at least 32 are needed; delete it"):
        Settings(data_dir=tmp_path).secret_key()


@pytest.mark.parametrize("value", ["", "a", "x" * 31])
def test_short_env_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OSOS_SECRET_KEY", value)
    with pytest.raises(ConfigError, match="OSOS_SECRET_KEY has .* at least 32"):
        Settings(data_dir=tmp_path).secret_key()


def test_keys_of_32_bytes_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path.joinpath("secret.key").write_bytes(b"y" * 32 + b"\n")
    assert Settings(data_dir=tmp_path).secret_key() == b"y" * 32
    monkeypatch.setenv("OSOS_SECRET_KEY", "z" * 32)
    assert Settings(data_dir=tmp_path).secret_key() == b"z" * 32


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSOS_TRUSTED_PROXIES", " 10.0.0.5, 192.168.0.0/24,::1 ")
    monkeypatch.setenv("OSOS_MAX_BODY_BYTES", "2048")
    s = Settings.from_env()
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.5/32", "192.168.0.0/24", "::1/128"]
    assert s.max_body_bytes == 2048
    monkeypatch.delenv("OSOS_TRUSTED_PROXIES")
    monkeypatch.delenv("OSOS_MAX_BODY_BYTES")
    s = Settings.from_env()
    assert s.trusted_proxies == () and s.max_body_bytes == 1024 * 1024  # defaults: no proxy, 1 MiB
    for name, bad in (("OSOS_TRUSTED_PROXIES", "10.0.0.300"), ("OSOS_TRUSTED_PROXIES", "proxy.local"),
                      ("OSOS_MAX_BODY_BYTES", "0"), ("OSOS_MAX_BODY_BYTES", "1MB")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=name):
            Settings.from_env()
        monkeypatch.delenv(name)


# ------------------------------------------------------------------------------------ X-Forwarded-For (HES-6)


def resolve(peer: str, trusted: str, headers: dict[str, str]) -> tuple[str, str]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": "http", "client": (peer, 5555), "scheme": "http",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(ClientAddress(app, parse_networks(trusted))(scope, None, None))  # type: ignore[arg-type]
    return seen["client"][0], seen["scheme"]


@pytest.mark.parametrize(
    ("peer", "trusted", "xff", "expected"),
    [
        ("127.0.0.1", "", "203.0.113.1", "127.0.0.1"),  # no trusted proxy: the header is ignored
        ("192.0.2.50", "127.0.0.1", "203.0.113.1", "192.0.2.50"),  # the peer is not the proxy
        ("127.0.0.1", "127.0.0.1", "203.0.113.1", "203.0.113.1"),
        ("127.0.0.1", "127.0.0.1", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # a prepended forgery is ignored
        ("10.0.0.2", "10.0.0.0/8", "203.0.113.1, 10.0.0.7", "203.0.113.1"),  # two proxy hops
        ("10.0.0.2", "10.0.0.0/8", "10.0.0.9, 10.0.0.7", "10.0.0.9"),  # all trusted: the leftmost
        ("10.0.0.2", "10.0.0.0/8", "junk, 203.0.113.1", "203.0.113.1"),
        ("10.0.0.2", "10.0.0.0/8", "203.0.113.1, junk", "10.0.0.2"),  # garbage from our proxy: keep the peer
        ("::1", "::1", "2001:db8::5", "2001:db8::5"),
        ("::1", "::1", "[2001:db8::5]:443", "2001:db8::5"),
        ("127.0.0.1", "127.0.0.1", "198.51.100.4:8080", "198.51.100.4"),
        ("testclient", "127.0.0.1", "203.0.113.1", "testclient"),  # not an address: never trusted
    ],
)
def test_forwarded_for_resolution(peer: str, trusted: str, xff: str, expected: str) -> None:
    assert resolve(peer, trusted, {"X-Forwarded-For": xff})[0] == expected


def test_forwarded_proto_only_from_a_trusted_proxy() -> None:
    headers = {"X-Forwarded-For": "203.0.113.1", "X-Forwarded-Proto": "https"}
    assert resolve("127.0.0.1", "127.0.0.1", headers) == ("203.0.113.1", "https")
    assert resolve("127.0.0.1", "", headers) == ("127.0.0.1", "http")


# ------------------------------------------------------------------------------ counted rejections (HES-59)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rejections_are_written_once_per_client_and_window() -> None:
    clock = Clock()
    counter = RejectionCounter(window_s=60, clock=clock)
    first = counter.note("rejected token", "198.51.100.1", "malformed token", at=AT)
    assert [(r.count, r.message) for r in first] == [(1, "1 rejected token from 198.51.100.1")]
    written = list(first)
    for _ in range(499):  # the rest of the first window: counted only
        clock.t += 0.1
        assert counter.note("rejected token", "198.51.100.1", "invalid token signature", at=AT) == []
    assert counter.note("rejected token", "198.51.100.2", "malformed token", at=AT)[0].client == "198.51.100.2"
    clock.t += 60  # the window is over: the next event writes the 499 counted ones
    rows = counter.note("rejected token", "198.51.100.1", "malformed token", at=AT)
    assert [(r.client, r.count) for r in rows] == [("198.51.100.1", 499)]
    assert rows[0].message == "499 rejected tokens from 198.51.100.1"
    assert rows[0].detail["reasons"] == {"invalid token signature": 499}
    written += rows
    written += counter.flush(everything=True)  # shutdown: the one counted in the new window
    per_client: dict[str, int] = {}
    for r in written:
        per_client[r.client] = per_client.get(r.client, 0) + r.count
    assert per_client == {"198.51.100.1": 501}
    assert counter.flush(everything=True) == []


def test_a_quiet_window_is_forgotten_and_flush_writes_ended_windows() -> None:
    clock = Clock()
    counter = RejectionCounter(window_s=60, clock=clock)
    counter.note("rejected token", "a", "r", at=AT)
    counter.note("rejected token", "a", "r", at=AT)
    assert counter.flush() == []  # the window is still open
    clock.t += 61
    assert [(r.client, r.count) for r in counter.flush()] == [("a", 1)]
    clock.t += 61
    assert counter.flush() == []  # nothing counted in the next window: the client is quiet again
    assert counter.note("rejected token", "a", "r", at=AT)[0].count == 1  # written at once


def test_many_clients_share_one_bucket_beyond_the_limit() -> None:
    counter = RejectionCounter(window_s=60, max_keys=3, clock=Clock())
    immediate = [counter.note("rejected token", f"c{i}", "r", at=AT) for i in range(10)]
    assert [rows[0].client for rows in immediate if rows] == ["c0", "c1", "c2", RejectionCounter.OVERFLOW]
    rows = counter.flush(everything=True)
    assert [(r.client, r.count) for r in rows] == [(RejectionCounter.OVERFLOW, 6)]
