"""User administration over the Web API: list, create, change role, disable/enable, delete, set a password
(HES-56, HES-60, HES-59). Every endpoint needs ``user.manage``; every change is audited by ``osos.auth`` as a
log_records row of category "user" naming the acting user.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from osos.auth import (
    AuthError,
    Principal,
    UserConflict,
    UserNotFound,
    create_user,
    delete_user,
    find_user,
    generate_password,
    list_users,
    set_disabled,
    set_password,
    set_role,
)
from osos.store.db import utcnow
from osos.web.api.schemas import (
    ErrorResponse,
    PasswordResult,
    PasswordSet,
    User,
    UserCreate,
    UserCreated,
    UserIdPath,
    UserPatch,
)
from osos.web.security import require

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses={
    401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
    409: {"model": ErrorResponse}})
can_manage = require("user.manage")


def _http(exc: AuthError) -> HTTPException:
    """Not found 404, invariant (duplicate, last admin) 409, refused input (weak password, bad name) 400."""
    if isinstance(exc, UserNotFound):
        return HTTPException(404, exc.reason)
    if isinstance(exc, UserConflict):
        return HTTPException(409, exc.reason)
    return HTTPException(400, exc.reason)


def _user(row: Any) -> dict[str, Any]:
    return {k: getattr(row, k) for k in ("id", "username", "role", "disabled", "created_at", "updated_at")}


@router.get("", response_model=list[User])
def users_list(request: Request, _: Principal = Depends(can_manage)) -> list[dict[str, Any]]:
    """Every account (no password hashes)."""
    with request.app.state.engine.connect() as conn:
        return list_users(conn)


@router.post("", response_model=UserCreated, status_code=201)
def users_create(body: UserCreate, request: Request, principal: Principal = Depends(can_manage)) -> dict[str, Any]:
    """Create a user; without ``password`` a strong one is generated and returned only in this answer."""
    password = body.password or generate_password()
    try:
        with request.app.state.engine.begin() as conn:
            user_id = create_user(conn, body.username, password, body.role, now=utcnow(), actor=principal.username)
            row = find_user(conn, user_id)
    except AuthError as exc:
        raise _http(exc) from None
    return {**_user(row), "password": None if body.password else password}


@router.patch("/{user_id}", response_model=User)
def users_patch(user_id: UserIdPath, body: UserPatch, request: Request,
                principal: Principal = Depends(can_manage)) -> dict[str, Any]:
    """Change the role and/or disable (ends every session) or enable; the last enabled admin stays."""
    now = utcnow()
    try:
        with request.app.state.engine.begin() as conn:
            row = find_user(conn, user_id)
            if body.role is not None:
                row = set_role(conn, user_id, body.role, actor=principal.username, now=now)
            if body.disabled is not None:
                row = set_disabled(conn, user_id, body.disabled, actor=principal.username, now=now)
    except AuthError as exc:
        raise _http(exc) from None
    return _user(row)


@router.delete("/{user_id}", status_code=204, response_class=Response)
def users_delete(user_id: UserIdPath, request: Request, principal: Principal = Depends(can_manage)) -> Response:
    """Delete a user; its tokens stop working at once (not the last enabled admin)."""
    try:
        with request.app.state.engine.begin() as conn:
            delete_user(conn, user_id, actor=principal.username, now=utcnow())
    except AuthError as exc:
        raise _http(exc) from None
    return Response(status_code=204)


@router.post("/{user_id}/password", response_model=PasswordResult)
def users_password(user_id: UserIdPath, body: PasswordSet, request: Request,
                   principal: Principal = Depends(can_manage)) -> dict[str, Any]:
    """Set a password (policy checked) or, without one, generate it and return it once; ends the user's sessions."""
    password = body.password or generate_password()
    try:
        with request.app.state.engine.begin() as conn:
            set_password(conn, user_id, password, actor=principal.username, now=utcnow())
    except AuthError as exc:
        raise _http(exc) from None
    return {"password": None if body.password else password}
