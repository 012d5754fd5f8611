"""The head-end's log records over the Web API (HES-59: readable only by authorized users): permission
``log.read`` (admin). Filters: category (a stored name such as ``security`` or a spec category such as
``unauthorized_access``), level, from/to; paging with a total."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from osos.auth import Principal
from osos.headend import logs as L
from osos.web.api.schemas import ErrorResponse
from osos.web.security import require

router = APIRouter(prefix="/api/v1/logs", tags=["logs"], responses={401: {"model": ErrorResponse},
                                                                     403: {"model": ErrorResponse}})


@router.get("")
def list_logs(
    request: Request,
    category: str | None = Query(None, max_length=32),
    level: Literal["debug", "info", "warning", "error"] | None = None,
    from_: datetime | None = Query(None, alias="from", description="at or after (ISO 8601)"),
    to: datetime | None = Query(None, description="before (ISO 8601)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    _: Principal = Depends(require("log.read")),
) -> dict[str, Any]:
    """Log records newest first; ``total`` counts every match, ``items`` is the page."""
    with request.app.state.engine.connect() as conn:
        total, items = L.query(conn, category=category, level=level, since=from_, until=to, limit=limit,
                               offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/categories")
def list_categories(_: Principal = Depends(require("log.read"))) -> list[dict[str, Any]]:
    """The HES-59 categories with their retention."""
    return [{"name": c.name, "retention_days": c.retention_days, "stored": list(c.stored), "en": c.en, "tr": c.tr}
            for c in L.categories().values()]
