"""POST /api/v1/auth/token: credentials in, signed bearer token out; POST /api/v1/auth/logout: that token revoked
server-side (HES-14, HES-56, HES-59)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from osos.auth import FAILED_LOGIN, LOGIN_FAILURE_WINDOW, Principal, authenticate, issue_token, revoke_token
from osos.store.db import utcnow
from osos.web.api.schemas import ErrorResponse, TokenRequest, TokenResponse
from osos.web.security import current_principal, log_security, login_throttled, token_claims

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

BAD_CREDENTIALS = "invalid username or password"
TOO_MANY = "too many failed logins; try again later"
RETRY_AFTER_S = int(LOGIN_FAILURE_WINDOW.total_seconds())


@router.post("/token", response_model=TokenResponse,
             responses={401: {"model": ErrorResponse}, 429: {"model": ErrorResponse}})
def token(body: TokenRequest, request: Request) -> TokenResponse | JSONResponse:
    """Exchange a username and password for a bearer token; failures are logged as security records, and after
    5 failures in 15 minutes for one user name from one client the answer is 429 until they age out."""
    if login_throttled(request, body.username):
        return JSONResponse({"detail": TOO_MANY}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})
    with request.app.state.engine.connect() as conn:
        principal = authenticate(conn, body.username, body.password)
    if principal is None:
        log_security(request, FAILED_LOGIN, user=body.username)
        return JSONResponse({"detail": BAD_CREDENTIALS}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    ttl = int(request.app.state.settings.token_ttl_s)
    access_token, _ = issue_token(request.app.state.secret, principal.username, principal.role,
                                  uid=principal.user_id, gen=principal.token_generation, ttl_s=ttl, now=utcnow())
    return TokenResponse(access_token=access_token, expires_in=ttl)


@router.post("/logout", status_code=204, response_class=Response, responses={401: {"model": ErrorResponse}})
def logout(request: Request, _: Principal = Depends(current_principal)) -> Response:
    """Revoke the token this request carries: any later use of it is refused with 401."""
    with request.app.state.engine.begin() as conn:
        revoke_token(conn, token_claims(request), now=utcnow())
    return Response(status_code=204)
