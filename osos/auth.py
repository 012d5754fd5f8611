"""Who may do what: password hashes, signed bearer tokens, roles and permissions (HES-14, HES-56, HES-60).

Passwords are stored as scrypt hashes with a per-user random salt and compared in constant time; there is no
default or embedded password anywhere (HES-56). A token is ``base64url(JSON claims) "." base64url(HMAC-SHA256)``
signed with ``Settings.secret_key()``; the claims are ``{"sub", "uid", "gen", "jti", "role", "exp"}``. A token is
honoured only while the user with id ``uid`` exists, is enabled, still has token generation ``gen`` (a password
change, disable or delete bumps it) and ``jti`` is not in ``revoked_tokens`` (logout). Functions that depend on time
take ``now`` so the checks are testable without a clock.

User administration (list, create, disable, enable, delete, role, password) lives here too, so the CLI and the Web
API share one implementation; every change writes a log_records row of category "user" (HES-59 "user functional
logs") naming actor, target and change, never a password.

Roles map to permissions, and code asks for a *permission*, never for a role name, so that per-user and
time-limited grants (HES-60, a later issue) can be added in :meth:`Principal.can` without touching callers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from importlib import resources
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from osos.store.db import insert_or_ignore
from osos.store.schema import log_records, revoked_tokens, users

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
    "schedule.manage",  # add and remove recurring order schedules (HES-10)
    "modem.configure",  # modem parameters (later)
    "modem.provision",  # add modems and issue their broker credentials (HES-4, HES-56)
    "firmware.manage",  # software management (later)
    "user.manage",  # users and grants (later)
    "alarm.manage",  # acknowledge and clear alarms (HES-11, HES-28)
    "log.read",  # read the head-end's logs (HES-59: readable only by authorized users)
)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    # relay/time-set: HES-11/35; schedules: HES-10; alarms are handled by the operators who watch them
    "operator": frozenset({"read", "order.read", "order.relay", "order.program", "schedule.manage", "alarm.manage"}),
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
    """A user that cannot be created or changed as asked (duplicate name, unknown role ...)."""


class UserNotFound(UserError):
    """No user with that id or name."""


class UserConflict(UserError):
    """The change would break an invariant: a duplicate name, or no enabled admin left."""


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


# zxcvbn scores 0-4 (log10 of the estimated guesses: < 10**3, < 10**6, < 10**8, < 10**10, more). 3 means "safely
# unguessable" by zxcvbn's authors: ~10**8 guesses or more, out of reach of an online attacker and - with our scrypt
# hash at tens of milliseconds per guess - costly offline. 4 would refuse many good word passphrases.
MIN_STRENGTH_SCORE = 3
# zxcvbn's matching grows quickly with length; its authors truncate to 100 characters, and so do we.
STRENGTH_CHECK_CHARS = 100
_EDGE_NOISE = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """Lower-case common passwords: zxcvbn's bundled list (30,000 leaked passwords, MIT, read at runtime, not
    copied) plus ``osos/data/passwords/common-extra.txt`` (written for OSOS, Apache-2.0: seasons, months, site
    words, Turkish words zxcvbn's English lists lack)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    extra = resources.files("osos.data").joinpath("passwords/common-extra.txt").read_text(encoding="utf-8")
    own = (line.strip().lower() for line in extra.splitlines())
    return frozenset(FREQUENCY_LISTS["passwords"]) | frozenset(w for w in own if w and not w.startswith("#"))


def _common_core(password: str) -> str | None:
    """The common password hiding under decoration, if any: ``Summer2026!!`` -> ``summer``, ``P@ssw0rd1`` ->
    ``password``. Digits and symbols around (or inside) a common word add little: attackers try them first."""
    common = common_passwords()
    lowered = password.lower()
    candidates = (
        lowered,
        "".join(c for c in lowered if c.isalpha()),
        _EDGE_NOISE.sub("", lowered).translate(_LEET),
        "".join(c for c in _EDGE_NOISE.sub("", lowered).translate(_LEET) if c.isalpha()),
    )
    return next((c for c in candidates if len(c) >= 3 and c in common), None)


def check_password_policy(password: str, username: str = "") -> None:
    """HES-56 "no simple passwords": the floor (length, variety, not the user name), then no common password under
    decoration, then zxcvbn's estimate must reach :data:`MIN_STRENGTH_SCORE` (3).

    Why an estimator on top of the floor: the character-class rules pass ``Password1234`` and ``qwerty123456``,
    which are among the first guesses of any cracking list. zxcvbn (Dropbox's estimator, maintained as the
    ``zxcvbn`` package, MIT) scores what an attacker's guessing would actually cost: dictionary words, l33t, keyboard
    walks, sequences, dates. Score 3 ("safely unguessable", ~10**8 guesses) is the lowest level its authors call safe
    against online attacks - and our login throttling plus scrypt make offline guessing slow - while 4 would refuse
    many good passphrases of ordinary words. The common-password check catches what the estimator scores too high
    (``Summer2026!!`` scores 3: a season plus year plus symbols is a classic first guess)."""
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
    if _common_core(password) is not None:
        raise PasswordPolicyError("password is a common password with digits or symbols added; "
                                  "use several unrelated words or a generated password")
    from zxcvbn import zxcvbn

    score = int(zxcvbn(password[:STRENGTH_CHECK_CHARS], user_inputs=[u for u in (username, "osos") if u])["score"])
    if score < MIN_STRENGTH_SCORE:
        raise PasswordPolicyError(f"password is too easy to guess (strength {score} of 4, at least "
                                  f"{MIN_STRENGTH_SCORE} needed); use several unrelated words or a generated password")


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
    sub: str  # user name, for logs; the user is identified by uid
    role: str  # role at issue time, informative only: every request re-reads the user's row
    exp: int  # seconds since the epoch, UTC
    uid: int  # users.id
    gen: int  # users.token_generation at issue time
    jti: str  # random token id, revocable (logout)


def issue_token(
    key: bytes, sub: str, role: str, *, uid: int, gen: int, ttl_s: int, now: datetime
) -> tuple[str, Claims]:
    """Sign ``{"sub", "uid", "gen", "jti", "role", "exp"}`` with HMAC-SHA256; ``jti`` is 128 random bits."""
    if role not in ROLE_PERMISSIONS:
        raise AuthError(f"unknown role {role!r}")
    claims = Claims(sub=sub, role=role, exp=int(now.timestamp()) + int(ttl_s), uid=int(uid), gen=int(gen),
                    jti=secrets.token_hex(16))
    payload = {"sub": sub, "uid": claims.uid, "gen": claims.gen, "jti": claims.jti, "role": role, "exp": claims.exp}
    body = _b64e(json.dumps(payload, separators=(",", ":")).encode())
    sig = _b64e(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{sig}", claims


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_token(key: bytes, token: str, *, now: datetime) -> Claims:
    """Check signature first, then shape, then expiry; every failure is an :class:`AuthError`. Whether the user
    still holds the token (generation, revocation) is :func:`principal_for`'s job: it needs the database."""
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
    uid, gen, jti = data.get("uid"), data.get("gen"), data.get("jti")
    if not (isinstance(sub, str) and isinstance(role, str) and _is_int(exp) and _is_int(uid) and _is_int(gen)
            and isinstance(jti, str) and 0 < len(jti) <= 32):
        raise AuthError("malformed token")
    if exp <= now.timestamp():
        raise AuthError("token expired")
    return Claims(sub=sub, role=role, exp=exp, uid=uid, gen=gen, jti=jti)


def revoke_token(conn: Connection, claims: Claims, *, now: datetime) -> None:
    """Logout: the token's jti is refused from now on. Rows of tokens that have expired anyway are purged here,
    so the table holds only tokens that could still be presented."""
    conn.execute(delete(revoked_tokens).where(revoked_tokens.c.expires_at < now))
    insert_or_ignore(conn, revoked_tokens, {"jti": claims.jti, "user_id": claims.uid,
                                            "expires_at": datetime.fromtimestamp(claims.exp, tz=now.tzinfo),
                                            "revoked_at": now}, ["jti"])


# ---------------------------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the web sees it."""

    username: str
    role: str
    user_id: int = 0
    token_generation: int = 0

    def can(self, permission: str, now: datetime | None = None) -> bool:
        """HES-60 check. ``now`` is accepted for the time-limited grants a later issue adds."""
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


def _check_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() or not c.isprintable() for c in username):
        raise UserError("user name must be 1-64 printable characters without spaces")
    return username


def _audit(conn: Connection, actor: str, target: str, target_id: int, change: str, *, now: datetime,
           **detail: Any) -> None:
    """HES-59 user functional log: who changed which account how. Never carries a password."""
    conn.execute(insert(log_records).values(
        at=now, category="user", level="info", message=f"{actor} {change} user {target}",
        detail={"actor": actor, "target": target, "target_id": target_id, "change": change, **detail},
    ))


def _initial_generation() -> int:
    """A new user's first token generation is random, not 0: SQLite reuses the id of a deleted last row, so a
    deleted user's token (uid, gen) must not match a newcomer that inherits the id (chance 2**-30)."""
    return secrets.randbelow(2**30)


def create_user(conn: Connection, username: str, password: str, role: str, *, now: datetime,
                actor: str = "system") -> int:
    """Store a new user with a scrypt hash; the password must pass the policy. Audited."""
    username = _check_username(username)
    if role not in ROLE_PERMISSIONS:
        raise UserError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    check_password_policy(password, username)
    if conn.execute(select(users.c.id).where(users.c.username == username)).first() is not None:
        raise UserConflict(f"user {username!r} already exists")
    result = conn.execute(
        insert(users).values(
            username=username, password_hash=hash_password(password), role=role, disabled=False, created_at=now,
            token_generation=_initial_generation(), updated_at=now,
        )
    )
    user_id = int(result.inserted_primary_key[0])
    _audit(conn, actor, username, user_id, "created", now=now, role=role)
    return user_id


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every account, without hashes or generations."""
    rows = conn.execute(
        select(users.c.id, users.c.username, users.c.role, users.c.disabled, users.c.created_at, users.c.updated_at)
        .order_by(users.c.username)
    )
    return [dict(r._mapping) for r in rows]


def find_user(conn: Connection, ref: int | str) -> Any:
    """The users row by id (int) or name (str), locked for update where the database can; else UserNotFound."""
    cond = users.c.id == ref if isinstance(ref, int) else users.c.username == ref
    row = conn.execute(select(users).where(cond).with_for_update()).first()
    if row is None:
        raise UserNotFound(f"no user {ref!r}")
    return row


def _refuse_last_admin(conn: Connection, row: Any, action: str) -> None:
    """Someone must always be able to manage users: never disable, delete or demote the last enabled admin."""
    if row.role != "admin" or row.disabled:
        return
    others = conn.execute(
        select(users.c.id).where(users.c.role == "admin", users.c.disabled.is_(False), users.c.id != row.id)
        .with_for_update()
    ).all()
    if not others:
        raise UserConflict(f"cannot {action} {row.username!r}: it is the last enabled admin; "
                           "make another user admin first")


def set_role(conn: Connection, ref: int | str, role: str, *, actor: str, now: datetime) -> Any:
    """Change a role (takes effect on the next request: roles are re-read, no token bump needed)."""
    if role not in ROLE_PERMISSIONS:
        raise UserError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    row = find_user(conn, ref)
    if row.role == role:
        return row
    if role != "admin":
        _refuse_last_admin(conn, row, "demote")
    conn.execute(update(users).where(users.c.id == row.id).values(role=role, updated_at=now))
    _audit(conn, actor, row.username, row.id, "set role", now=now, **{"from": row.role, "to": role})
    return find_user(conn, row.id)


def set_disabled(conn: Connection, ref: int | str, disabled: bool, *, actor: str, now: datetime) -> Any:
    """Disable (ends every session: the generation is bumped) or enable a user."""
    row = find_user(conn, ref)
    if bool(row.disabled) == disabled:
        return row
    values: dict[str, Any] = {"disabled": disabled, "updated_at": now}
    if disabled:
        _refuse_last_admin(conn, row, "disable")
        values["token_generation"] = users.c.token_generation + 1
    conn.execute(update(users).where(users.c.id == row.id).values(**values))
    _audit(conn, actor, row.username, row.id, "disabled" if disabled else "enabled", now=now)
    return find_user(conn, row.id)


def delete_user(conn: Connection, ref: int | str, *, actor: str, now: datetime) -> None:
    """Remove a user; its tokens die with the row (they name its id and generation, see _initial_generation)."""
    row = find_user(conn, ref)
    _refuse_last_admin(conn, row, "delete")
    conn.execute(delete(revoked_tokens).where(revoked_tokens.c.user_id == row.id))
    conn.execute(delete(users).where(users.c.id == row.id))
    _audit(conn, actor, row.username, row.id, "deleted", now=now, role=row.role)


def set_password(conn: Connection, ref: int | str, password: str, *, actor: str, now: datetime) -> None:
    """Set a new password (policy checked) and end every session of the user."""
    row = find_user(conn, ref)
    check_password_policy(password, row.username)
    conn.execute(update(users).where(users.c.id == row.id).values(
        password_hash=hash_password(password), token_generation=users.c.token_generation + 1, updated_at=now))
    _audit(conn, actor, row.username, row.id, "reset password", now=now)


# A real hash to burn the same time when the user does not exist (no user-enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def authenticate(conn: Connection, username: str, password: str) -> Principal | None:
    """The principal for valid credentials of an enabled user, else None."""
    row = conn.execute(
        select(users.c.id, users.c.username, users.c.password_hash, users.c.role, users.c.disabled,
               users.c.token_generation).where(users.c.username == username)
    ).first()
    if row is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not verify_password(password, row.password_hash) or row.disabled:
        return None
    return Principal(username=row.username, role=row.role, user_id=row.id, token_generation=row.token_generation)


def principal_for(conn: Connection, claims: Claims) -> Principal:
    """Re-check a token's user on every request, so disabling or demoting a user takes effect at once; a password
    change, disable or delete (generation) and a logout (jti) end the token. AuthError says which."""
    row = conn.execute(
        select(users.c.id, users.c.username, users.c.role, users.c.disabled, users.c.token_generation)
        .where(users.c.id == claims.uid)
    ).first()
    if row is None or row.disabled or row.username != claims.sub:
        raise AuthError("user unknown or disabled")
    if row.token_generation != claims.gen:
        raise AuthError("token no longer valid; log in again")
    if conn.execute(select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == claims.jti)).first() is not None:
        raise AuthError("token revoked; log in again")
    return Principal(username=row.username, role=row.role, user_id=row.id, token_generation=row.token_generation)


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
