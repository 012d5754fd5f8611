"""Work orders over the Web API: read, relay, time-set and load-profile orders for a meter or a modem, and their
status (HES-11, HES-12, HES-35, HES-63, AMR-9 "start a reading"). Relay and time-set need operator or admin.
An order carries only what its kind permits (a read runs read directives only, params never carry meter secrets),
and relay orders need a modem on a TLS session (HES-54); both are checked in osos.headend.orders.

The web only queues the order in the database; a head-end dispatcher sends it and records the outcome.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from osos.auth import Principal
from osos.headend.orders import ORDER_PERMISSIONS, OrderError, OrderOverreach, create_order, get_order
from osos.store.db import utcnow
from osos.web.api.schemas import ErrorResponse, Order, OrderCreate, OrderCreated, OrderIdPath
from osos.web.security import Forbidden, log_security, require

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], responses={401: {"model": ErrorResponse},
                                                                         403: {"model": ErrorResponse}})


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": order["id"],
        "kind": order["kind"],
        "status": order["status"],
        "meter": order["meter_id"],
        "modem": order["modem_id"],
        "request": order["request"],
        "priority": order["priority"],
        "attempts": order["attempts"],
        "created_by": order["created_by"],
        "created_at": order["created_at"],
        "started_at": order["started_at"],
        "finished_at": order["finished_at"],
        "result": order["result"],
        "error": order["error"],
    }


@router.post("", status_code=201, response_model=OrderCreated, responses={400: {"model": ErrorResponse}})
def post_order(
    body: OrderCreate, request: Request, principal: Principal = Depends(require("order.read"))
) -> JSONResponse:
    """Queue an order. If the same work is already open for that meter, that order is answered (HES-12)."""
    permission = ORDER_PERMISSIONS.get(body.kind)
    if permission is not None and not principal.can(permission, utcnow()):
        log_security(request, f"forbidden: {permission}", user=principal.username, role=principal.role)
        raise Forbidden(f"role {principal.role!r} may not {permission}")
    if (body.meter is None) == (body.modem is None):
        raise HTTPException(400, "give exactly one of meter or modem")
    asked = {k: v for k, v in body.model_dump(include={"directive", "params", "state", "start", "end"}).items()
             if v is not None}
    refused: OrderError | None = None
    with request.app.state.engine.begin() as conn:
        try:
            order_id = create_order(conn, body.kind, meter_id=body.meter, modem_id=body.modem,
                                    created_by=principal.username, priority=body.priority, request=asked or None)
        except OrderError as exc:
            refused = exc
        else:
            order = get_order(conn, order_id)
    if refused is not None:
        if isinstance(refused, OrderOverreach):  # more than the kind permits: an escalation attempt is logged
            log_security(request, f"order refused: {refused}", user=principal.username, role=principal.role)
        raise HTTPException(400, str(refused))
    status = order["status"] if order else "pending"
    return JSONResponse({"id": order_id, "status": status}, status_code=201,
                        headers={"Location": f"/api/v1/orders/{order_id}"})


@router.get("/{order_id}", response_model=Order, responses={404: {"model": ErrorResponse}})
def read_order(order_id: OrderIdPath, request: Request, _: Principal = Depends(require("read"))) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        order = get_order(conn, order_id)
    if order is None:
        raise HTTPException(404, f"order {order_id} does not exist")
    return order_view(order)
