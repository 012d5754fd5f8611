"""Work orders over the Web API: read, relay, time-set and load-profile orders for a meter or a modem, their status
and attempts, a filtered list, and cancelling (HES-11, HES-12, HES-35, HES-63, AMR-9 "start a reading"; issue 8).
Relay and time-set need operator or admin. An order carries only what its kind permits (a read runs read
directives only, params never carry meter secrets), and relay orders need a modem on a TLS session (HES-54); both
are checked in osos.headend.orders. The lifecycle: docs/orders.md.

The web only queues the order in the database; a head-end dispatcher sends it and records the outcome.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from osos.auth import Principal
from osos.headend.orders import (
    ORDER_PERMISSIONS,
    OrderError,
    OrderOverreach,
    cancel,
    get_order,
    list_orders,
    submit_order,
)
from osos.store.db import utcnow
from osos.web.api.schemas import (
    MAX_ID,
    ErrorResponse,
    Order,
    OrderCancel,
    OrderCreate,
    OrderCreated,
    OrderIdPath,
    OrderKind,
    OrderPage,
    OrderSource,
    OrderStatus,
)
from osos.web.security import Forbidden, log_security, require

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], responses={401: {"model": ErrorResponse},
                                                                         403: {"model": ErrorResponse}})


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": order["id"],
        "kind": order["kind"],
        "status": order["status"],
        "source": order["source"],
        "meter": order["meter_id"],
        "modem": order["modem_id"],
        "request": order["request"],
        "priority": order["priority"],
        "attempts": order["attempts"],
        "created_by": order["created_by"],
        "created_at": order["created_at"],
        "started_at": order["started_at"],
        "finished_at": order["finished_at"],
        "not_before": order["not_before"],
        "expires_at": order["expires_at"],
        "result": order["result"],
        "error": order["error"],
        "attempt_log": order["attempt_log"],
    }


def _check_permission(request: Request, principal: Principal, kind: str) -> None:
    permission = ORDER_PERMISSIONS.get(kind)
    if permission is not None and not principal.can(permission, utcnow()):
        log_security(request, f"forbidden: {permission}", user=principal.username, role=principal.role)
        raise Forbidden(f"role {principal.role!r} may not {permission}")


@router.post("", status_code=201, response_model=OrderCreated,
             responses={200: {"model": OrderCreated, "description": "an identical open order exists: its id "
                                                                     "(HES-12), nothing new is queued"},
                        400: {"model": ErrorResponse}})
def post_order(
    body: OrderCreate, request: Request, principal: Principal = Depends(require("order.read"))
) -> JSONResponse:
    """Queue an order: 201 with the new order, or 200 with the identical open order (same kind, target and
    request) when there is one (HES-12). A relay order cancels an open relay order of the other state for the same
    meter ("superseded by order N"). ``source`` is ``ui`` for the web UI's session, ``api`` for a bearer token."""
    _check_permission(request, principal, body.kind)
    if (body.meter is None) == (body.modem is None):
        raise HTTPException(400, "give exactly one of meter or modem")
    asked = {k: v for k, v in body.model_dump(include={"directive", "params", "state", "start", "end"}).items()
             if v is not None}
    source = "ui" if getattr(request.state, "session_token", None) else "api"
    now = utcnow()
    deadline = body.deadline
    if deadline is not None and deadline.tzinfo is None:
        raise HTTPException(400, "deadline needs a UTC offset")
    settings = request.app.state.settings
    refused: OrderError | None = None
    with request.app.state.engine.begin() as conn:
        try:
            order_id, created = submit_order(
                conn, body.kind, meter_id=body.meter, modem_id=body.modem, created_by=principal.username,
                priority=body.priority, request=asked or None, source=source, now=now,
                deadline=deadline or now + timedelta(seconds=settings.order_ttl_s))
        except OrderError as exc:
            refused = exc
        else:
            order = get_order(conn, order_id)
    if refused is not None:
        if isinstance(refused, OrderOverreach):  # more than the kind permits: an escalation attempt is logged
            log_security(request, f"order refused: {refused}", user=principal.username, role=principal.role)
        raise HTTPException(400, str(refused))
    status = order["status"] if order else "pending"
    return JSONResponse({"id": order_id, "status": status, "existing": not created},
                        status_code=201 if created else 200, headers={"Location": f"/api/v1/orders/{order_id}"})


@router.get("", response_model=OrderPage)
def get_orders(
    request: Request,
    _: Principal = Depends(require("read")),
    status: OrderStatus | None = None,
    kind: OrderKind | None = None,
    meter: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    modem: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    created_by: Annotated[str | None, Query(max_length=64)] = None,
    source: OrderSource | None = None,
    created_from: Annotated[datetime | None, Query(description="created at or after (ISO 8601 with offset)")] = None,
    created_to: Annotated[datetime | None, Query(description="created before (ISO 8601 with offset)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """Orders matching every given filter, newest first, with their attempts, and ``total``: how many match."""
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(400, f"{name} needs a UTC offset")
    with request.app.state.engine.connect() as conn:
        total, items = list_orders(conn, status=status, kind=kind, meter_id=meter, modem_id=modem,
                                   created_by=created_by, source=source, created_from=created_from,
                                   created_to=created_to, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [order_view(o) for o in items]}


@router.get("/{order_id}", response_model=Order, responses={404: {"model": ErrorResponse}})
def read_order(order_id: OrderIdPath, request: Request, _: Principal = Depends(require("read"))) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        order = get_order(conn, order_id)
    if order is None:
        raise HTTPException(404, f"order {order_id} does not exist")
    return order_view(order)


@router.post("/{order_id}/cancel", response_model=Order,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}})
def cancel_order(
    order_id: OrderIdPath, request: Request, body: OrderCancel | None = None,
    principal: Principal = Depends(require("order.read")),
) -> dict[str, Any]:
    """Cancel a pending or running order (the permission of its kind is needed). A running order's answer, when
    it comes, is ignored; a finished order cannot be cancelled (409)."""
    engine = request.app.state.engine
    with engine.connect() as conn:
        order = get_order(conn, order_id)
    if order is None:
        raise HTTPException(404, f"order {order_id} does not exist")
    _check_permission(request, principal, order["kind"])
    reason = f"cancelled by {principal.username}" + (f": {body.reason}" if body and body.reason else "")
    with engine.begin() as conn:
        moved = cancel(conn, order_id, reason)
        order = get_order(conn, order_id)
    if not moved:
        raise HTTPException(409, f"order {order_id} is {order['status'] if order else 'gone'}, not open")
    assert order is not None
    return order_view(order)
