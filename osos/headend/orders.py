"""Work orders: the database is the queue (HES-10, HES-12, HES-63).

The API, UI or scheduler *creates* an order; a dispatcher in any head-end process *claims* it (atomically, so N
workers never send the same order twice), sends it over MQTT and waits for the answer that carries the order's
referenceId. Every outcome is recorded as succeeded or failed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from osos.store.db import as_utc, utcnow
from osos.store.schema import meters, modems, orders

ORDER_KINDS = ("read", "relay", "time-set", "load-profile")
RELAY_STATES = ("connect", "disconnect")
#: the permission each kind needs in the API (HES-60; relay is operator and up)
ORDER_PERMISSIONS = {"read": "order.read", "load-profile": "order.read", "relay": "order.relay",
                     "time-set": "order.program"}
STATUSES = ("pending", "running", "succeeded", "failed")


class OrderError(ValueError):
    """An order that cannot be created as asked (unknown meter, unknown kind ...)."""


def _iso(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise OrderError(f"{what} must be an ISO 8601 date-time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise OrderError(f"{what} {value!r} is not an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def validate_request(kind: str, request: dict[str, Any] | None) -> dict[str, Any]:
    """Check the kind-specific part of an order (HES-11 relay, HES-35 time-set, AMR-5 load profile by range)
    and return it normalised; raises OrderError with a reason the caller can show."""
    request = dict(request or {})
    params = request.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                               for k, v in params.items()):
        raise OrderError("params must be an object of strings or integers")
    directive = request.get("directive")
    if directive is not None and (kind != "read" or not isinstance(directive, str) or not 1 <= len(directive) <= 64):
        raise OrderError("a directive name (1..64 characters) may only be given for a read order")
    if kind == "relay":
        if request.get("state") not in RELAY_STATES:
            raise OrderError(f"a relay order needs state {' or '.join(RELAY_STATES)}")
    elif kind == "load-profile":
        start, end = _iso(request.get("start"), "start"), _iso(request.get("end"), "end")
        if start >= end:
            raise OrderError("start must be before end")
        request["start"], request["end"] = start.isoformat(), end.isoformat()
    return request


def directive_request(kind: str, request: dict[str, Any]) -> dict[str, Any]:
    """The MASS read request for an order: the directive name the meter's library profile provides for the
    kind (the gateway resolves it per meter), its parameters and packet class."""
    params = {k: str(v) for k, v in (request.get("params") or {}).items()}
    if kind == "relay":
        directive, packet = f"relay-{request['state']}", "history"
    elif kind == "time-set":
        directive, packet = "time-set", "history"
    elif kind == "load-profile":
        directive, packet = "load-profile", "loadProfile1"
        params.update({"start": request["start"], "end": request["end"]})
    else:
        directive, packet = request.get("directive") or "readout", request.get("packetClass") or "shortRead"
    out: dict[str, Any] = {"directive": directive, "packetClass": packet}
    if params:
        out["params"] = params
    return out


def create_order(
    conn: Connection,
    kind: str,
    *,
    meter_id: int | None = None,
    modem_id: int | None = None,
    created_by: str | None = None,
    priority: int = 5,
    request: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> int:
    """Queue one order for a meter, or for every meter behind a modem (``modem_id`` without ``meter_id``).
    Asking again for work that is still open returns the open order instead of a duplicate (HES-12)."""
    if kind not in ORDER_KINDS:
        raise OrderError(f"unknown order kind {kind!r}; known: {', '.join(ORDER_KINDS)}")
    if not 0 <= priority <= 9:
        raise OrderError("priority must be 0 (highest) .. 9")
    request = validate_request(kind, request) or None
    if meter_id is not None:
        meter = conn.execute(select(meters.c.id, meters.c.modem_id).where(meters.c.id == meter_id)).first()
        if meter is None:
            raise OrderError(f"meter {meter_id} does not exist")
        if meter.modem_id is None:
            raise OrderError(f"meter {meter_id} has no modem to reach it through")
        modem_id = meter.modem_id
    elif modem_id is not None:
        if conn.execute(select(modems.c.id).where(modems.c.id == modem_id)).first() is None:
            raise OrderError(f"modem {modem_id} does not exist")
    else:
        raise OrderError("an order needs a meter or a modem")
    open_same = conn.execute(
        select(orders.c.id).where(
            and_(
                orders.c.meter_id == meter_id if meter_id is not None else orders.c.meter_id.is_(None),
                orders.c.modem_id == modem_id,
                orders.c.kind == kind,
                orders.c.status.in_(("pending", "running")),
            )
        )
    ).first()
    if open_same is not None and not request:
        return int(open_same.id)  # the same work is already queued: answer with that order, never send twice
    now = now or utcnow()
    result = conn.execute(
        insert(orders).values(
            kind=kind,
            status="pending",
            priority=priority,
            meter_id=meter_id,
            modem_id=modem_id,
            reference_id=f"osos-{uuid.uuid4()}",
            request=request or {},
            attempts=0,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])


def get_order(conn: Connection, order_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    for key in ("created_at", "updated_at", "started_at", "finished_at", "deadline_at"):
        value = as_utc(out.get(key))
        out[key] = value.isoformat() if value else None
    return out


def claim_next(conn: Connection, *, timeout_s: float, now: datetime | None = None) -> dict[str, Any] | None:
    """Take the most urgent pending order and mark it running. Safe with many dispatchers: on PostgreSQL the
    row is locked with SKIP LOCKED; everywhere the status flip is conditional, so only one claimer wins."""
    now = now or utcnow()
    query = (
        select(
            orders,
            modems.c.flag.label("modem_flag"),
            modems.c.serial.label("modem_serial"),
            modems.c.topic_style,
            meters.c.flag.label("meter_flag"),
            meters.c.serial.label("meter_serial"),
            meters.c.protocol.label("meter_protocol"),
        )
        .join(modems, modems.c.id == orders.c.modem_id)
        .outerjoin(meters, meters.c.id == orders.c.meter_id)
        .where(orders.c.status == "pending")
        .order_by(orders.c.priority, orders.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=orders)
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    claimed = conn.execute(
        update(orders)
        .where(and_(orders.c.id == row["id"], orders.c.status == "pending"))
        .values(
            status="running",
            attempts=orders.c.attempts + 1,
            started_at=now,
            updated_at=now,
            deadline_at=now + timedelta(seconds=timeout_s),
        )
    )
    if claimed.rowcount != 1:
        return None
    return dict(row)


def finish(
    conn: Connection,
    reference_id: str,
    *,
    succeeded: bool,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """Record an order's outcome by its referenceId; returns the order id, or None if no open order matched."""
    now = now or utcnow()
    row = conn.execute(
        select(orders.c.id).where(
            and_(orders.c.reference_id == reference_id, orders.c.status.in_(("pending", "running")))
        )
    ).first()
    if row is None:
        return None
    conn.execute(
        update(orders)
        .where(orders.c.id == row.id)
        .values(
            status="succeeded" if succeeded else "failed",
            result=result,
            error=error,
            finished_at=now,
            updated_at=now,
        )
    )
    return int(row.id)


def expire(conn: Connection, *, now: datetime | None = None) -> list[int]:
    """Fail running orders whose answer did not come before their deadline."""
    now = now or utcnow()
    late = [
        int(r.id)
        for r in conn.execute(select(orders.c.id).where(and_(orders.c.status == "running", orders.c.deadline_at < now)))
    ]
    if late:
        conn.execute(
            update(orders)
            .where(orders.c.id.in_(late))
            .values(status="failed", error="no answer before the deadline", finished_at=now, updated_at=now)
        )
    return late
