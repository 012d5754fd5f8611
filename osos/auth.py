"""Who may do what: password hashes, signed bearer tokens, roles and permissions (HES-14, HES-56, HES-60).

Passwords are stored as scrypt hashes with a per-user random salt and compared in constant time; there is no
default or embedded password anywhere (HES-56). A token is ``base64url(JSON claims) "." base64url(HMAC-SHA256)``
signed with ``Settings.secret_key()``; the claims are ``{"sub", "role", "exp"}``. Functions that depend on time
take ``now`` so the checks are testable without a clock.

Roles map to permissions, and code asks for a *permission*, never for a role name, so that per-user and
time-limited grants (HES-60, a later issue) can be added in :meth:`Principal.can` without touching callers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select
from sqlalchemy.engine import Connection

from osos.store.schema import log_records, users

# scrypt cost: n=2**14, r=8, p=1 (~16 MiB, tens of ms) - the parameters are stored in the hash so they can grow.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_LENGTH = 12

# HES-60: separate permission levels; orders use "order.read" (read, load profile), "order.relay" (relay) and
# "order.program" (time-set).
PERMISSIONS = (
    "read",  # see inventory, registers, raw data, order status
    "order.read",  # start a meter reading
    "order.program",  # meter programming: time-set (HES-35)
    "order.relay",  # connect / disconnect (HES-11)
    "modem.configure",  # modem parameters (later)
    "modem.provision",  # add modems and issue their broker credentials (HES-4, HES-56)
    "firmware.manage",  # software management (later)
    "user.manage",  # users and grants (later)
)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "order.read", "order.relay", "order.program"}),  # relay/time-set: HES-11/35
    "admin": frozenset(PERMISSIONS),
}
ROLES = tuple(ROLE_PERMISSIONS)


class AuthError(Exception):
    """Authentication or authorization failed; ``reason`` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PasswordPolicyError(AuthError):
    """A password too weak to be accepted (HES-56)."""


class UserError(AuthError):
    """A user that cannot be created as asked (duplicate name, unknown role ...)."""


# ---------------------------------------------------------------------------------------------- passwords


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash``: a fresh random salt per user unless one is given (tests)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64e(salt)}${_b64e(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; a malformed stored hash never matches (and never raises)."""
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = _b64d(salt_s), _b64d(hash_s)
        if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16 and expected):
            return False
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=2**28
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def check_password_policy(password: str, username: str = "") -> None:
    """Refuse short, one-character-class or username-like passwords (HES-56: no simple passwords)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(set(password)) < 5:
        raise PasswordPolicyError("password repeats too few different characters")
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < 2:
        raise PasswordPolicyError("password must mix at least two of: lower case, upper case, digits, symbols")
    if username and username.lower() in password.lower():
        raise PasswordPolicyError("password must not contain the user name")


def generate_password() -> str:
    """A random password that passes the policy (~144 bits)."""
    while True:
        candidate = secrets.token_urlsafe(18)
        try:
            check_password_policy(candidate)
        except PasswordPolicyError:
            continue
        return candidate


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Claims:
    sub: str
    role: str
    exp: int  # seconds since the epoch, UTC


def issue_token(key: bytes, sub: str, role: str, *, ttl_s: int, now: datetime) -> tuple[str, Claims]:
    """Sign ``{"sub", "role", "exp"}`` with HMAC-SHA256."""
    if role not in ROLE_PERMISSIONS:
        raise AuthError(f"unknown role {role!r}")
    claims = Claims(sub=sub, role=role, exp=int(now.timestamp()) + int(ttl_s))
    body = _b64e(json.dumps({"sub": sub, "role": role, "exp": claims.exp}, separators=(",", ":")).encode())
    sig = _b64e(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{sig}", claims


def verify_token(key: bytes, token: str, *, now: datetime) -> Claims:
    """Check signature first, then shape, then expiry; every failure is an :class:`AuthError`."""
    body, sep, sig = token.partition(".")
    if not sep or not body or not sig:
        raise AuthError("malformed token")
    expected = _b64e(hmac.new(key, body.encode("ascii", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("ascii", "replace")):
        raise AuthError("invalid token signature")
    try:
        data: Any = json.loads(_b64d(body))
    except (ValueError, binascii.Error) as exc:
        raise AuthError("malformed token") from exc
    if not isinstance(data, dict):
        raise AuthError("malformed token")
    sub, role, exp = data.get("sub"), data.get("role"), data.get("exp")
    if not isinstance(sub, str) or not isinstance(role, str) or not isinstance(exp, int) or isinstance(exp, bool):
        raise AuthError("malformed token")
    if exp <= now.timestamp():
        raise AuthError("token expired")
    return Claims(sub=sub, role=role, exp=exp)


# ---------------------------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the web sees it."""

    username: str
    role: str

    def can(self, permission: str, now: datetime | None = None) -> bool:
        """HES-60 check. ``now`` is accepted for the time-limited grants a later issue adds."""
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


def create_user(conn: Connection, username: str, password: str, role: str, *, now: datetime) -> int:
    """Store a new user with a scrypt hash; the password must pass the policy."""
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() or not c.isprintable() for c in username):
        raise UserError("user name must be 1-64 printable characters without spaces")
    if role not in ROLE_PERMISSIONS:
        raise UserError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    check_password_policy(password, username)
    if conn.execute(select(users.c.id).where(users.c.username == username)).first() is not None:
        raise UserError(f"user {username!r} already exists")
    result = conn.execute(
        insert(users).values(
            username=username, password_hash=hash_password(password), role=role, disabled=False, created_at=now
        )
    )
    return int(result.inserted_primary_key[0])


# A real hash to burn the same time when the user does not exist (no user-enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def authenticate(conn: Connection, username: str, password: str) -> Principal | None:
    """The principal for valid credentials of an enabled user, else None."""
    row = conn.execute(
        select(users.c.username, users.c.password_hash, users.c.role, users.c.disabled).where(
            users.c.username == username
        )
    ).first()
    if row is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not verify_password(password, row.password_hash) or row.disabled:
        return None
    return Principal(username=row.username, role=row.role)


def principal_for(conn: Connection, claims: Claims) -> Principal | None:
    """Re-check a token's user on every request, so disabling or demoting a user takes effect at once."""
    row = conn.execute(
        select(users.c.username, users.c.role, users.c.disabled).where(users.c.username == claims.sub)
    ).first()
    if row is None or row.disabled:
        return None
    return Principal(username=row.username, role=row.role)


# HES-6: after this many failed logins for one user name from one client within the window, further attempts are
# refused without checking the password until older failures leave the window. Counted from the security log
# itself, so every head-end process sees the same count.
LOGIN_FAILURE_LIMIT = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
FAILED_LOGIN = "failed login"


def recent_login_failures(conn: Connection, username: str, client: str, *, now: datetime) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(log_records)
            .where(
                and_(
                    log_records.c.category == "security",
                    log_records.c.at > now - LOGIN_FAILURE_WINDOW,
                    log_records.c.message == FAILED_LOGIN,
                    log_records.c.detail["user"].as_string() == username,
                    log_records.c.detail["client"].as_string() == client,
                )
            )
        ).scalar_one()
    )


def record_security_event(
    conn: Connection, message: str, *, now: datetime, detail: dict[str, Any] | None = None
) -> None:
    """A log_records row of category "security" (HES-59: unauthorized access records, kept 90 days)."""
    conn.execute(
        insert(log_records).values(at=now, category="security", level="warning", message=message, detail=detail)
    )
