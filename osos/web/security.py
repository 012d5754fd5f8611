"""Request authentication for API and UI: bearer header or session cookie, permissions, CSRF (HES-14, HES-60).

The session cookie holds the same signed token the API hands out, so one check serves both. An API request that
authenticates with the cookie and changes something must also carry the header ``X-CSRF-Token`` derived from the
session token (UI forms carry the same value in a ``csrf_token`` field); bearer-token requests need none, because
browsers never attach an Authorization header on their own.

Security records of unauthenticated requests (bogus, expired, revoked tokens; throttled logins) are counted per
client in memory by :class:`RejectionCounter` and written as at most one row per client and window carrying the
count, so a flood of bogus tokens cannot flood the store (HES-59). Failed logins stay one row each: login
throttling counts them, and throttling caps them.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from osos.auth import (
    LOGIN_FAILURE_LIMIT,
    AuthError,
    Claims,
    Principal,
    principal_for,
    recent_login_failures,
    record_security_event,
    verify_token,
)
from osos.store.db import utcnow

SESSION_COOKIE = "osos_session"
LOGIN_CSRF_COOKIE = "osos_login_csrf"
LANG_COOKIE = "osos_lang"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(auto_error=False, description="Token from POST /api/v1/auth/token")


class NotAuthenticated(Exception):
    """No valid credentials: 401 for the API, a redirect to /login for the UI."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Forbidden(Exception):
    """Authenticated, but the role does not grant the permission (403)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def csrf_token_for(secret: bytes, session_token: str) -> str:
    """Bound to the session: a token stolen from another session is useless."""
    return hmac.new(secret, b"csrf|" + session_token.encode(), hashlib.sha256).hexdigest()[:40]


def client_of(request: Request) -> str:
    """The client address as :class:`osos.web.middleware.ClientAddress` decided it (proxies only if trusted)."""
    return request.client.host if request.client and request.client.host else "unknown"


def login_throttled(request: Request, username: str) -> bool:
    """HES-6: too many recent failures for this user name from this client; the refusals are counted too."""
    with request.app.state.engine.connect() as conn:
        failures = recent_login_failures(conn, username, client_of(request), now=utcnow())
    if failures < LOGIN_FAILURE_LIMIT:
        return False
    log_rejection(request, "throttled login", "too many failed logins", user=username)
    return True


@dataclass
class _Tally:
    started: float  # monotonic start of the window
    first_at: datetime
    last_at: datetime
    count: int = 0  # events in this window not yet written
    reasons: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectionRow:
    """One security log row summarizing ``count`` rejections of one kind from one client."""

    kind: str
    client: str
    count: int
    detail: dict[str, Any]

    @property
    def message(self) -> str:
        return f"{self.count} {self.kind}{'' if self.count == 1 else 's'} from {self.client}"


class RejectionCounter:
    """Per (kind, client): the first rejection of a quiet client is written at once (an attack shows at once);
    later ones in the same window are counted and written as one row when the window ends, at the next event or
    :meth:`flush` (periodic and at shutdown). At most ``max_keys`` clients are tracked; more share one bucket,
    so many source addresses cannot grow the memory either."""

    OVERFLOW = "other clients"

    def __init__(self, window_s: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._scanned = clock()

    def note(self, kind: str, client: str, reason: str, *, at: datetime, **detail: Any) -> list[RejectionRow]:
        """Count one rejection; returns the rows to write now (possibly none)."""
        now = self._clock()
        rows: list[RejectionRow] = []
        with self._lock:
            key = (kind, client)
            stale = key in self._tallies and now - self._tallies[key].started >= self.window_s
            if stale or now - self._scanned >= 1.0:  # scan all clients at most once a second: O(clients)
                self._scanned = now
                rows.extend(self._close_expired(now))
            if key not in self._tallies and len(self._tallies) >= self.max_keys:
                key = (kind, self.OVERFLOW)
            tally = self._tallies.get(key)
            if tally is None:  # a quiet client: write this one at once, then count in a new window
                self._tallies[key] = _Tally(started=now, first_at=at, last_at=at)
                rows.append(RejectionRow(kind, key[1], 1, {**detail, "reasons": {reason: 1}, "first_at":
                                                           at.isoformat(), "last_at": at.isoformat()}))
                return rows
            tally.count += 1
            tally.last_at = at
            tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
            tally.detail = detail
        return rows

    def flush(self, *, everything: bool = False) -> list[RejectionRow]:
        """Rows for windows that have ended (or, at shutdown, for all counts)."""
        with self._lock:
            return self._close_expired(self._clock(), everything=everything)

    def _close_expired(self, now: float, *, everything: bool = False) -> list[RejectionRow]:
        rows = []
        for key, tally in list(self._tallies.items()):
            if not everything and now - tally.started < self.window_s:
                continue
            if tally.count:
                rows.append(RejectionRow(key[0], key[1], tally.count, {
                    **tally.detail, "reasons": tally.reasons, "first_at": tally.first_at.isoformat(),
                    "last_at": tally.last_at.isoformat(), "window_s": self.window_s}))
                # still active: keep counting in a fresh window (no immediate row for its first event)
                self._tallies[key] = _Tally(started=now, first_at=tally.last_at, last_at=tally.last_at)
            else:
                del self._tallies[key]
            if everything:
                self._tallies.pop(key, None)
        return rows


def write_rejections(engine: Any, rows: list[RejectionRow], *, now: datetime, logger: Any) -> None:
    """Store counted rejections as security rows (HES-59); a failing write is logged, never raised."""
    if not rows:
        return
    try:
        with engine.begin() as conn:
            for row in rows:
                record_security_event(conn, row.message, now=now,
                                      detail={**row.detail, "kind": row.kind, "client": row.client,
                                              "count": row.count})
    except Exception:  # noqa: BLE001 - a failing log write is reported by the database log, not to the caller
        logger.exception("could not write security log records")


def log_rejection(request: Request, kind: str, reason: str, **detail: Any) -> None:
    """Count a rejected unauthenticated request (HES-59) without writing a row for each one."""
    detail.setdefault("path", request.url.path)
    detail.setdefault("method", request.method)
    now = utcnow()
    rows = request.app.state.rejections.note(kind, client_of(request), reason, at=now, **detail)
    write_rejections(request.app.state.engine, rows, now=now, logger=request.app.state.logger)


def log_security(request: Request, message: str, **detail: Any) -> None:
    """HES-59: record unauthorized access attempts; logging must never break the answer."""
    detail.setdefault("path", request.url.path)
    detail.setdefault("method", request.method)
    detail.setdefault("client", client_of(request))
    try:
        with request.app.state.engine.begin() as conn:
            record_security_event(conn, message, now=utcnow(), detail=detail)
    except Exception:  # noqa: BLE001 - a failing log write is reported by the database log, not to the caller
        request.app.state.logger.exception("could not write security log record")


def _session_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> tuple[str | None, bool]:
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials, False
    cookie = request.cookies.get(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def current_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> Principal:
    """The authenticated user, or NotAuthenticated; checks CSRF for cookie-authenticated writes."""
    token, via_cookie = _session_token(request, credentials)
    if not token:
        raise NotAuthenticated("authentication required")
    secret: bytes = request.app.state.secret
    try:
        claims = verify_token(secret, token, now=utcnow())
    except AuthError as exc:
        if not via_cookie:  # stale browser cookies are routine; forged or expired bearer tokens are worth a record
            log_rejection(request, "rejected token", exc.reason)
        raise NotAuthenticated(exc.reason) from None
    try:
        with request.app.state.engine.connect() as conn:
            principal = principal_for(conn, claims)
    except AuthError as exc:
        log_rejection(request, "rejected token", exc.reason, user=claims.sub)
        raise NotAuthenticated(exc.reason) from None
    if via_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token_for(secret, token).encode()):
            log_security(request, "missing or wrong CSRF token", user=principal.username)
            raise Forbidden("missing or wrong CSRF token")
    request.state.principal = principal
    request.state.claims = claims
    request.state.session_token = token if via_cookie else None
    return principal


def token_claims(request: Request) -> Claims:
    """The verified claims of the current request's token (after :func:`current_principal`)."""
    claims: Claims = request.state.claims
    return claims


def require(permission: str) -> Callable[..., Principal]:
    """A dependency granting access only with ``permission`` (HES-60); every refusal is logged (HES-59)."""

    def dependency(request: Request, principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.can(permission, utcnow()):
            log_security(request, f"forbidden: {permission}", user=principal.username, role=principal.role)
            raise Forbidden(f"role {principal.role!r} may not {permission}")
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency
