"""Server-rendered screens, no plug-in (HES-13): login, modems, meter search, meter page, orders, alarms, language
switch.

Screens read through ``osos.store.queries``; the "Read now" button of the meter page posts to the Web API with the
session cookie and the CSRF header, so the UI and other systems create orders the same way.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from osos.auth import FAILED_LOGIN, AuthError, Principal, authenticate, issue_token, revoke_token, verify_token
from osos.headend import alarms as alarm_queries
from osos.store import queries
from osos.store.db import utcnow
from osos.web.api.schemas import MAX_ID, NO_CONTROL, MeterIdPath, ModemIdPath
from osos.web.i18n import LANGUAGES
from osos.web.security import (
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    csrf_token_for,
    log_security,
    login_throttled,
    require,
)
from osos.web.ui.render import obis_name, render, request_language

router = APIRouter(include_in_schema=False)
PAGE_ROWS = 500  # a screen lists at most this many rows; the search narrows it (the API pages with limit/offset)
can_read = require("read")


def safe_next(target: str | None) -> str:
    """Only local paths: an open redirect after login would help phishing."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/meters"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/meters", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str | None = Query(None)) -> Response:  # noqa: A002 - the query name
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": nonce, "next": safe_next(next), "error": None})
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request),
                        max_age=3600, path="/login")
    return response


@router.post("/login")
def login_submit(
    request: Request,
    username: str = Form("", max_length=64, pattern=NO_CONTROL),
    password: str = Form("", max_length=1024),
    csrf_token: str = Form(""),
    next: str = Form("/meters"),  # noqa: A002 - the form field name
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    ok_csrf = bool(expected) and hmac.compare_digest(expected.encode(), csrf_token.encode())
    principal = None
    throttled = ok_csrf and bool(username) and login_throttled(request, username)
    if ok_csrf and username and password and not throttled:
        with request.app.state.engine.connect() as conn:
            principal = authenticate(conn, username, password)
    if principal is None:
        if ok_csrf and not throttled:
            log_security(request, FAILED_LOGIN, user=username)
        nonce = secrets.token_urlsafe(24)
        if throttled:
            error, status = "login.throttled", 429
        elif ok_csrf:
            error, status = "login.failed", 401
        else:
            error, status = "login.expired", 400
        response = render(request, "login.html", {"login_csrf": nonce, "next": safe_next(next), "error": error,
                                                  "username": username}, status_code=status)
        response.set_cookie(LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request),
                            max_age=3600, path="/login")
        return response
    settings = request.app.state.settings
    token, _ = issue_token(request.app.state.secret, principal.username, principal.role, uid=principal.user_id,
                           gen=principal.token_generation, ttl_s=settings.token_ttl_s, now=utcnow())
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                        max_age=int(settings.token_ttl_s), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    """Revokes the session's token server-side (a copied cookie is dead too) and drops the cookie; the CSRF token
    stops other sites from logging a user out."""
    token = request.cookies.get(SESSION_COOKIE, "")
    claims = None
    if token:
        try:
            claims = verify_token(request.app.state.secret, token, now=utcnow())
        except AuthError:
            token = ""  # an expired session: nothing to protect, just clear the cookie
    if token and not hmac.compare_digest(csrf_token.encode(), csrf_token_for(request.app.state.secret, token).encode()):
        raise HTTPException(403, "missing or wrong CSRF token")
    if claims is not None:
        with request.app.state.engine.begin() as conn:
            revoke_token(conn, claims, now=utcnow())
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
def switch_language(request: Request, code: str, next: str | None = Query(None)) -> Response:  # noqa: A002
    """Remember the language in a cookie (HES-15); only a preference, so a GET is fine."""
    if code not in LANGUAGES:
        raise HTTPException(404, f"unsupported language {code!r}")
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(LANG_COOKIE, code, samesite="lax", secure=_secure(request), max_age=365 * 86400, path="/")
    return response


@router.get("/modems")
def modems_page(request: Request, q: str | None = Query(None, max_length=64, pattern=NO_CONTROL),
                _: Principal = Depends(can_read)) -> Response:
    with request.app.state.engine.connect() as conn:
        items = queries.list_modems(conn, now=utcnow(), q=q, limit=PAGE_ROWS)
    return render(request, "modems.html", {"modems": items, "q": q or "", "truncated": len(items) >= PAGE_ROWS})


@router.get("/modems/{modem_id}")
def modem_page(modem_id: ModemIdPath, request: Request, _: Principal = Depends(can_read)) -> Response:
    """A modem's identity (HES-22), its state and the meters behind it (HES-9, HES-38)."""
    with request.app.state.engine.connect() as conn:
        modem = queries.get_modem(conn, modem_id, now=utcnow())
        if modem is None:
            raise HTTPException(404, f"modem {modem_id} does not exist")
        items = queries.list_meters(conn, modem_id=modem_id, limit=PAGE_ROWS)
    return render(request, "modem.html", {"modem": modem, "meters": items, "truncated": len(items) >= PAGE_ROWS})


@router.get("/meters")
def meters_page(
    request: Request,
    q: str | None = Query(None, max_length=128, pattern=NO_CONTROL),
    modem: int | None = Query(None, ge=1, le=MAX_ID),
    _: Principal = Depends(can_read),
) -> Response:
    """Device search (AMR-9, HES-13): serial, installation number or subscriber name."""
    with request.app.state.engine.connect() as conn:
        items = queries.list_meters(conn, q=q, modem_id=modem, limit=PAGE_ROWS)
    return render(request, "meters.html", {"meters": items, "q": q or "", "modem": modem,
                                           "truncated": len(items) >= PAGE_ROWS})


def _meter_context(request: Request, meter_id: int) -> dict[str, Any]:
    lang = request_language(request)
    with request.app.state.engine.connect() as conn:
        meter = queries.get_meter(conn, meter_id)
        if meter is None:
            raise HTTPException(404, f"meter {meter_id} does not exist")
        registers = queries.latest_registers(conn, meter_id)
        raw = queries.raw_with_parsed(conn, meter_id, limit=10)
    names = {code: obis_name(code, lang) for code in registers}
    for message in raw:
        for value in message["parsed"]:
            value["name"] = names.get(value["obis"]) if value["obis"] in names else obis_name(value["obis"], lang)
    return {"meter": meter, "registers": registers, "names": names, "raw": raw}


@router.get("/meters/{meter_id}")
def meter_page(meter_id: MeterIdPath, request: Request, principal: Principal = Depends(can_read)) -> Response:
    """Identity, latest OBIS values, raw next to parsed (HES-13), and "Read now" for those allowed."""
    ctx = _meter_context(request, meter_id)
    ctx["can_order"] = principal.can("order.read", utcnow())
    # poll a little longer than the dispatcher waits for the modem, so the final status is seen
    ctx["order_wait_s"] = int(request.app.state.settings.order_timeout_s) + 30
    return render(request, "meter.html", ctx)


@router.get("/meters/{meter_id}/fragments/data")
def meter_data_fragment(meter_id: MeterIdPath, request: Request, _: Principal = Depends(can_read)) -> Response:
    """The register grid and raw/parsed list alone, for the page to refresh after a reading."""
    return render(request, "_meter_data.html", _meter_context(request, meter_id))


@router.get("/orders")
def orders_page(
    request: Request, meter: int | None = Query(None, ge=1, le=MAX_ID), _: Principal = Depends(can_read)
) -> Response:
    """Order status (HES-13 order management, first screen)."""
    with request.app.state.engine.connect() as conn:
        items = queries.list_orders(conn, meter_id=meter, limit=PAGE_ROWS)
    return render(request, "orders.html", {"orders": items, "meter": meter, "truncated": len(items) >= PAGE_ROWS})


@router.get("/alarms")
def alarms_page(
    request: Request,
    state: Literal["raised", "acknowledged", "cleared"] | None = None,
    principal: Principal = Depends(can_read),
) -> Response:
    """Alarms, newest first (HES-11, HES-28); operators acknowledge and clear them through the Web API."""
    with request.app.state.engine.connect() as conn:
        total, items = alarm_queries.query(conn, state=state, limit=PAGE_ROWS)
    return render(request, "alarms.html", {"alarms": items, "state": state, "total": total,
                                           "can_manage": principal.can("alarm.manage", utcnow()),
                                           "truncated": total > len(items)})


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

