"""Work orders over the Web API: create a read order, follow its status (HES-12, HES-63, AMR-9 "start a reading").

The web only queues the order in the database; a head-end dispatcher sends it and records the outcome.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from osos.auth import Principal
from osos.headend.orders import OrderError, create_order, get_order
from osos.web.api.schemas import ErrorResponse, Order, OrderCreate, OrderCreated, OrderIdPath
from osos.web.security import require

router = APIRouter(prefix="/api/v1/orders", tags=["orders"], responses={401: {"model": ErrorResponse},
                                                                         403: {"model": ErrorResponse}})


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": order["id"],
        "kind": order["kind"],
        "status": order["status"],
        "meter": order["meter_id"],
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
    with request.app.state.engine.begin() as conn:
        try:
            order_id = create_order(conn, body.kind, meter_id=body.meter, created_by=principal.username,
                                    priority=body.priority)
        except OrderError as exc:
            raise HTTPException(400, str(exc)) from None
        order = get_order(conn, order_id)
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
