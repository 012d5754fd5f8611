"""Alarms over the Web API (HES-11, HES-24, HES-25, HES-28, HES-33): list with filters and paging for anyone who
may read; acknowledge and clear with the permission ``alarm.manage`` (operator, admin). Every move is kept with
who and when on the alarm and in the user log (HES-59)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from osos.auth import Principal
from osos.headend import alarms as A
from osos.headend.ingest import write_log
from osos.store.db import as_utc, utcnow
from osos.web.api.schemas import MAX_ID, ErrorResponse
from osos.web.security import require

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses={401: {"model": ErrorResponse},
                                                                         403: {"model": ErrorResponse}})
AlarmIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="alarm id")]


@router.get("")
def list_alarms(
    request: Request,
    state: Literal["raised", "acknowledged", "cleared"] | None = None,
    type: str | None = Query(None, max_length=32, description="normalized type, e.g. powerLoss"),  # noqa: A002
    severity: Literal["critical", "warning", "info"] | None = None,
    modem: int | None = Query(None, ge=1, le=MAX_ID),
    meter: int | None = Query(None, ge=1, le=MAX_ID),
    emergency: bool | None = None,
    from_: datetime | None = Query(None, alias="from", description="received at or after (ISO 8601)"),
    to: datetime | None = Query(None, description="received before (ISO 8601)"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    _: Principal = Depends(require("read")),
) -> dict[str, Any]:
    """Alarms newest first; ``total`` counts every match, ``items`` is the page."""
    with request.app.state.engine.connect() as conn:
        total, items = A.query(conn, state=state, kind=type, severity=severity, modem_id=modem, meter_id=meter,
                               emergency=emergency, since=as_utc(from_), until=as_utc(to), limit=limit,
                               offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/{alarm_id}", responses={404: {"model": ErrorResponse}})
def read_alarm(alarm_id: AlarmIdPath, request: Request, _: Principal = Depends(require("read"))) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        alarm = A.get(conn, alarm_id)
    if alarm is None:
        raise HTTPException(404, f"alarm {alarm_id} does not exist")
    return alarm


def _move(request: Request, alarm_id: int, to: str, principal: Principal) -> dict[str, Any]:
    now = utcnow()
    refused: A.AlarmError | None = None
    with request.app.state.engine.begin() as conn:
        try:
            row = A.move(conn, alarm_id, to, user=principal.username, now=now)
        except A.AlarmError as exc:
            refused, missing = exc, A.get(conn, alarm_id) is None
        else:
            write_log(conn, "user", "info", f"{principal.username} {to} alarm {alarm_id}", now=now,
                      detail={"alarm": alarm_id, "state": to})
            return A.view(row)
    with request.app.state.engine.begin() as conn:  # HES-59 "API command errors": a refused command is kept
        write_log(conn, "api", "warning", f"{principal.username}: {request.method} {request.url.path}: {refused}",
                  now=now, detail={"alarm": alarm_id, "state": to, "user": principal.username})
    raise HTTPException(404 if missing else 409, str(refused))


@router.post("/{alarm_id}/ack", responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def ack_alarm(alarm_id: AlarmIdPath, request: Request,
              principal: Principal = Depends(require("alarm.manage"))) -> dict[str, Any]:
    """raised -> acknowledged (409 from any other state)."""
    return _move(request, alarm_id, "acknowledged", principal)


@router.post("/{alarm_id}/clear", responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def clear_alarm(alarm_id: AlarmIdPath, request: Request,
                principal: Principal = Depends(require("alarm.manage"))) -> dict[str, Any]:
    """raised or acknowledged -> cleared (409 when already cleared)."""
    return _move(request, alarm_id, "cleared", principal)
