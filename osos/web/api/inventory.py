"""Inventory and meter data over the Web API (HES-9, HES-51, AMR-9, HES-13, HES-63 "transfer meter index values").

Thin routers: the queries live in ``osos.store.queries``; every endpoint needs the "read" permission.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from osos.auth import Principal
from osos.store import queries
from osos.store.db import utcnow
from osos.web.api.schemas import (
    MAX_ID,
    NO_CONTROL,
    ErrorResponse,
    Meter,
    MeterIdPath,
    Modem,
    ModemDetail,
    ModemIdPath,
    RawMessage,
    RegisterValue,
)
from osos.web.security import require

router = APIRouter(prefix="/api/v1", tags=["inventory"], responses={401: {"model": ErrorResponse},
                                                                     403: {"model": ErrorResponse}})
can_read = require("read")


@router.get("/modems", response_model=list[Modem])
def list_modems(
    request: Request,
    q: str | None = Query(None, max_length=64, pattern=NO_CONTROL, description="part of the modem serial"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    _: Principal = Depends(can_read),
) -> list[dict[str, Any]]:
    """Modems with meter counts and an online flag."""
    with request.app.state.engine.connect() as conn:
        return queries.list_modems(conn, now=utcnow(), q=q, limit=limit, offset=offset)


@router.get("/meters", response_model=list[Meter])
def list_meters(
    request: Request,
    q: str | None = Query(None, max_length=128, pattern=NO_CONTROL,
                         description="serial, installation number or subscriber name"),
    modem: int | None = Query(None, ge=1, le=MAX_ID, description="only meters behind this modem id"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    _: Principal = Depends(can_read),
) -> list[dict[str, Any]]:
    """Meters; ``q`` searches serial, installation number or subscriber name (AMR-9)."""
    with request.app.state.engine.connect() as conn:
        return queries.list_meters(conn, q=q, modem_id=modem, limit=limit, offset=offset)


@router.get("/modems/{modem_id}", response_model=ModemDetail, responses={404: {"model": ErrorResponse}})
def get_modem(modem_id: ModemIdPath, request: Request, _: Principal = Depends(can_read)) -> dict[str, Any]:
    """One modem with its identity (HES-22) and online flag."""
    with request.app.state.engine.connect() as conn:
        modem = queries.get_modem(conn, modem_id, now=utcnow())
    if modem is None:
        raise HTTPException(404, f"modem {modem_id} does not exist")
    return modem


def _meter_or_404(conn: Any, meter_id: int) -> dict[str, Any]:
    meter = queries.get_meter(conn, meter_id)
    if meter is None:
        raise HTTPException(404, f"meter {meter_id} does not exist")
    return meter


@router.get("/meters/{meter_id}", response_model=Meter, responses={404: {"model": ErrorResponse}})
def get_meter(meter_id: MeterIdPath, request: Request, _: Principal = Depends(can_read)) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        return _meter_or_404(conn, meter_id)


@router.get("/meters/{meter_id}/registers", response_model=dict[str, RegisterValue],
            responses={404: {"model": ErrorResponse}})
def get_registers(meter_id: MeterIdPath, request: Request, _: Principal = Depends(can_read)) -> dict[str, Any]:
    """Latest value of every OBIS register, the digits exactly as read (AMR-2)."""
    with request.app.state.engine.connect() as conn:
        _meter_or_404(conn, meter_id)
        return queries.latest_registers(conn, meter_id)


@router.get("/meters/{meter_id}/raw", response_model=list[RawMessage], responses={404: {"model": ErrorResponse}})
def get_raw(
    meter_id: MeterIdPath, request: Request, limit: int = Query(10, ge=1, le=200), _: Principal = Depends(can_read)
) -> list[dict[str, Any]]:
    """Latest raw messages of the meter, each with the values parsed from it side by side (HES-13, HES-5)."""
    with request.app.state.engine.connect() as conn:
        _meter_or_404(conn, meter_id)
        return queries.raw_with_parsed(conn, meter_id, limit=limit)
