"""Template rendering shared by pages and error handlers: language, translator, time format, CSRF token."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from osos.web.i18n import LANGUAGE_NAMES, LANGUAGES, has_key, pick_language, translator
from osos.web.security import LANG_COOKIE, csrf_token_for

TEMPLATES_DIR = resources.files("osos.web.ui").joinpath("templates")
STATIC_DIR = resources.files("osos.web.ui").joinpath("static")

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def request_language(request: Request) -> str:
    return pick_language(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def obis_name(code: str, lang: str) -> str | None:
    """A register's name from ``osos.protocols.obis.describe`` (which answers ``(name, unit)``); None when the
    code is unknown, malformed or the module is missing - the grid then shows the code alone."""
    try:
        from osos.protocols import obis  # written by the protocols engineer; optional here

        described = obis.describe(code, lang)
    except Exception:  # noqa: BLE001 - the brief: fall back to the code alone if describe raises
        return None
    name = described[0] if isinstance(described, tuple) and described else described
    return name if isinstance(name, str) and name else None


def _time_formatter(tz_name: str) -> Any:
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")

    def fmt(value: datetime | None) -> str:
        if value is None:
            return "—"
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    return fmt


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    """Render ``name`` with everything every page needs; the user's session token never reaches the template."""
    lang = request_language(request)
    settings = request.app.state.settings
    session_token = getattr(request.state, "session_token", None)
    ctx: dict[str, Any] = {
        "lang": lang,
        "t": translator(lang),
        "has_t": lambda key: has_key(lang, key),
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "principal": getattr(request.state, "principal", None),
        "csrf_token": csrf_token_for(request.app.state.secret, session_token) if session_token else "",
        "fmt_time": _time_formatter(settings.timezone),
        "timezone": settings.timezone,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    ctx.update(context or {})
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response
