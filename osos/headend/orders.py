"""Work orders: the database is the queue (HES-10, HES-12, HES-63).

The API, UI or scheduler *creates* an order; a dispatcher in any head-end process *claims* it (atomically, so N
workers never send the same order twice), sends it over MQTT and waits for the answer that carries the order's
referenceId. Every outcome is recorded as succeeded or failed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select, update
from sqlalchemy.engine import Connection

from osos.protocols import mass
from osos.store.db import as_utc, utcnow
from osos.store.schema import meters, modems, orders

ORDER_KINDS = ("read", "relay", "time-set", "load-profile")
RELAY_STATES = ("connect", "disconnect")
#: the permission each kind needs in the API (HES-60; relay is operator and up)
ORDER_PERMISSIONS = {"read": "order.read", "load-profile": "order.read", "relay": "order.relay",
                     "time-set": "order.program"}
#: kinds that change a meter in a way an eavesdropper or forger must not reach: only over a TLS session (HES-54).
#: Firmware and key orders join this set when they exist.
TLS_KINDS = frozenset({"relay"})
#: the directives a read order may name: the standard set's reading programs (osos/data/directives, the
#: generated sets of osos/field/directive_library.py). Everything else (time-set, relay-*, tariff, parameter,
#: firmware programs, a gateway's custom directives) changes the meter or is unknown here, and needs its own kind.
READ_DIRECTIVES = frozenset({"readout", "short-read", "load-profile", "load-profile-2"})
#: keys that name a meter's link or secret: they come from the gateway's configuration, never from an order
SECRET_PARAMS = frozenset({"password", "address", "ek", "ak", "auth", "client_sap", "key", "server_logical",
                           "server_physical", "dlms_transport", "primary", "unit", "max_baud"})
STATUSES = ("pending", "running", "succeeded", "failed")
#: every order's referenceId starts so (create_order): a message with another referenceId answers no order
REFERENCE_PREFIX = "osos-"
#: the order lifecycle, in one place: move -> (statuses it may start from, status it ends in). Every status change
#: is a conditional UPDATE on these (see _move), so two writers can never both win: an order expired first stays
#: failed when its answer comes late, and an answer committed first is never overwritten by the expiry.
MOVES: dict[str, tuple[frozenset[str], str]] = {
    "claim": (frozenset({"pending"}), "running"),
    "succeed": (frozenset({"pending", "running"}), "succeeded"),
    "fail": (frozenset({"pending", "running"}), "failed"),
    "expire": (frozenset({"running"}), "failed"),
}


class OrderError(ValueError):
    """An order that cannot be created as asked (unknown meter, unknown kind ...)."""


class OrderOverreach(OrderError):
    """An order asking for more than its kind permits (a write directive in a read, meter secrets in params):
    refused like any bad order, and worth a security log row (issue 7)."""


def _iso(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise OrderError(f"{what} must be an ISO 8601 date-time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise OrderError(f"{what} {value!r} is not an ISO 8601 date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


#: the params each kind may carry, each with its check (HES-6: an order carries only what its kind permits)
PARAM_RULES: dict[str, dict[str, Any]] = {
    "read": {"start": lambda v: _iso(v, "params.start").isoformat(),
             "end": lambda v: _iso(v, "params.end").isoformat()},
    "load-profile": {},
    "relay": {},
    "time-set": {},
}


def _params(kind: str, params: Any) -> dict[str, str]:
    if not isinstance(params, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                               for k, v in params.items()):
        raise OrderError("params must be an object of strings or integers")
    secret = sorted(k for k in params if k.lower() in SECRET_PARAMS)
    if secret:
        raise OrderOverreach(f"params may not set {', '.join(secret)}: a meter's link and secrets come from the "
                         "gateway's configuration, never from an order")
    rules = PARAM_RULES[kind]
    unknown = sorted(k for k in params if k not in rules)
    if unknown:
        allowed = ", ".join(sorted(rules)) or "none"
        raise OrderError(f"a {kind} order takes no param {', '.join(unknown)} (allowed: {allowed})")
    return {k: rules[k](v) for k, v in params.items()}


def validate_request(kind: str, request: dict[str, Any] | None) -> dict[str, Any]:
    """Check the kind-specific part of an order (HES-11 relay, HES-35 time-set, AMR-5 load profile by range)
    and return it normalised; raises OrderError with a reason the caller can show. A read runs a read directive
    only, and no order's params can reach a meter's secrets or link settings (issue 7)."""
    if kind not in ORDER_KINDS:
        raise OrderError(f"unknown order kind {kind!r}; known: {', '.join(ORDER_KINDS)}")
    request = dict(request or {})
    known = {"directive", "params", "state", "start", "end", "packetClass"}
    extra = sorted(set(request) - known)
    if extra:
        raise OrderError(f"unknown order field {', '.join(extra)}")
    directive = request.get("directive")
    if directive is not None:
        if kind != "read" or not isinstance(directive, str) or not 1 <= len(directive) <= 64:
            raise OrderError("a directive name (1..64 characters) may only be given for a read order")
        if directive not in READ_DIRECTIVES:
            raise OrderOverreach(f"directive {directive!r} is not a read directive (a read order runs one of "
                                 f"{', '.join(sorted(READ_DIRECTIVES))}); time-set, relay and programming actions "
                                 "are orders of their own kind")
    if "params" in request:
        request["params"] = _params(kind, request["params"])
        if not request["params"]:
            del request["params"]
    packet = request.get("packetClass")
    if packet is not None and (kind != "read" or packet not in mass.PACKET_CLASSES):
        raise OrderError(f"packetClass must be one of {', '.join(mass.PACKET_CLASSES)}, for a read order")
    if "state" in request and kind != "relay":
        raise OrderError("state may only be given for a relay order")
    if ("start" in request or "end" in request) and kind != "load-profile":
        raise OrderError("start and end may only be given for a load-profile order (a read takes them in params)")
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
    kind (the gateway resolves it per meter), its parameters and packet class. The request is validated again
    here, so an order written to the table by other means still carries only what its kind permits."""
    request = validate_request(kind, request)
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
    source: str = "api",
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
    if kind in TLS_KINDS:
        transport = conn.execute(select(modems.c.transport).where(modems.c.id == modem_id)).scalar_one_or_none()
        if transport != "tls":
            raise OrderError(tls_refusal(kind, transport))
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
            reference_id=f"{REFERENCE_PREFIX}{uuid.uuid4()}",
            request=request or {},
            attempts=0,
            created_by=created_by,
            source=source,  # api | ui | schedule | system (issue 8)
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


def tls_refusal(kind: str, transport: str | None) -> str:
    """Why a TLS-only order cannot go to a modem (HES-54)."""
    seen = f"its last session was {transport}" if transport else "it has not been heard over any session yet"
    return f"a {kind} order needs a TLS session to the modem (HES-54); {seen}"


def _move(conn: Connection, order_id: int, move: str, *where: ColumnElement[bool], now: datetime,
          **values: Any) -> bool:
    """Apply one lifecycle move of :data:`MOVES` to an order, only if it is still in a status the move starts
    from (checked by the UPDATE itself, so concurrent writers serialise on the row); True if it moved."""
    sources, target = MOVES[move]
    result = conn.execute(
        update(orders)
        .where(and_(orders.c.id == order_id, orders.c.status.in_(sorted(sources)), *where))
        .values(status=target, updated_at=now, **values)
    )
    return result.rowcount == 1


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
            modems.c.transport.label("modem_transport"),
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
    if not _move(conn, row["id"], "claim", now=now, attempts=orders.c.attempts + 1, started_at=now,
                 deadline_at=now + timedelta(seconds=timeout_s)):
        return None
    return dict(row)


def finish(
    conn: Connection,
    reference_id: str,
    *,
    succeeded: bool,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    modem_id: int | None = None,
    now: datetime | None = None,
) -> int | None:
    """Record an order's outcome by its referenceId; returns the order id, or None if no open order matched.
    With ``modem_id`` only an order sent to that modem matches: an answer closes only its own order (HES-6)."""
    now = now or utcnow()
    query = select(orders.c.id).where(
        and_(orders.c.reference_id == reference_id, orders.c.status.in_(sorted(MOVES["succeed"][0])))
    )
    if modem_id is not None:
        query = query.where(orders.c.modem_id == modem_id)
    row = conn.execute(query).first()
    if row is None:
        return None
    moved = _move(conn, row.id, "succeed" if succeeded else "fail", now=now, result=result, error=error,
                  finished_at=now)
    return int(row.id) if moved else None


def fail(conn: Connection, order_id: int, error: str, *, now: datetime | None = None) -> bool:
    """Fail an open order that must not go out (e.g. a TLS-only kind to a plain session, HES-54)."""
    now = now or utcnow()
    return _move(conn, order_id, "fail", now=now, error=error, finished_at=now)


def late_orders(conn: Connection, *, now: datetime) -> list[int]:
    """Running orders whose deadline has passed."""
    query = select(orders.c.id).where(and_(orders.c.status == "running", orders.c.deadline_at < now))
    return [int(r.id) for r in conn.execute(query.order_by(orders.c.id))]


def expire(conn: Connection, *, now: datetime | None = None) -> list[int]:
    """Fail running orders whose answer did not come before their deadline. Each move is conditional, so an
    order answered between the select and the update keeps its answer."""
    now = now or utcnow()
    return [
        order_id
        for order_id in late_orders(conn, now=now)
        if _move(conn, order_id, "expire", orders.c.deadline_at < now, now=now,
                 error="no answer before the deadline", finished_at=now)
    ]
