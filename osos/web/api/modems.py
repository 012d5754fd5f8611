"""Modem provisioning over the Web API (HES-4, HES-56, HES-60): permission ``modem.provision``.

``POST /api/v1/modems`` creates the inventory row and the modem's own broker account and answers the generated
password once (OSOS keeps only the username). Listing stays in the inventory router (``GET /api/v1/modems``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from osos.auth import Principal
from osos.headend.inventory import InventoryError
from osos.headend.provisioning import (
    ProvisioningError,
    admin_from_settings,
    provision_modem,
    rotate_modem_password,
    set_modem_enabled,
)
from osos.protocols import mass
from osos.store.db import utcnow
from osos.store.schema import modems
from osos.web.api.schemas import ErrorResponse, ModemIdPath
from osos.web.security import require

router = APIRouter(prefix="/api/v1/modems", tags=["provisioning"],
                   responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                              503: {"model": ErrorResponse}})
can_provision = require("modem.provision")


class ModemCreate(BaseModel):
    flag: str = Field(pattern=r"^[A-Za-z]{3}$", description="flag code, 3 letters")
    serial: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    legacy: bool = Field(False, description="allow the shared MASS topics (the header must still match)")
    client_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{1,64}$",
                                  description="bind the broker account to this MQTT client id")


class ModemCredentials(BaseModel):
    id: int
    flag: str
    serial: str
    username: str
    password: str = Field(description="the broker password: shown only in this answer, never stored by OSOS")


class ModemStatus(BaseModel):
    id: int
    status: str


def _admin(request: Request) -> Any:
    try:
        return admin_from_settings(request.app.state.settings).__enter__()
    except ProvisioningError as exc:
        raise HTTPException(503, f"broker administration unavailable: {exc}") from None


def _modem(request: Request, modem_id: int) -> Any:
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(modems.c.id, modems.c.flag, modems.c.serial)
                           .where(modems.c.id == modem_id)).first()
    if row is None:
        raise HTTPException(404, "no such modem")
    return row


@router.post("", status_code=201, response_model=ModemCredentials, responses={409: {"model": ErrorResponse}})
def create_modem(body: ModemCreate, request: Request, principal: Principal = Depends(can_provision)) -> JSONResponse:
    """Provision a modem: inventory row + broker account; the password is in this answer only."""
    engine = request.app.state.engine
    admin = _admin(request)
    try:
        creds = provision_modem(engine, admin, mass.Topics(request.app.state.settings.topic_root), body.flag,
                                body.serial, legacy=body.legacy, by=principal.username, now=utcnow(),
                                client_id=body.client_id)
    except InventoryError as exc:
        raise HTTPException(409, str(exc)) from None
    except ProvisioningError as exc:
        raise HTTPException(503, str(exc)) from None
    finally:
        admin.__exit__(None, None, None)
    with engine.connect() as conn:
        modem_id = conn.execute(select(modems.c.id).where(modems.c.flag == body.flag,
                                                          modems.c.serial == body.serial)).scalar_one()
    return JSONResponse({"id": modem_id, "flag": body.flag, "serial": body.serial, "username": creds.username,
                         "password": creds.password}, status_code=201,
                        headers={"Location": f"/api/v1/modems/{modem_id}", "Cache-Control": "no-store"})


def _toggle(request: Request, modem_id: int, enabled: bool, principal: Principal) -> dict[str, Any]:
    row = _modem(request, modem_id)
    admin = _admin(request)
    try:
        set_modem_enabled(request.app.state.engine, admin, row.flag, row.serial, enabled, by=principal.username,
                          now=utcnow())
    except ProvisioningError as exc:
        raise HTTPException(503, str(exc)) from None
    finally:
        admin.__exit__(None, None, None)
    return {"id": modem_id, "status": "active" if enabled else "disabled"}


@router.post("/{modem_id}/disable", response_model=ModemStatus, responses={404: {"model": ErrorResponse}})
def disable_modem(modem_id: ModemIdPath, request: Request,
                  principal: Principal = Depends(can_provision)) -> dict[str, Any]:
    """Disable a modem: its broker account is disabled and its live session dropped."""
    return _toggle(request, modem_id, False, principal)


@router.post("/{modem_id}/enable", response_model=ModemStatus, responses={404: {"model": ErrorResponse}})
def enable_modem(modem_id: ModemIdPath, request: Request,
                 principal: Principal = Depends(can_provision)) -> dict[str, Any]:
    return _toggle(request, modem_id, True, principal)


@router.post("/{modem_id}/rotate-password", response_model=ModemCredentials,
             responses={404: {"model": ErrorResponse}})
def rotate_password(modem_id: ModemIdPath, request: Request,
                    principal: Principal = Depends(can_provision)) -> JSONResponse:
    """A new broker password, in this answer only; the old one stops working at once."""
    row = _modem(request, modem_id)
    admin = _admin(request)
    try:
        creds = rotate_modem_password(request.app.state.engine, admin, row.flag, row.serial, by=principal.username,
                                      now=utcnow())
    except ProvisioningError as exc:
        raise HTTPException(503, str(exc)) from None
    finally:
        admin.__exit__(None, None, None)
    return JSONResponse({"id": modem_id, "flag": row.flag, "serial": row.serial, "username": creds.username,
                         "password": creds.password}, headers={"Cache-Control": "no-store"})
