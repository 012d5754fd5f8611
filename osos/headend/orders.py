"""Work orders: the database is the queue (HES-10, HES-12, HES-63).

The API, UI or scheduler *creates* an order; a dispatcher in any head-end process *claims* it (atomically, so N
workers never send the same order twice), sends it over MQTT and waits for the answer that carries the order's
referenceId. Every send is an attempt (``order_attempts``); a timeout or a transient device failure goes back to
``pending`` after a backoff until the kind's attempts are used up; an order ends ``succeeded``, ``failed`` (with
the reason), ``expired`` (its deadline passed without success) or ``cancelled``. The full rules: docs/orders.md.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, String, and_, cast, func, insert, literal, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from osos.protocols import mass
from osos.store.db import as_utc, to_utc, utcnow
from osos.store.schema import OPEN as OPEN_SQL
from osos.store.schema import meters, modems, order_attempts, orders

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
STATUSES = ("pending", "running", "succeeded", "failed", "expired", "cancelled")
OPEN_STATUSES = ("pending", "running")
#: where an order comes from (issue 8 item 9): the REST API, the web UI, the head-end's scheduler, the system itself
SOURCES = ("api", "ui", "schedule", "system")
#: every order's referenceId starts so (create_order): a message with another referenceId answers no order
REFERENCE_PREFIX = "osos-"
#: the order lifecycle, in one place: move -> (statuses it may start from, status it ends in). Every status change
#: is a conditional UPDATE on these (see _move), so two writers can never both win: an order expired first stays
#: failed when its answer comes late, and an answer committed first is never overwritten by the expiry.
MOVES: dict[str, tuple[frozenset[str], str]] = {
    "claim": (frozenset({"pending"}), "running"),
    "succeed": (frozenset({"pending", "running"}), "succeeded"),
    "fail": (frozenset({"pending", "running"}), "failed"),
    # an attempt timed out or failed transiently and attempts are left: back to the queue after a backoff
    "retry": (frozenset({"running"}), "pending"),
    # the answer deadline of the last attempt passed: failed, "no answer before the deadline"
    "expire": (frozenset({"running"}), "failed"),
    # the order's own deadline (expires_at) passed before it succeeded: never sent again
    "lapse": (frozenset({"pending", "running"}), "expired"),
    # by a user, or superseded by a contradicting order (HES-12); a late answer to a cancelled order is ignored
    "cancel": (frozenset({"pending", "running"}), "cancelled"),
}
#: how long an order may stay open (waiting for its modem, retrying) unless its creator says otherwise
DEFAULT_TTL = timedelta(hours=24)
#: a modem heard from before (last_seen_at / last_heartbeat_at) but not within this window is offline: its orders
#: wait for it instead of going out. The UI's online flag uses the same window (osos.store.queries.online_window:
#: 3 heartbeat periods of 60 s, at least 5 minutes), so an order waits exactly while the UI shows the modem offline.
DEFAULT_OFFLINE_AFTER_S = 300.0
#: gateway fail codes of a read that are worth another attempt: link down (1), meter timeout (2), bad BCC (6).
#: Everything else (unknown directive, unsupported, missing secret, a refusal in the ack) fails at once.
RETRYABLE_FAIL_CODES = frozenset({1, 2, 6})
#: kinds where two open orders for one meter contradict each other: the later wins, the earlier is cancelled
EXCLUSIVE_KINDS = frozenset({"relay"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart an order of one kind is sent (issue 8 item 1): ``attempts`` sends in all, the
    n-th retry after ``interval_s * backoff ** (n - 1)`` seconds."""

    attempts: int
    interval_s: float
    backoff: float = 2.0

    def delay(self, attempt: int) -> timedelta:
        """The wait after the ``attempt``-th send failed."""
        return timedelta(seconds=self.interval_s * self.backoff ** max(attempt - 1, 0))


#: defaults per kind, overridable with OSOS_ORDER_RETRIES ("read=3/60/2,relay=2/30/1"). Reads and load profiles
#: are idempotent and their links (GPRS, PLC) drop for minutes: 3 sends over ~3 minutes. A relay order is
#: idempotent too (a state, not a toggle) but a customer waits on it: 3 sends 30 s apart, no growth. A time-set
#: writes the gateway's clock at execution time, so a retry never writes a stale time: 2 sends.
RETRY_POLICIES: dict[str, RetryPolicy] = {
    "read": RetryPolicy(3, 60, 2),
    "load-profile": RetryPolicy(3, 60, 2),
    "relay": RetryPolicy(3, 30, 1),
    "time-set": RetryPolicy(2, 60, 1),
}


def parse_retry_policies(text: str) -> dict[str, RetryPolicy]:
    """``kind=attempts/interval_s[/backoff],...`` (OSOS_ORDER_RETRIES) over :data:`RETRY_POLICIES`."""
    out = dict(RETRY_POLICIES)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, spec = item.partition("=")
        fields = spec.split("/")
        if kind.strip() not in ORDER_KINDS or len(fields) not in (2, 3):
            raise ValueError(f"bad retry policy {item!r}: kind=attempts/interval_s[/backoff] for a known kind")
        attempts, interval = int(fields[0]), float(fields[1])
        backoff = float(fields[2]) if len(fields) == 3 else 1.0
        if attempts < 1 or interval < 0 or backoff < 1:
            raise ValueError(f"bad retry policy {item!r}: attempts >= 1, interval >= 0, backoff >= 1")
        out[kind.strip()] = RetryPolicy(attempts, interval, backoff)
    return out


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


def request_key(kind: str, meter_id: int | None, modem_id: int, request: dict[str, Any] | None) -> str:
    """What makes two orders the same work (HES-12): kind, target and the normalised request (validated, so the
    same ask spelt differently, e.g. times in another offset, has one key)."""
    canonical = json.dumps(_canonical(request or {}), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return f"{kind}|{meter_id if meter_id is not None else '-'}|{modem_id}|{digest}"


def _canonical(value: Any) -> Any:
    """A request with its times in UTC (a range asked in +03:00 and in UTC is the same work)."""
    if isinstance(value, dict):
        return {k: _utc_text(v) if k in ("start", "end") else _canonical(v) for k, v in value.items()}
    return value


def _utc_text(value: Any) -> Any:
    try:
        return _iso(value, "time").astimezone(UTC).isoformat()
    except OrderError:
        return value


def exclusive_key(kind: str, meter_id: int | None, modem_id: int) -> str | None:
    """Orders with one exclusive key contradict each other (a relay connect and disconnect for one meter)."""
    if kind not in EXCLUSIVE_KINDS:
        return None
    return f"{kind}|{meter_id}" if meter_id is not None else f"{kind}|modem:{modem_id}"


def create_order(
    conn: Connection,
    kind: str,
    *,
    meter_id: int | None = None,
    modem_id: int | None = None,
    created_by: str | None = None,
    priority: int = 5,
    request: dict[str, Any] | None = None,
    source: str = "api",
    deadline: datetime | None = None,
    max_attempts: int | None = None,
    now: datetime | None = None,
) -> int:
    """Queue one order for a meter, or for every meter behind a modem (``modem_id`` without ``meter_id``), and
    return its id. Asking again for work that is still open returns the open order instead (HES-12)."""
    return submit_order(conn, kind, meter_id=meter_id, modem_id=modem_id, created_by=created_by, priority=priority,
                        request=request, source=source, deadline=deadline, max_attempts=max_attempts, now=now)[0]


def submit_order(
    conn: Connection,
    kind: str,
    *,
    meter_id: int | None = None,
    modem_id: int | None = None,
    created_by: str | None = None,
    priority: int = 5,
    request: dict[str, Any] | None = None,
    source: str = "api",
    deadline: datetime | None = None,
    max_attempts: int | None = None,
    now: datetime | None = None,
) -> tuple[int, bool]:
    """:func:`create_order` that also says whether the order is new (True) or an identical open one (False).

    No duplicates, no contradictions (HES-12): an open order with the same kind, target and normalised request is
    answered instead of a new one; a relay order cancels every open relay order of the other state for the same
    meter ("superseded by order N": the later one wins)."""
    if kind not in ORDER_KINDS:
        raise OrderError(f"unknown order kind {kind!r}; known: {', '.join(ORDER_KINDS)}")
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise OrderError("priority must be 0 .. 9 (9 is the most urgent)")
    if source not in SOURCES:
        raise OrderError(f"source must be one of {', '.join(SOURCES)}")
    if max_attempts is not None and not 1 <= max_attempts <= 100:
        raise OrderError("max_attempts must be 1 .. 100")
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
    assert modem_id is not None
    if kind in TLS_KINDS:
        transport = conn.execute(select(modems.c.transport).where(modems.c.id == modem_id)).scalar_one_or_none()
        if transport != "tls":
            raise OrderError(tls_refusal(kind, transport))
    now = now or utcnow()
    deadline = deadline or now + DEFAULT_TTL
    if deadline <= now:
        raise OrderError("the deadline must be in the future")
    key = request_key(kind, meter_id, modem_id, request)
    exclusive = exclusive_key(kind, meter_id, modem_id)
    if exclusive is not None and conn.dialect.name == "postgresql":
        # contradicting orders for one target serialise on its modem row (SQLite serialises all writers anyway)
        conn.execute(select(modems.c.id).where(modems.c.id == modem_id).with_for_update())
    existing = open_duplicate(conn, key)
    if existing is not None:
        return existing, False  # the same work is already queued: answer with that order, never send twice
    values = {
        "kind": kind, "status": "pending", "priority": priority, "meter_id": meter_id, "modem_id": modem_id,
        "reference_id": f"{REFERENCE_PREFIX}{uuid.uuid4()}", "request": request or {}, "attempts": 0,
        "created_by": created_by, "created_at": now, "updated_at": now, "source": source, "expires_at": deadline,
        "max_attempts": max_attempts, "dedup_key": key, "exclusive_key": exclusive,
    }
    try:
        with conn.begin_nested():
            order_id = int(conn.execute(insert(orders).values(**values)).inserted_primary_key[0])
    except IntegrityError:  # an identical order was committed between our look and our insert
        existing = open_duplicate(conn, key)
        if existing is None:
            raise
        return existing, False
    if exclusive is not None:
        earlier = conn.execute(
            select(orders.c.id).where(and_(orders.c.exclusive_key == exclusive, orders.c.id != order_id,
                                           orders.c.status.in_(OPEN_STATUSES)))
        ).scalars().all()
        for other in earlier:
            cancel(conn, other, f"superseded by order {order_id}", now=now)
    return order_id, True


def bulk_create(
    conn: Connection,
    kind: str,
    meter_ids: Any,
    *,
    created_by: str | None = None,
    priority: int | ColumnElement[int] = 5,
    request: dict[str, Any] | None = None,
    source: str = "schedule",
    deadline: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Queue one order per meter of ``meter_ids`` (a SELECT of meter ids, e.g. a device group) in one
    INSERT ... SELECT, skipping meters with an identical open order (the open-order unique index, HES-12); returns
    how many were queued. For the scheduler and bulk work (bench/orders.py): kinds with contradiction rules or TLS
    needs go through :func:`submit_order` one by one. ``priority`` may be a SQL expression over ``meters``."""
    if kind in EXCLUSIVE_KINDS or kind in TLS_KINDS:
        raise OrderError(f"{kind} orders are created one by one (submit_order): they supersede or need TLS")
    if source not in SOURCES:
        raise OrderError(f"source must be one of {', '.join(SOURCES)}")
    request = validate_request(kind, request) or None
    now = now or utcnow()
    deadline = deadline or now + DEFAULT_TTL
    digest = request_key(kind, 0, 0, request).rsplit("|", 1)[1]
    sep = literal("|")
    key = (literal(f"{kind}|") + cast(meters.c.id, String) + sep + cast(meters.c.modem_id, String) + sep
           + literal(digest))
    if conn.dialect.name == "postgresql":
        reference = literal(REFERENCE_PREFIX) + cast(func.gen_random_uuid(), String)
    else:
        reference = literal(REFERENCE_PREFIX) + func.lower(func.hex(func.randomblob(16)))
    source_rows = select(
        literal(kind), literal("pending"), priority if not isinstance(priority, int) else literal(priority),
        meters.c.id, meters.c.modem_id, reference, literal(request or {}, JSON), literal(0), literal(created_by),
        literal(now, orders.c.created_at.type), literal(now, orders.c.updated_at.type), literal(source),
        literal(deadline, orders.c.expires_at.type), key,
    ).where(and_(meters.c.id.in_(meter_ids), meters.c.modem_id.is_not(None)))
    columns = ["kind", "status", "priority", "meter_id", "modem_id", "reference_id", "request", "attempts",
               "created_by", "created_at", "updated_at", "source", "expires_at", "dedup_key"]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(orders).from_select(columns, source_rows).on_conflict_do_nothing(
        index_elements=[orders.c.dedup_key], index_where=text(OPEN_SQL))  # the partial index's own predicate
    if conn.dialect.name == "postgresql":  # the driver reports no rowcount for INSERT ... SELECT here: count it
        inserted = stmt.returning(orders.c.id).cte("inserted")
        return int(conn.execute(select(func.count()).select_from(inserted)).scalar_one())
    return int(conn.execute(stmt).rowcount or 0)


def open_duplicate(conn: Connection, key: str) -> int | None:
    """The open order doing the same work (same :func:`request_key`), if any."""
    found = conn.execute(
        select(orders.c.id).where(and_(orders.c.dedup_key == key, orders.c.status.in_(OPEN_STATUSES)))
        .order_by(orders.c.id).limit(1)
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def _iso_or_none(value: Any) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


def attempts_of(conn: Connection, order_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every recorded attempt of these orders, oldest first."""
    out: dict[int, list[dict[str, Any]]] = {oid: [] for oid in order_ids}
    if not order_ids:
        return out
    rows = conn.execute(select(order_attempts).where(order_attempts.c.order_id.in_(order_ids))
                        .order_by(order_attempts.c.order_id, order_attempts.c.attempt)).mappings()
    for row in rows:
        out[row["order_id"]].append({"attempt": row["attempt"], "sent_at": _iso_or_none(row["sent_at"]),
                                     "answered_at": _iso_or_none(row["answered_at"]), "outcome": row["outcome"],
                                     "error": row["error"]})
    return out


def _plain(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "updated_at", "started_at", "finished_at", "deadline_at", "not_before", "expires_at"):
        out[key] = _iso_or_none(out.get(key))
    return out


def get_order(conn: Connection, order_id: int) -> dict[str, Any] | None:
    """One order with its attempts."""
    row = conn.execute(select(orders).where(orders.c.id == order_id)).mappings().first()
    if row is None:
        return None
    out = _plain(row)
    out["attempt_log"] = attempts_of(conn, [order_id])[order_id]
    return out


def list_orders(
    conn: Connection,
    *,
    status: str | None = None,
    kind: str | None = None,
    meter_id: int | None = None,
    modem_id: int | None = None,
    created_by: str | None = None,
    source: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Orders matching every given filter, newest first, one page of them with their attempts, and how many match
    in all (issue 8 item 9). Each filter has its index (migration 0003)."""
    conds: list[ColumnElement[bool]] = []
    for column, value in ((orders.c.status, status), (orders.c.kind, kind), (orders.c.meter_id, meter_id),
                          (orders.c.modem_id, modem_id), (orders.c.created_by, created_by),
                          (orders.c.source, source)):
        if value is not None:
            conds.append(column == value)
    if created_from is not None:
        conds.append(orders.c.created_at >= to_utc(created_from))
    if created_to is not None:
        conds.append(orders.c.created_at < to_utc(created_to))
    where = and_(True, *conds)
    total = int(conn.execute(select(func.count()).select_from(orders).where(where)).scalar_one())
    rows = conn.execute(select(orders).where(where).order_by(orders.c.id.desc()).limit(limit).offset(offset))
    items = [_plain(r) for r in rows.mappings()]
    log = attempts_of(conn, [o["id"] for o in items])
    for item in items:
        item["attempt_log"] = log[item["id"]]
    return total, items


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


def _close_attempt(conn: Connection, order_id: int, outcome: str, *, now: datetime, error: str | None = None,
                   answered: bool = False) -> None:
    """Record how the order's latest attempt ended (an attempt is closed once; a late answer after a timeout
    still notes when it came)."""
    latest = select(func.max(order_attempts.c.attempt)).where(order_attempts.c.order_id == order_id).scalar_subquery()
    values: dict[str, Any] = {"outcome": outcome, "error": error}
    if answered:
        values["answered_at"] = now
    conn.execute(update(order_attempts).where(and_(order_attempts.c.order_id == order_id,
                                                   order_attempts.c.attempt == latest)).values(**values))


def _online(now: datetime, offline_after_s: float) -> ColumnElement[bool]:
    """A modem orders may go to: heard from within the window, or never heard from yet (a freshly provisioned
    modem: the broker keeps the order for its persistent session)."""
    cutoff = now - timedelta(seconds=offline_after_s)
    return or_(
        and_(modems.c.last_seen_at.is_(None), modems.c.last_heartbeat_at.is_(None)),
        modems.c.last_seen_at >= cutoff,
        modems.c.last_heartbeat_at >= cutoff,
    )


def _running_on(modem_id: Any) -> Any:
    """How many orders are running on a modem (the per-modem concurrency count)."""
    other = orders.alias("other")
    return (select(func.count()).select_from(other)
            .where(and_(other.c.modem_id == modem_id, other.c.status == "running")).scalar_subquery())


def claim_next(conn: Connection, *, timeout_s: float, now: datetime | None = None,
               offline_after_s: float = DEFAULT_OFFLINE_AFTER_S) -> dict[str, Any] | None:
    """Take the most urgent pending order that may go now and mark it running, recording the attempt.

    Most urgent: highest priority (9 first), then oldest. May go now: its retry backoff has passed, its deadline
    has not, its modem is online (else it waits for the modem's next heartbeat or uplink) and below its
    concurrency limit (``modems.max_concurrent``, default 1: a modem gets one order at a time). Safe with many
    dispatchers: on PostgreSQL the order and its modem row are locked with SKIP LOCKED (a second dispatcher skips
    that modem until the claim commits); everywhere the status flip is conditional and re-counts the modem's
    running orders inside the UPDATE, so only one claimer wins and the limit holds."""
    now = now or utcnow()
    limit = func.coalesce(modems.c.max_concurrent, 1)
    query = (
        select(
            orders,
            modems.c.flag.label("modem_flag"),
            modems.c.serial.label("modem_serial"),
            modems.c.topic_style,
            modems.c.transport.label("modem_transport"),
            limit.label("modem_limit"),
            meters.c.flag.label("meter_flag"),
            meters.c.serial.label("meter_serial"),
            meters.c.protocol.label("meter_protocol"),
        )
        .join(modems, modems.c.id == orders.c.modem_id)
        .outerjoin(meters, meters.c.id == orders.c.meter_id)
        .where(
            orders.c.status == "pending",
            or_(orders.c.not_before.is_(None), orders.c.not_before <= now),
            or_(orders.c.expires_at.is_(None), orders.c.expires_at > now),
            modems.c.status == "active",
            _online(now, offline_after_s),
            _running_on(orders.c.modem_id) < limit,
        )
        .order_by(orders.c.priority.desc(), orders.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=[orders, modems])
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    attempt = int(row["attempts"]) + 1
    extra: dict[str, Any] = {}
    if row["meter_id"] is None:  # a modem-level order: every meter behind the modem answers (one message each)
        extra["expected_parts"] = conn.execute(
            select(func.count()).select_from(meters).where(meters.c.modem_id == row["modem_id"])).scalar_one()
    if not _move(conn, row["id"], "claim", _running_on(row["modem_id"]) < row["modem_limit"], now=now,
                 attempts=attempt, started_at=now, not_before=None,
                 deadline_at=now + timedelta(seconds=timeout_s), **extra):
        return None
    conn.execute(insert(order_attempts).values(order_id=row["id"], attempt=attempt, sent_at=now))
    out = dict(row)
    out["attempts"] = attempt
    return out


def claim_batch(conn: Connection, *, limit: int, timeout_s: float, now: datetime | None = None,
                offline_after_s: float = DEFAULT_OFFLINE_AFTER_S) -> list[dict[str, Any]]:
    """Claim up to ``limit`` orders at once, by the rules of :func:`claim_next` (priority, backoff, deadline,
    online modem, per-modem limit), in one SELECT, one UPDATE and one INSERT of attempts: the set-based path for a
    dispatcher with a deep queue (bench/orders.py). PostgreSQL locks the chosen orders and modems with SKIP LOCKED;
    SQLite has one writer, and a second writer whose snapshot went stale gets an error instead of a double claim."""
    now = now or utcnow()
    cap = func.coalesce(modems.c.max_concurrent, 1)
    query = (
        select(orders.c.id, orders.c.modem_id, orders.c.meter_id, cap.label("modem_limit"),
               _running_on(orders.c.modem_id).label("running"))
        .join(modems, modems.c.id == orders.c.modem_id)
        .where(
            orders.c.status == "pending",
            or_(orders.c.not_before.is_(None), orders.c.not_before <= now),
            or_(orders.c.expires_at.is_(None), orders.c.expires_at > now),
            modems.c.status == "active",
            _online(now, offline_after_s),
            _running_on(orders.c.modem_id) < cap,
        )
        .order_by(orders.c.priority.desc(), orders.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=[orders, modems])
    taken: dict[int, int] = {}
    chosen: list[int] = []
    modem_level: list[tuple[int, int]] = []
    for row in conn.execute(query):
        busy = row.running + taken.get(row.modem_id, 0)
        if busy >= row.modem_limit:
            continue
        taken[row.modem_id] = taken.get(row.modem_id, 0) + 1
        chosen.append(row.id)
        if row.meter_id is None:
            modem_level.append((row.id, row.modem_id))
    if not chosen:
        return []
    conn.execute(update(orders).where(and_(orders.c.id.in_(chosen), orders.c.status == "pending")).values(
        status="running", attempts=orders.c.attempts + 1, started_at=now, not_before=None, updated_at=now,
        deadline_at=now + timedelta(seconds=timeout_s)))
    for order_id, modem_id in modem_level:
        expected = conn.execute(select(func.count()).select_from(meters)
                                .where(meters.c.modem_id == modem_id)).scalar_one()
        conn.execute(update(orders).where(orders.c.id == order_id).values(expected_parts=expected))
    conn.execute(insert(order_attempts).from_select(
        ["order_id", "attempt", "sent_at"],
        select(orders.c.id, orders.c.attempts, literal(now, order_attempts.c.sent_at.type))
        .where(orders.c.id.in_(chosen))))
    rows = conn.execute(
        select(orders, modems.c.flag.label("modem_flag"), modems.c.serial.label("modem_serial"),
               modems.c.topic_style, modems.c.transport.label("modem_transport"),
               meters.c.flag.label("meter_flag"), meters.c.serial.label("meter_serial"))
        .join(modems, modems.c.id == orders.c.modem_id).outerjoin(meters, meters.c.id == orders.c.meter_id)
        .where(orders.c.id.in_(chosen)).order_by(orders.c.priority.desc(), orders.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def policy_for(kind: str, max_attempts: int | None, policies: dict[str, RetryPolicy] | None = None) -> RetryPolicy:
    """The retry policy of an order: its kind's (from ``policies``, else the defaults), with the order's own
    ``max_attempts`` when it set one."""
    policy = (policies or RETRY_POLICIES).get(kind) or RetryPolicy(1, 0, 1)
    if max_attempts is not None:
        policy = RetryPolicy(max_attempts, policy.interval_s, policy.backoff)
    return policy


def _retry_or_end(conn: Connection, order: Any, *, now: datetime, error: str, outcome: str, last_move: str,
                  policies: dict[str, RetryPolicy] | None) -> bool:
    """After a failed attempt of a running order: back to pending after the backoff when attempts are left and the
    retry falls before the order's deadline; else ``last_move`` (fail/expire), or lapse when the deadline passed."""
    policy = policy_for(order.kind, order.max_attempts, policies)
    retry_at = now + policy.delay(int(order.attempts))
    expires_at = as_utc(order.expires_at)
    guard = orders.c.attempts == order.attempts  # the attempt we judge is still the latest
    if int(order.attempts) < policy.attempts and (expires_at is None or retry_at < expires_at):
        moved = _move(conn, order.id, "retry", guard, now=now, not_before=retry_at, error=error)
    elif expires_at is not None and expires_at <= retry_at and int(order.attempts) < policy.attempts:
        moved = _move(conn, order.id, "lapse", guard, now=now, finished_at=now,
                      error=f"{error}; no retry before the order's deadline")
    else:
        moved = _move(conn, order.id, last_move, guard, now=now, finished_at=now, error=error)
    if moved:
        _close_attempt(conn, order.id, outcome, now=now, error=error, answered=outcome != "timeout")
    return moved


def finish(
    conn: Connection,
    reference_id: str,
    *,
    succeeded: bool,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    modem_id: int | None = None,
    retryable: bool = False,
    policies: dict[str, RetryPolicy] | None = None,
    part: str | None = None,
    now: datetime | None = None,
) -> int | None:
    """Record an answer by its referenceId; returns the order id, or None if no open order matched (a late
    answer to a cancelled, expired or finished order is ignored). With ``modem_id`` only an order sent to that
    modem matches: an answer closes only its own order (HES-6). A ``retryable`` failure of a running order goes
    back to the queue while its kind's attempts last (RETRY_POLICIES). ``part`` names the meter an answer is
    for: a modem-level order collects one answer per meter (:func:`_collect_part`)."""
    now = now or utcnow()
    query = select(orders).where(
        and_(orders.c.reference_id == reference_id, orders.c.status.in_(sorted(MOVES["succeed"][0])))
    )
    if modem_id is not None:
        query = query.where(orders.c.modem_id == modem_id)
    if part is not None and conn.dialect.name == "postgresql":
        query = query.with_for_update()  # parts of one order from several ingest workers: one at a time
    row = conn.execute(query).first()
    if row is None:
        return None
    if part is not None and (row.expected_parts or 0) > 1:
        return _collect_part(conn, row, part, succeeded=succeeded, result=result, error=error, now=now)
    if not succeeded and retryable and row.status == "running":
        moved = _retry_or_end(conn, row, now=now, error=error or "failed", outcome="failed", last_move="fail",
                              policies=policies)
        return int(row.id) if moved else None
    moved = _move(conn, row.id, "succeed" if succeeded else "fail", now=now, result=result, error=error,
                  finished_at=now)
    if moved:
        _close_attempt(conn, row.id, "succeeded" if succeeded else "failed", now=now, error=error, answered=True)
    return int(row.id) if moved else None


def _collect_part(conn: Connection, order: Any, part: str, *, succeeded: bool, result: dict[str, Any] | None,
                  error: str | None, now: datetime) -> int | None:
    """One meter's answer to a modem-level order (issue 8 item 1): the gateway sends one read message per meter
    with the order's referenceId and no final message, so the order knows how many meters to wait for from the
    inventory at claim time (``expected_parts``). Each answer is kept under ``result.meters[part]``; when every
    meter has answered the order succeeds, or fails naming the meters that failed (their results are kept). A
    retry after a timeout keeps the answers already in and waits for the missing ones."""
    collected = dict(order.result or {})
    parts = dict(collected.get("meters") or {})
    parts[part] = (result or {}) if succeeded else {"error": error or "failed"}
    expected = int(order.expected_parts)
    failed = {k: v["error"] for k, v in parts.items() if isinstance(v, dict) and "error" in v}
    collected = {"meters": parts, "answered": len(parts), "expected": expected}
    if len(parts) < expected:
        conn.execute(update(orders).where(and_(orders.c.id == order.id, orders.c.status.in_(OPEN_STATUSES)))
                     .values(result=collected, updated_at=now))
        return int(order.id)
    if not failed:
        moved = _move(conn, order.id, "succeed", now=now, result=collected, error=None, finished_at=now)
        outcome, reason = "succeeded", None
    else:
        reason = f"{len(failed)} of {expected} meters failed: " + "; ".join(f"{k}: {v}" for k, v in
                                                                           sorted(failed.items()))
        moved = _move(conn, order.id, "fail", now=now, result=collected, error=reason, finished_at=now)
        outcome = "failed"
    if moved:
        _close_attempt(conn, order.id, outcome, now=now, error=reason, answered=True)
    return int(order.id) if moved else None


def fail(conn: Connection, order_id: int, error: str, *, now: datetime | None = None) -> bool:
    """Fail an open order that must not go out (e.g. a TLS-only kind to a plain session, HES-54)."""
    now = now or utcnow()
    if _move(conn, order_id, "fail", now=now, error=error, finished_at=now):
        _close_attempt(conn, order_id, "refused", now=now, error=error)
        return True
    return False


def cancel(conn: Connection, order_id: int, reason: str, *, now: datetime | None = None) -> bool:
    """Cancel an open order (pending: never sent; running: its answer, when it comes, is ignored)."""
    now = now or utcnow()
    if _move(conn, order_id, "cancel", now=now, error=reason, finished_at=now):
        _close_attempt(conn, order_id, "cancelled", now=now, error=reason)
        return True
    return False


def late_orders(conn: Connection, *, now: datetime) -> list[int]:
    """Running orders whose deadline has passed."""
    query = select(orders.c.id).where(and_(orders.c.status == "running", orders.c.deadline_at < now))
    return [int(r.id) for r in conn.execute(query.order_by(orders.c.id))]


def expire(conn: Connection, *, now: datetime | None = None,
           policies: dict[str, RetryPolicy] | None = None) -> list[int]:
    """Time out running orders whose answer did not come before their answer deadline (retried after the backoff
    while attempts are left, else failed), and end as ``expired`` the pending orders whose own deadline passed
    (e.g. waiting for a modem that never came back). Each move is conditional, so an order answered between the
    select and the update keeps its answer. Returns the ids that moved."""
    now = now or utcnow()
    moved: list[int] = []
    for order_id in late_orders(conn, now=now):
        row = conn.execute(select(orders).where(orders.c.id == order_id)).first()
        if row is None:
            continue
        if _retry_or_end(conn, row, now=now, error="no answer before the deadline", outcome="timeout",
                         last_move="expire", policies=policies):
            moved.append(order_id)
    stale = conn.execute(select(orders.c.id).where(and_(orders.c.status == "pending", orders.c.expires_at <= now))
                         .order_by(orders.c.id)).scalars().all()
    for order_id in stale:
        if _move(conn, order_id, "lapse", orders.c.expires_at <= now, now=now, finished_at=now,
                 error="its deadline passed before it could be done"):
            moved.append(int(order_id))
    return moved
