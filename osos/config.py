"""Settings in one place: environment variables (``OSOS_*``) over embedded defaults.

The defaults run everything on one laptop (SQLite in the data dir, a local broker); production sets
``OSOS_DATABASE_URL`` (PostgreSQL) and ``OSOS_MQTT_HOST``/``OSOS_MQTT_PORT`` (Mosquitto or a cluster).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("OSOS_DATA_DIR", "./var/osos"))
# HMAC-SHA256 keys shorter than the hash's block of security (32 bytes) make tokens guessable offline (HES-56).
MIN_SECRET_KEY_BYTES = 32
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting that makes starting unsafe; the message says what to do (shown as one line by the CLI)."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``OSOS_TRUSTED_PROXIES``: comma-separated IPs or CIDRs (``10.0.0.5, 192.168.0.0/24, ::1``)."""
    nets: list[IPNetwork] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"OSOS_TRUSTED_PROXIES: {part!r} is not an IP address or network") from exc
    return tuple(nets)


def parse_size(text: str, default: int) -> int:
    """``OSOS_MAX_BODY_BYTES``: a positive number of bytes (empty: the default)."""
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"OSOS_MAX_BODY_BYTES must be a positive number of bytes, not {text!r}")
    return value


def parse_seconds(name: str, text: str, default: int) -> int:
    """A whole, non-negative number of seconds from the environment (empty: the default)."""
    if not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name} must be a whole number of seconds (0 or more), not {text!r}")
    return value


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` readable by its owner only (0700), or take group/other bits away from an existing one: it
    holds the database, the token key and logs (HES-59 "readable only by authorized users")."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read_secret_file(path: str | None) -> str | None:
    """A secret from a file (first line), so it never appears in the environment of every child or in ``ps``."""
    if not path:
        return None
    return Path(path).read_text().strip() or None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None  # None: SQLite file in data_dir
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # -- broker identity and TLS (HES-4, HES-52..55; docs/security.md) ------------------------------------------
    mqtt_username: str | None = None
    mqtt_password: str | None = None  # or OSOS_MQTT_PASSWORD_FILE
    mqtt_tls: bool = False  # OSOS_MQTT_TLS=1, implied by OSOS_MQTT_CA
    mqtt_ca: Path | None = None  # CA that signed the broker's certificate (verification is always on with TLS)
    mqtt_cert: Path | None = None  # optional client certificate and key
    mqtt_key: Path | None = None
    broker_admin_username: str = "osos-admin"  # dynamic-security admin account, used by provisioning only
    broker_admin_password: str | None = None  # or OSOS_BROKER_ADMIN_PASSWORD_FILE
    topic_root: str = "mass"
    # MQTT 5 shared subscription group for N head-end workers; empty = plain subscription.
    share_group: str = ""
    headend_id: str = "osos-headend"
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    order_timeout_s: float = 60.0
    # issue 8 item 1: per-kind retry overrides ("read=3/60/2,relay=2/30/1", osos.headend.orders.RETRY_POLICIES),
    # how long an order may stay open by default, and after how long without a sign of life a modem is offline
    order_retries: str = ""
    order_ttl_s: float = 24 * 3600.0
    modem_offline_s: float = 300.0  # = osos.store.queries.online_window(): the UI's online flag
    # True when device sessions without the "plain/" mount point are the broker's TLS listener (HES-54)
    device_tls: bool = False
    # read dates further than this in the future are flagged and never become the latest value (HES-6)
    future_skew_s: float = 600.0
    # HES-35: a meter whose clock is off by more than this gets a time-set order (osos.headend.timesync)
    time_sync_threshold_s: int = 300
    token_ttl_s: int = 8 * 3600
    timezone: str = "Europe/Istanbul"
    # --- web trust boundary (issue 7, accounts): whose X-Forwarded-For to believe, how big a request body may be
    trusted_proxies: tuple[IPNetwork, ...] = ()  # OSOS_TRUSTED_PROXIES; empty: the TCP peer is the client
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # OSOS_MAX_BODY_BYTES; larger request bodies get 413
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        s = cls(
            data_dir=Path(env.get("OSOS_DATA_DIR", str(DEFAULT_DATA_DIR))),
            database_url=env.get("OSOS_DATABASE_URL") or None,
            mqtt_host=env.get("OSOS_MQTT_HOST", "127.0.0.1"),
            mqtt_port=int(env.get("OSOS_MQTT_PORT", "1883")),
            mqtt_username=env.get("OSOS_MQTT_USERNAME") or None,
            mqtt_password=env.get("OSOS_MQTT_PASSWORD") or _read_secret_file(env.get("OSOS_MQTT_PASSWORD_FILE")),
            mqtt_tls=env.get("OSOS_MQTT_TLS", "") in ("1", "true", "yes") or bool(env.get("OSOS_MQTT_CA")),
            mqtt_ca=_path(env.get("OSOS_MQTT_CA")),
            mqtt_cert=_path(env.get("OSOS_MQTT_CERT")),
            mqtt_key=_path(env.get("OSOS_MQTT_KEY")),
            broker_admin_username=env.get("OSOS_BROKER_ADMIN_USERNAME", "osos-admin"),
            broker_admin_password=env.get("OSOS_BROKER_ADMIN_PASSWORD")
            or _read_secret_file(env.get("OSOS_BROKER_ADMIN_PASSWORD_FILE")),
            topic_root=env.get("OSOS_TOPIC_ROOT", "mass"),
            share_group=env.get("OSOS_SHARE_GROUP", ""),
            headend_id=env.get("OSOS_HEADEND_ID", "osos-headend"),
            web_host=env.get("OSOS_WEB_HOST", "127.0.0.1"),
            web_port=int(env.get("OSOS_WEB_PORT", "8000")),
            order_timeout_s=float(env.get("OSOS_ORDER_TIMEOUT_S", "60")),
            order_retries=env.get("OSOS_ORDER_RETRIES", ""),
            order_ttl_s=float(env.get("OSOS_ORDER_TTL_S", str(24 * 3600))),
            modem_offline_s=float(env.get("OSOS_MODEM_OFFLINE_S", "300")),
            device_tls=env.get("OSOS_DEVICE_TLS", "") in ("1", "true", "yes"),
            future_skew_s=float(env.get("OSOS_FUTURE_SKEW_S", "600")),
            time_sync_threshold_s=parse_seconds("OSOS_TIME_SYNC_THRESHOLD_S",
                                                env.get("OSOS_TIME_SYNC_THRESHOLD_S", ""), 300),
            timezone=env.get("OSOS_TIMEZONE", "Europe/Istanbul"),
            trusted_proxies=parse_networks(env.get("OSOS_TRUSTED_PROXIES", "")),
            max_body_bytes=parse_size(env.get("OSOS_MAX_BODY_BYTES", ""), DEFAULT_MAX_BODY_BYTES),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(s, **clean) if clean else s  # type: ignore[arg-type]

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        from osos.store.db import sqlite_url

        return sqlite_url(self.data_dir)

    def ensure_data_dir(self) -> Path:
        """The data dir, created 0700 (tightened if it exists with group/other bits)."""
        ensure_private_dir(self.data_dir)
        return self.data_dir

    def secret_key(self) -> bytes:
        """The token-signing key: ``OSOS_SECRET_KEY`` or generated once per data dir into ``secret.key`` (0600).
        A key shorter than 32 bytes raises ConfigError: a forgeable token would bypass every permission (HES-56)."""
        path = self.data_dir / "secret.key"
        env_key = os.environ.get("OSOS_SECRET_KEY")
        if env_key is not None:
            key = env_key.encode()
            if len(key) < MIN_SECRET_KEY_BYTES:
                raise ConfigError(
                    f"OSOS_SECRET_KEY has {len(key)} bytes, at least {MIN_SECRET_KEY_BYTES} are needed; set it to "
                    "e.g. the output of: python3 -c 'import secrets; print(secrets.token_hex(32))'")
            return key
        if not path.exists():
            self.ensure_data_dir()
            key = secrets.token_hex(32).encode()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race: use its key
                return self._read_key_file(path)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
            return key
        return self._read_key_file(path)

    @staticmethod
    def _read_key_file(path: Path) -> bytes:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
        key = path.read_bytes().strip()
        if len(key) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(
                f"{path} holds {len(key)} bytes, at least {MIN_SECRET_KEY_BYTES} are needed; delete it to have a "
                "new key generated at start (every session ends) or write a longer random key into it")
        return key
