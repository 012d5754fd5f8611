"""The gateway's secret store and its DLMS invocation counters (HES-56, issue 7 "Meter secrets").

Meter passwords (IEC 62056-21 P1, DLMS LLS) and DLMS keys (``ek``/``ak``) never sit in data files, directives,
orders or command lines: they live here, in ``<data-dir>/secrets.enc``, one named entry per meter (or per group
of meters sharing a secret), each entry a few fields (``password``, ``ek``, ``ak``). Meters name their entry
(``--meter tcp://host:port?secret=m1``); the gateway resolves the name when it starts.

Protection: AES-256-GCM with a key from the environment (``OSOS_GATEWAY_KEY``: 32 bytes, base64 or hex), a fresh
96-bit nonce per write, the file header as associated data; the file is written atomically (temporary file
0600, fsync, rename) and kept 0600 in a 0700 directory. A store that exists but cannot be opened with the key
(missing, wrong, or the file altered) is an error, never an empty store: the gateway refuses to start.

The invocation counters (:class:`InvocationCounters`) are not secret but integrity-relevant: an HLS-GMAC client
must never reuse a counter with the same key (GCM nonce reuse), and must resume ahead of the last one after a
restart. They are kept in ``<data-dir>/dlms-counters.json`` by reserving blocks ahead, so a crash between two
writes can only skip counters, never repeat one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets as _random
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KEY_ENV = "OSOS_GATEWAY_KEY"
STORE_FILE = "secrets.enc"
COUNTERS_FILE = "dlms-counters.json"
MAGIC = b"OSOS-GW-SECRETS-1\n"
NONCE_BYTES = 12
#: the fields an entry may hold; everything a meter needs to authenticate, nothing else
FIELDS = ("password", "ek", "ak")
HEX_FIELDS = {"ek": 16, "ak": 16}  # AES-128 keys of security suite 0, hex in the store
COUNTER_BLOCK = 64  # counters reserved per write: at most this many are skipped after a crash


class SecretStoreError(Exception):
    """The store cannot be opened or changed; the message says what to do."""


def generate_key() -> str:
    """A fresh store key, base64 (what ``osos gateway-secret keygen`` prints)."""
    return base64.b64encode(_random.token_bytes(32)).decode("ascii")


def parse_key(text: str | None) -> bytes:
    """32 bytes from ``text`` given as 64 hex digits or base64 (standard or URL-safe); else SecretStoreError."""
    value = (text or "").strip()
    if not value:
        raise SecretStoreError(f"{KEY_ENV} is not set: the gateway's secret store needs its 32-byte key "
                               "(generate one with `osos gateway-secret keygen`)")
    candidates: list[bytes] = []
    if len(value) == 64:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(value))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(ValueError, binascii.Error):
            candidates.append(decode(value + "=" * (-len(value) % 4)))
    for key in candidates:
        if len(key) == 32:
            return key
    raise SecretStoreError(f"{KEY_ENV} must be 32 bytes as 64 hex digits or base64 (44 characters)")


def key_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    """The key from ``OSOS_GATEWAY_KEY``, or None when the variable is unset or empty."""
    text = (os.environ if env is None else env).get(KEY_ENV, "")
    return parse_key(text) if text.strip() else None


def check_value(field: str, value: str) -> str:
    """A field value as stored: hex keys normalised to lower case and checked for length."""
    if field not in FIELDS:
        raise SecretStoreError(f"unknown secret field {field!r}; use one of {', '.join(FIELDS)}")
    if not value:
        raise SecretStoreError(f"empty {field}")
    if field in HEX_FIELDS:
        try:
            raw = bytes.fromhex(value.strip())
        except ValueError:
            raise SecretStoreError(f"{field} must be hexadecimal") from None
        if len(raw) != HEX_FIELDS[field]:
            raise SecretStoreError(f"{field} must be {HEX_FIELDS[field]} bytes ({2 * HEX_FIELDS[field]} hex digits)")
        return raw.hex()
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new file, never half of one; mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)


class SecretStore:
    """Named meter secrets in one encrypted file. Thread-safe; every change is written at once."""

    def __init__(self, path: Path | str, key: bytes | None) -> None:
        self.path = Path(path)
        self.key = key
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, str]] = self._load()

    @classmethod
    def open(cls, data_dir: Path | str, key: bytes | None = None, env: Mapping[str, str] | None = None
             ) -> SecretStore:
        """The store of a gateway data dir, with ``key`` or the key from ``OSOS_GATEWAY_KEY``."""
        if key is None:
            key = key_from_env(env)
        return cls(Path(data_dir) / STORE_FILE, key)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        if self.key is None:
            raise SecretStoreError(f"{self.path} exists but {KEY_ENV} is not set: the gateway cannot use its meter "
                                   "secrets without the store's key (set the variable to the key the store was "
                                   "created with)")
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        blob = self.path.read_bytes()
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
            raise SecretStoreError(f"{self.path} is not a gateway secret store")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        try:
            plain = AESGCM(self.key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], MAGIC)
        except InvalidTag:
            raise SecretStoreError(f"{self.path} cannot be decrypted: {KEY_ENV} is not the key this store was "
                                   "written with, or the file was altered") from None
        doc = json.loads(plain.decode("utf-8"))
        return {str(name): {str(k): str(v) for k, v in fields.items()} for name, fields in doc["entries"].items()}

    def _save(self) -> None:
        if self.key is None:
            raise SecretStoreError(f"{KEY_ENV} is not set: generate a key with `osos gateway-secret keygen`, keep it "
                                   "safe (without it the store cannot be read) and export it before adding secrets")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = _random.token_bytes(NONCE_BYTES)
        plain = json.dumps({"version": 1, "entries": self._entries}, sort_keys=True).encode("utf-8")
        _private_dir(self.path.parent)
        _atomic_write(self.path, MAGIC + nonce + AESGCM(self.key).encrypt(nonce, plain, MAGIC))

    # ------------------------------------------------------------------ API
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def fields(self, name: str) -> list[str]:
        """Which fields an entry holds (never their values): what ``list`` shows."""
        with self._lock:
            return sorted(self._entries.get(name, {}))

    def get(self, name: str) -> dict[str, str]:
        """The entry's fields; SecretStoreError when there is no such entry."""
        with self._lock:
            if name not in self._entries:
                raise SecretStoreError(f"no secret {name!r} in {self.path} (add it with "
                                       f"`osos gateway-secret set {name} password --data-dir {self.path.parent}`)")
            return dict(self._entries[name])

    def set(self, name: str, field: str, value: str) -> None:
        if not name or any(c in name for c in "&=?#/ \t\r\n"):
            raise SecretStoreError(f"secret name {name!r}: use letters, digits, '-', '_' or '.'")
        value = check_value(field, value)
        with self._lock:
            self._entries.setdefault(name, {})[field] = value
            self._save()

    def delete(self, name: str, field: str | None = None) -> bool:
        """Remove an entry (or one field of it); False when there was nothing to remove."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or (field is not None and field not in entry):
                return False
            if field is None or len(entry) == 1:
                del self._entries[name]
            else:
                del entry[field]
            self._save()
            return True


class InvocationCounters:
    """Per-meter DLMS HLS-GMAC counters that survive restarts (the client's own, and the highest seen from the
    meter). Not secret; kept next to the secret store with the same file protection.

    ``reserve(meter, at_least)`` hands out the next counter to use and persists a block ahead before any of it
    is used, so the file is written once per ``COUNTER_BLOCK`` frames and a restart resumes past every counter
    that may already have gone out."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, int]] = {}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text("utf-8"))
                self._data = {str(k): {f: int(v) for f, v in d.items()} for k, d in doc.get("meters", {}).items()}
            except (ValueError, AttributeError, TypeError) as exc:
                # a counter file that cannot be read must not silently restart at 1 (GCM nonce reuse)
                raise SecretStoreError(f"{self.path} is unreadable ({exc}); move it aside only if the meters' "
                                       "keys are changed as well") from None

    @classmethod
    def open(cls, data_dir: Path | str) -> InvocationCounters:
        return cls(Path(data_dir) / COUNTERS_FILE)

    def _save(self) -> None:
        _private_dir(self.path.parent)
        _atomic_write(self.path, json.dumps({"version": 1, "meters": self._data}, sort_keys=True).encode("utf-8"))

    def next(self, meter: str) -> int:
        """The first counter that was never reserved for ``meter`` (1 for a meter never talked to)."""
        with self._lock:
            return self._data.get(meter, {}).get("reserved", 0) + 1

    def meter_seen(self, meter: str) -> int:
        with self._lock:
            return self._data.get(meter, {}).get("meter_seen", 0)

    def reserve(self, meter: str, counter: int) -> None:
        """Counter ``counter`` is about to be used for ``meter``: persist a reservation past it when needed."""
        with self._lock:
            entry = self._data.setdefault(meter, {})
            if counter > entry.get("reserved", 0):
                entry["reserved"] = counter + COUNTER_BLOCK - 1
                self._save()

    def saw(self, meter: str, counter: int) -> None:
        """The meter answered with ``counter``; remembered at the end of a run (replay check after restarts)."""
        with self._lock:
            entry = self._data.setdefault(meter, {})
            if counter > entry.get("meter_seen", 0):
                entry["meter_seen"] = counter
                self._save()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data))
