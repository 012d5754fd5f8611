"""Read-only queries for the web: inventory lists, search, latest registers, raw next to parsed.

Everything here only SELECTs (the head-end writes); results are plain dicts with UTC datetimes so the API and
the templates format them as they need. Covers AMR-9 (search by installation number or name), HES-9/HES-51
(inventory) and HES-13 (raw and parsed data shown separately).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from osos.store.db import as_utc
from osos.store.schema import meters, modems, orders, raw_messages, readings, register_latest

DEFAULT_HEARTBEAT_PERIOD_S = 60
MIN_ONLINE_WINDOW_S = 300


def online_window(heartbeat_period_s: int = DEFAULT_HEARTBEAT_PERIOD_S) -> timedelta:
    """A modem is online when its last heartbeat is within 3 periods, or 5 minutes if that is longer."""
    return timedelta(seconds=max(3 * heartbeat_period_s, MIN_ONLINE_WINDOW_S))


# Search folding for Turkish names (AMR-9): "YILMAZ", "yilmaz" and "Yılmaz" must find each other, and so must
# "ozturk" and "Öztürk". The same mapping runs in Python (for the query text and as a SQLite function) and as
# translate() + lower() in PostgreSQL, whose lower() would not fold non-ASCII letters under a C locale.
FOLD_FROM = "ÇĞİIÖŞÜÂÎÛçğıöşüâîû"
FOLD_TO = "cgiiosuaiucgiosuaiu"
_FOLD_TABLE = str.maketrans(FOLD_FROM, FOLD_TO)


def fold_text(text: str | None) -> str | None:
    """Lower case without Turkish dotted/dotless i and diacritics, for searching only (never for storage)."""
    return None if text is None else text.translate(_FOLD_TABLE).lower()


def _fold_sql(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "sqlite":
        return func.osos_fold(column)
    return func.lower(func.translate(column, FOLD_FROM, FOLD_TO))


def _prepare(conn: Connection) -> None:
    """SQLite has no translate(): register the Python fold on this connection (cheap; idempotent)."""
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.create_function("osos_fold", 1, fold_text, deterministic=True)


def _like_pattern(text: str) -> str:
    folded = fold_text(text) or ""
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_modems(
    conn: Connection,
    *,
    now: datetime,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
    heartbeat_period_s: int = DEFAULT_HEARTBEAT_PERIOD_S,
) -> list[dict[str, Any]]:
    """Modems with the number of meters behind each and an online flag (HES-9, HES-17, HES-51)."""
    meter_count = (
        select(meters.c.modem_id, func.count().label("n")).group_by(meters.c.modem_id).subquery("meter_count")
    )
    query = (
        select(
            modems.c.id,
            modems.c.flag,
            modems.c.serial,
            modems.c.brand,
            modems.c.model,
            modems.c.device_type,
            modems.c.comm_type,
            modems.c.firmware,
            modems.c.last_seen_at,
            modems.c.last_heartbeat_at,
            modems.c.signal,
            modems.c.clock_drift_s,
            modems.c.drift_measured_at,
            func.coalesce(meter_count.c.n, 0).label("meters"),
        )
        .select_from(modems.outerjoin(meter_count, meter_count.c.modem_id == modems.c.id))
        .order_by(modems.c.flag, modems.c.serial)
        .limit(limit)
        .offset(offset)
    )
    if q and q.strip():
        _prepare(conn)
        pattern = _like_pattern(q.strip())
        columns = (modems.c.serial, modems.c.flag + modems.c.serial)
        query = query.where(or_(*(_fold_sql(conn, col).like(pattern, escape="\\") for col in columns)))
    window = online_window(heartbeat_period_s)
    out = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item["last_seen_at"] = as_utc(item["last_seen_at"])
        item["last_heartbeat_at"] = as_utc(item["last_heartbeat_at"])
        item["drift_measured_at"] = as_utc(item["drift_measured_at"])
        item["meters"] = int(item["meters"])
        hb = item["last_heartbeat_at"]
        item["online"] = hb is not None and now - hb <= window
        out.append(item)
    return out


def get_modem(
    conn: Connection, modem_id: int, *, now: datetime, heartbeat_period_s: int = DEFAULT_HEARTBEAT_PERIOD_S
) -> dict[str, Any] | None:
    """One modem with its full identity as last received (HES-22) and the same online flag as the list."""
    row = conn.execute(select(modems).where(modems.c.id == modem_id)).mappings().first()
    if row is None:
        return None
    item = dict(row)
    for key in ("registered_at", "identified_at", "last_seen_at", "last_heartbeat_at", "drift_measured_at"):
        item[key] = as_utc(item[key])
    item["meters"] = int(
        conn.execute(select(func.count()).select_from(meters).where(meters.c.modem_id == modem_id)).scalar_one()
    )
    hb = item["last_heartbeat_at"]
    item["online"] = hb is not None and now - hb <= online_window(heartbeat_period_s)
    return item


def _meter_query() -> Any:
    return select(
        meters.c.id,
        meters.c.flag,
        meters.c.serial,
        meters.c.kind,
        meters.c.brand,
        meters.c.model,
        meters.c.protocol,
        meters.c.ident,
        meters.c.installation_no,
        meters.c.subscriber_name,
        meters.c.first_seen_at,
        meters.c.last_read_at,
        meters.c.clock_drift_s,
        meters.c.drift_measured_at,
        meters.c.modem_id,
        modems.c.flag.label("modem_flag"),
        modems.c.serial.label("modem_serial"),
    ).select_from(meters.outerjoin(modems, modems.c.id == meters.c.modem_id))


def _meter_dict(row: Any) -> dict[str, Any]:
    item = dict(row)
    modem_id = item.pop("modem_id")
    modem_flag = item.pop("modem_flag")
    modem_serial = item.pop("modem_serial")
    item["modem"] = None if modem_id is None else {"id": modem_id, "flag": modem_flag, "serial": modem_serial}
    item["first_seen_at"] = as_utc(item["first_seen_at"])
    item["last_read_at"] = as_utc(item["last_read_at"])
    item["drift_measured_at"] = as_utc(item["drift_measured_at"])
    return item


def list_meters(
    conn: Connection, *, q: str | None = None, modem_id: int | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Meters, optionally searched (AMR-9): ``q`` matches serial (also flag+serial), installation number or
    subscriber name, case-insensitively and anywhere in the text."""
    query = _meter_query().order_by(meters.c.flag, meters.c.serial).limit(limit).offset(offset)
    if q and q.strip():
        _prepare(conn)
        pattern = _like_pattern(q.strip())
        columns = (meters.c.serial, meters.c.flag + meters.c.serial, meters.c.installation_no, meters.c.subscriber_name)
        query = query.where(or_(*(_fold_sql(conn, col).like(pattern, escape="\\") for col in columns)))
    if modem_id is not None:
        query = query.where(meters.c.modem_id == modem_id)
    return [_meter_dict(row) for row in conn.execute(query).mappings()]


def get_meter(conn: Connection, meter_id: int) -> dict[str, Any] | None:
    row = conn.execute(_meter_query().where(meters.c.id == meter_id)).mappings().first()
    return None if row is None else _meter_dict(row)


def latest_registers(conn: Connection, meter_id: int) -> dict[str, dict[str, Any]]:
    """OBIS code -> {value (digits exactly as read, AMR-2), unit, extra, read_at, raw_id}, sorted by code."""
    rows = conn.execute(
        select(register_latest).where(register_latest.c.meter_id == meter_id).order_by(register_latest.c.obis)
    ).mappings()
    return {
        row["obis"]: {
            "value": row["value"],
            "unit": row["unit"],
            "extra": row["extra"],
            "read_at": as_utc(row["read_at"]),
            "raw_id": row["raw_id"],
        }
        for row in rows
    }


def raw_payload_text(payload: bytes) -> tuple[str, str]:
    """(encoding, text): UTF-8 text when the bytes are text, else hex - the bytes themselves are never changed."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "hex", payload.hex()
    if any(ord(c) < 32 and c not in "\r\n\t" for c in text):
        return "hex", payload.hex()
    return "utf-8", text


CONTROL_NAMES = (
    "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI",
    "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US",
)  # ASCII names of bytes 0..31


def readable_text(payload: bytes) -> str | None:
    """A display aid for frames that are text with a few control bytes (IEC 62056-21: STX, ETX, BCC): each control
    byte becomes its ASCII name in angle brackets (``<STX>``); CR LF still break lines. None when the payload is
    plain text already or mostly binary; the hex or text in ``payload`` stays the authoritative form."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    controls = sum(1 for c in text if (ord(c) < 32 and c not in "\r\n\t") or ord(c) == 127)
    if controls == 0 or controls * 5 > len(text):
        return None
    out = []
    for c in text:
        if c in "\r\n\t" or 32 <= ord(c) < 127 or ord(c) > 127:
            out.append(c)
        else:
            out.append("<DEL>" if ord(c) == 127 else f"<{CONTROL_NAMES[ord(c)]}>")
    return "".join(out)


def raw_with_parsed(conn: Connection, meter_id: int, *, limit: int = 10) -> list[dict[str, Any]]:
    """The meter's latest raw messages (newest first), each with the readings parsed from it (HES-13, HES-47).

    A raw message belongs to a meter when a reading of that meter points at it; a modem message can carry
    several meters, so only this meter's readings are listed next to it.
    """
    raw_ids = (
        select(readings.c.raw_id)
        .where(readings.c.meter_id == meter_id)
        .group_by(readings.c.raw_id)
        .order_by(readings.c.raw_id.desc())
        .limit(limit)
        .subquery("raw_ids")
    )
    raws = conn.execute(
        select(raw_messages).where(raw_messages.c.id.in_(select(raw_ids.c.raw_id))).order_by(raw_messages.c.id.desc())
    ).mappings().all()
    if not raws:
        return []
    ids = [r["id"] for r in raws]
    parsed: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for row in conn.execute(
        select(readings.c.raw_id, readings.c.obis, readings.c.value, readings.c.unit, readings.c.extra,
               readings.c.read_at)
        .where(and_(readings.c.meter_id == meter_id, readings.c.raw_id.in_(ids)))
        .order_by(readings.c.raw_id, readings.c.obis)
    ).mappings():
        parsed[row["raw_id"]].append(
            {"obis": row["obis"], "value": row["value"], "unit": row["unit"], "extra": row["extra"],
             "read_at": as_utc(row["read_at"])}
        )
    out = []
    for raw in raws:
        encoding, text = raw_payload_text(bytes(raw["payload"]))
        out.append(
            {
                "id": raw["id"],
                "received_at": as_utc(raw["received_at"]),
                "topic": raw["topic"],
                "device_flag": raw["device_flag"],
                "device_serial": raw["device_serial"],
                "function": raw["function"],
                "reference_id": raw["reference_id"],
                "status": raw["status"],
                "error": raw["error"],
                "size": len(raw["payload"]),
                "encoding": encoding,
                "payload": text,
                "readable": readable_text(bytes(raw["payload"])) if encoding == "hex" else None,
                "parsed": parsed[raw["id"]],
            }
        )
    return out


def list_orders(conn: Connection, *, meter_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest orders first, with the meter they address (HES-12, HES-13 order management)."""
    query = (
        select(
            orders.c.id,
            orders.c.kind,
            orders.c.status,
            orders.c.priority,
            orders.c.attempts,
            orders.c.meter_id,
            meters.c.flag.label("meter_flag"),
            meters.c.serial.label("meter_serial"),
            orders.c.created_by,
            orders.c.created_at,
            orders.c.finished_at,
            orders.c.error,
        )
        .select_from(orders.outerjoin(meters, meters.c.id == orders.c.meter_id))
        .order_by(orders.c.id.desc())
        .limit(limit)
    )
    if meter_id is not None:
        query = query.where(orders.c.meter_id == meter_id)
    out = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item["created_at"] = as_utc(item["created_at"])
        item["finished_at"] = as_utc(item["finished_at"])
        out.append(item)
    return out
