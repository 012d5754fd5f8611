"""Request authentication for API and UI: bearer header or session cookie, permissions, CSRF (HES-14, HES-60).

The session cookie holds the same signed token the API hands out, so one check serves both. An API request that
authenticates with the cookie and changes something must also carry the header ``X-CSRF-Token`` derived from the
session token (UI forms carry the same value in a ``csrf_token`` field); bearer-token requests need none, because
browsers never attach an Authorization header on their own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from osos.auth import (
    LOGIN_FAILURE_LIMIT,
    AuthError,
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
    return request.client.host if request.client and request.client.host else "unknown"


def login_throttled(request: Request, username: str) -> bool:
    """HES-6: too many recent failures for this user name from this client; the refusal is logged too."""
    with request.app.state.engine.connect() as conn:
        failures = recent_login_failures(conn, username, client_of(request), now=utcnow())
    if failures < LOGIN_FAILURE_LIMIT:
        return False
    log_security(request, "login throttled", user=username)
    return True


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
            log_security(request, f"rejected token: {exc.reason}")
        raise NotAuthenticated(exc.reason) from None
    with request.app.state.engine.connect() as conn:
        principal = principal_for(conn, claims)
    if principal is None:
        log_security(request, "token of an unknown or disabled user", user=claims.sub)
        raise NotAuthenticated("user unknown or disabled")
    if via_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token_for(secret, token).encode()):
            log_security(request, "missing or wrong CSRF token", user=principal.username)
            raise Forbidden("missing or wrong CSRF token")
    request.state.principal = principal
    request.state.session_token = token if via_cookie else None
    return principal


def require(permission: str) -> Callable[..., Principal]:
    """A dependency granting access only with ``permission`` (HES-60); every refusal is logged (HES-59)."""

    def dependency(request: Request, principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.can(permission, utcnow()):
            log_security(request, f"forbidden: {permission}", user=principal.username, role=principal.role)
            raise Forbidden(f"role {principal.role!r} may not {permission}")
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency
