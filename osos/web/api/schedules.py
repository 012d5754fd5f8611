"""Schedules over the Web API (HES-10, issue 8): list, create and delete recurring orders for a device group.
Changing schedules needs "schedule.manage" (operator, admin) and the permission of the scheduled kind itself, so
a schedule can never order what its author could not order by hand (HES-60)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from osos.auth import Principal
from osos.headend.orders import ORDER_PERMISSIONS
from osos.headend.scheduler import ScheduleError, add_schedule, get_schedule, list_schedules, remove_schedule
from osos.store.db import utcnow
from osos.web.api.schemas import ErrorResponse, Schedule, ScheduleCreate, ScheduleIdPath
from osos.web.security import Forbidden, log_security, require

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"], responses={401: {"model": ErrorResponse},
                                                                               403: {"model": ErrorResponse}})


@router.get("", response_model=list[Schedule])
def get_schedules(request: Request, _: Principal = Depends(require("read"))) -> list[dict[str, Any]]:
    with request.app.state.engine.connect() as conn:
        return list_schedules(conn)


@router.post("", status_code=201, response_model=Schedule, responses={400: {"model": ErrorResponse}})
def post_schedule(body: ScheduleCreate, request: Request,
                  principal: Principal = Depends(require("schedule.manage"))) -> JSONResponse:
    """Create a schedule; its first run is the first due time from now (in the head-end's time zone)."""
    permission = ORDER_PERMISSIONS.get(body.kind)
    if permission is not None and not principal.can(permission, utcnow()):
        log_security(request, f"forbidden: {permission}", user=principal.username, role=principal.role)
        raise Forbidden(f"role {principal.role!r} may not {permission}")
    group = body.group.model_dump(exclude_none=True)
    try:
        with request.app.state.engine.begin() as conn:
            made = add_schedule(conn, name=body.name, kind=body.kind, cron=body.cron,
                                every_minutes=body.every_minutes, group=group, priority=body.priority,
                                created_by=principal.username, tz=request.app.state.settings.timezone)
    except ScheduleError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse(Schedule.model_validate(made).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"/api/v1/schedules/{made['id']}"})


@router.get("/{schedule_id}", response_model=Schedule, responses={404: {"model": ErrorResponse}})
def read_schedule(schedule_id: ScheduleIdPath, request: Request,
                  _: Principal = Depends(require("read"))) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        found = get_schedule(conn, schedule_id)
    if found is None:
        raise HTTPException(404, f"schedule {schedule_id} does not exist")
    return found


@router.delete("/{schedule_id}", status_code=204, responses={404: {"model": ErrorResponse}})
def delete_schedule(schedule_id: ScheduleIdPath, request: Request,
                    _: Principal = Depends(require("schedule.manage"))) -> Response:
    """Delete a schedule; the orders it already queued stay."""
    with request.app.state.engine.begin() as conn:
        removed = remove_schedule(conn, schedule_id)
    if not removed:
        raise HTTPException(404, f"schedule {schedule_id} does not exist")
    return Response(status_code=204)
