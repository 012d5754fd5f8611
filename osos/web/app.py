"""The web application: REST API under /api/v1, server-rendered UI, static files, clear errors (HES-13, HES-51).

``create_app(settings, engine)`` builds everything from its arguments (no globals), so the lead's ``osos serve`` /
``osos demo`` and the tests run the same app. Errors answer JSON under /api and an HTML page elsewhere, and never
show a stack trace (the trace goes to the server log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import osos
from osos.config import Settings
from osos.web.api import alarms as api_alarms
from osos.web.api import auth as api_auth
from osos.web.api import inventory as api_inventory
from osos.web.api import logs as api_logs
from osos.web.api import modems as api_modems
from osos.web.api import orders as api_orders
from osos.web.api import schedules as api_schedules
from osos.web.api import users as api_users
from osos.web.middleware import BodyLimit, ClientAddress
from osos.web.security import Forbidden, NotAuthenticated, RejectionCounter, write_rejections
from osos.web.ui import routes as ui_routes
from osos.web.ui.render import STATIC_DIR, render

log = logging.getLogger("osos.web")


# The UI needs nothing from elsewhere and no inline script: a strict policy stops injected markup from running code
# or loading anything (HES-13 "no plug-in"). /docs keeps FastAPI's inline Swagger bootstrap, so it gets 'self' +
# inline for scripts only.
CSP_UI = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
CSP_DOCS = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'")


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"status": status, "message": message}, status_code=status)


def _mount_api_docs(app: FastAPI) -> None:
    """/docs with Swagger UI from the swagger-ui-bundle-v2 package (Apache-2.0), so no page loads a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


REJECTION_FLUSH_S = 5.0  # how often counted rejections whose window has ended are written (HES-59)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Write counted security rejections periodically and, at shutdown, whatever is left: none is lost."""
    from osos.store.db import utcnow

    def flush(everything: bool) -> None:
        rows = app.state.rejections.flush(everything=everything)
        write_rejections(app.state.engine, rows, now=utcnow(), logger=log)

    async def periodic() -> None:
        while True:
            await asyncio.sleep(REJECTION_FLUSH_S)
            await run_in_threadpool(flush, False)

    task = asyncio.create_task(periodic())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await run_in_threadpool(flush, True)


def create_app(settings: Settings, engine: Engine) -> FastAPI:
    """The app; raises :class:`osos.config.ConfigError` for a secret key shorter than 32 bytes."""
    app = FastAPI(
        title="OSOS head-end API",
        version=getattr(osos, "__version__", "0.1.0"),
        description="Inventory, meter data and work orders of the OSOS metering head-end. "
        "Authenticate with POST /api/v1/auth/token and send `Authorization: Bearer <token>`.",
        docs_url=None,  # served below from the packaged Swagger UI: no CDN
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.secret = settings.secret_key()
    app.state.logger = log
    app.state.rejections = RejectionCounter()

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness probe, no authentication."""
        return {"status": "ok"}

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        docs = request.url.path == "/docs"
        response.headers.setdefault("Content-Security-Policy", CSP_DOCS if docs else CSP_UI)
        return response

    app.include_router(api_auth.router)
    app.include_router(api_inventory.router)
    app.include_router(api_orders.router)
    app.include_router(api_schedules.router)
    app.include_router(api_users.router)
    app.include_router(api_modems.router)
    app.include_router(api_alarms.router)
    app.include_router(api_logs.router)
    app.include_router(ui_routes.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    _mount_api_docs(app)

    @app.exception_handler(NotAuthenticated)
    def _not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.reason}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return ui_routes.login_redirect(request)

    @app.exception_handler(Forbidden)
    def _forbidden(request: Request, exc: Forbidden) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.reason}, status_code=403)
        return _error_page(request, 403, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return _error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        if _is_api(request):
            return JSONResponse({"detail": problems}, status_code=422)
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in problems)
        return _error_page(request, 400, text)

    @app.exception_handler(Exception)
    def _crash(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        if _is_api(request):
            return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)
        try:
            return _error_page(request, 500, "internal error; it has been logged")
        except Exception:  # noqa: BLE001 - the error page itself failed: plain text, still no trace
            return Response("internal error", status_code=500, media_type="text/plain")

    # Pure ASGI, outermost last: the client address is decided first, then the body limit applies (HES-6).
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ClientAddress, trusted=settings.trusted_proxies)
    return app
