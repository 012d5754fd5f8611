"""Alarms: normalized types and severities, the rules that raise and clear them, and their states (HES-11, HES-24,
HES-25, HES-28, HES-33).

Where alarms come from:

* ``device``: MASS ``alarm`` uplinks (cover open, power loss / last gasp, magnetic tamper, low battery, voltage
  sag/swell, relay state, neutral voltage …), whatever a vendor calls them, mapped onto one normalized ``type``
  by ``osos/data/alarms/types.toml`` (the name as sent stays in ``source_type``);
* ``notification``: MASS ``notification`` uplinks, stored as informational alarms (HES-25);
* ``ff``: the FF status register (``F.F.0``/``F.F``) of a readout; a bit raises its alarm when it newly appears
  and clears it when it goes away (table: ``osos/data/alarms/ff-gf.toml``, unverified);
* ``gf``: the GF geographic code (``F.F.1``) changing between readouts: an informational alarm;
* ``modbus``: the HES-33 rules of an analyzer's register map (``osos.protocols.modbus.evaluate_alarms``) over
  each stored analyzer read, raised and cleared the same way.

States: ``raised`` → ``acknowledged`` (by a user, who and when kept) → ``cleared`` (by a user or by the device
when the condition ends); a raised alarm may also be cleared at once. Dedup: while an alarm is not cleared its
``open_key`` (modem, meter, type, code) is set and unique, so the same alarm of the same device is counted
(``repeats``, ``last_seen_at``) rather than stored again; clearing frees the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import tomllib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select, true, update
from sqlalchemy.engine import Connection

from osos.protocols import modbus, status_codes
from osos.store.db import as_utc, insert_or_ignore, to_utc
from osos.store.schema import alarms, register_latest

TYPES_FILE = Path(__file__).resolve().parent.parent / "data" / "alarms" / "types.toml"
STATES = ("raised", "acknowledged", "cleared")
SEVERITIES = status_codes.SEVERITIES
#: the moves of the alarm state machine (from, to)
MOVES = frozenset({("raised", "acknowledged"), ("raised", "cleared"), ("acknowledged", "cleared")})
DEVICE = "device"  # cleared_by when the device says the condition ended


class AlarmError(Exception):
    """An alarm that does not exist, or a state move the machine does not allow."""


@dataclass(frozen=True)
class AlarmType:
    name: str
    severity: str
    en: str
    tr: str


@dataclass(frozen=True)
class Catalog:
    types: dict[str, AlarmType]
    aliases: dict[str, str]  # folded alias -> type
    levels: dict[str, str]  # folded level word -> severity
    modbus: dict[str, str]  # evaluate_alarms code (before ':phase') -> type


def _fold(name: str) -> str:
    return "".join(c for c in name.lower() if c not in "_- ")


@cache
def catalog() -> Catalog:
    """The packaged type table (data, not code), loaded once."""
    with TYPES_FILE.open("rb") as fh:
        doc = tomllib.load(fh)
    types, aliases = {}, {}
    for name, entry in doc["types"].items():
        types[name] = AlarmType(name, entry["severity"], entry["en"], entry["tr"])
        for alias in [name, *entry.get("aliases", [])]:
            aliases[_fold(alias)] = name
    levels = {_fold(word): severity for severity, words in doc["levels"].items() for word in words}
    return Catalog(types, aliases, levels, dict(doc["modbus"]))


def normalize_type(name: Any) -> str:
    """A sender's alarm name as one of the normalized types; ``other`` when unknown."""
    if not isinstance(name, str) or not name.strip():
        return "other"
    return catalog().aliases.get(_fold(name), "other")


def normalize_severity(level: Any, kind: str) -> str:
    """The sender's level word as critical | warning | info; the type's default when absent or unknown."""
    if isinstance(level, str) and _fold(level) in catalog().levels:
        return catalog().levels[_fold(level)]
    known = catalog().types.get(kind)
    return known.severity if known else "warning"


def modbus_type(code: str) -> str:
    return catalog().modbus.get(code.split(":", 1)[0], "other")


# ---------------------------------------------------------------------------------------------- raise / clear

def open_key(modem_id: int, meter_id: int | None, kind: str, code: str | None) -> str:
    return f"{modem_id}|{meter_id or ''}|{kind}|{code or ''}"[:200]


def raise_alarm(
    conn: Connection,
    *,
    modem_id: int,
    meter_id: int | None,
    raw_id: int,
    kind: str,
    severity: str,
    source: str,
    now: datetime,
    code: str | None = None,
    source_type: str | None = None,
    level: str | None = None,
    description: str | None = None,
    occurred_at: str | None = None,
    emergency: bool = False,
    detail: dict[str, Any] | None = None,
) -> tuple[int, bool]:
    """Store an alarm unless the same one is still open for this device; then count the repeat. Returns
    ``(alarm id, newly raised)``."""
    key = open_key(modem_id, meter_id, kind, code)
    new_id = insert_or_ignore(
        conn,
        alarms,
        {
            "raw_id": raw_id, "modem_id": modem_id, "meter_id": meter_id, "received_at": now,
            "occurred_at": occurred_at, "emergency": emergency, "type": kind, "level": level,
            "code": code, "description": description, "source": source, "source_type": source_type,
            "severity": severity, "state": "raised", "open_key": key, "repeats": 0, "last_seen_at": now,
            "detail": detail,
        },
        ["open_key"],
    )
    if new_id is not None:
        return int(new_id), True
    repeat: dict[str, Any] = {"repeats": alarms.c.repeats + 1, "last_seen_at": now}
    if emergency:  # it also came on the emergency lane (HES-24), whichever copy arrived first
        repeat["emergency"] = True
    conn.execute(update(alarms).where(alarms.c.open_key == key).values(**repeat))
    row = conn.execute(select(alarms.c.id).where(alarms.c.open_key == key)).first()
    assert row is not None
    return int(row.id), False


def clear_open(
    conn: Connection,
    *,
    modem_id: int,
    meter_id: int | None,
    now: datetime,
    kind: str | None = None,
    code: str | None = None,
    source: str | None = None,
    by: str = DEVICE,
) -> int:
    """Clear the open alarms of one device (its modem when ``meter_id`` is None) that match; returns how many."""
    where = [alarms.c.open_key.is_not(None), alarms.c.modem_id == modem_id]
    where.append(alarms.c.meter_id.is_(None) if meter_id is None else alarms.c.meter_id == meter_id)
    if kind is not None:
        where.append(alarms.c.type == kind)
    if code is not None:
        where.append(alarms.c.code == code)
    if source is not None:
        where.append(alarms.c.source == source)
    result = conn.execute(
        update(alarms).where(and_(*where)).values(state="cleared", open_key=None, cleared_at=now, cleared_by=by)
    )
    return int(result.rowcount or 0)


def move(conn: Connection, alarm_id: int, to: str, *, user: str, now: datetime) -> Any:
    """A user's acknowledge or clear. Refuses moves the machine does not have (e.g. acknowledging a cleared
    alarm). Conditional on the state read, so two users racing cannot both move it."""
    row = conn.execute(select(alarms.c.id, alarms.c.state).where(alarms.c.id == alarm_id)).first()
    if row is None:
        raise AlarmError(f"no alarm {alarm_id}")
    if (row.state, to) not in MOVES:
        raise AlarmError(f"alarm {alarm_id} is {row.state}; it cannot become {to}")
    values: dict[str, Any] = {"state": to}
    if to == "acknowledged":
        values |= {"acked_at": now, "acked_by": user}
    else:
        values |= {"cleared_at": now, "cleared_by": user, "open_key": None}
    done = conn.execute(update(alarms).where(alarms.c.id == alarm_id, alarms.c.state == row.state).values(**values))
    if not done.rowcount:
        raise AlarmError(f"alarm {alarm_id} changed meanwhile; try again")
    return conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()


# ---------------------------------------------------------------------------------------------- device alarms

def from_device(
    conn: Connection,
    entry: dict[str, Any],
    *,
    modem_id: int,
    meter_id: int | None,
    raw_id: int,
    emergency: bool,
    now: datetime,
    notification: bool = False,
) -> tuple[int, bool]:
    """One entry of a MASS ``alarm`` (or ``notification``, HES-25) uplink. A ``powerRestored`` entry also
    clears the open power-loss alarm of the same device. An entry for a meter whose ``incidentCode`` is an FF bit
    of the same type (what our gateway pushes when a bit appears, AMR-6) gets the code ``FF.<bit>``, so the push
    and the FF register of the readout that follows are one alarm, not two."""
    sent = entry.get("type")
    if notification:
        kind, severity = "notification", normalize_severity(entry.get("level"), "notification")
    else:
        kind = normalize_type(sent)
        severity = normalize_severity(entry.get("level"), kind)
    code = entry.get("incidentCode", entry.get("code"))
    code = None if code is None or code == "" else str(code)[:32]
    if notification and code is None:  # distinct notifications are distinct; the same text again is a repeat
        text = str(entry.get("description") or entry.get("message") or "")
        code = "N." + hashlib.sha256(f"{sent}|{text}".encode()).hexdigest()[:16]
    if not notification and meter_id is not None and code is not None and code.isdigit():
        bit = status_codes.ff_bit(int(code))
        if bit is not None and bit.type == kind:  # a gateway's push of an FF bit: the same alarm as the readout's
            code = f"FF.{bit.bit}"
    result = raise_alarm(
        conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id, kind=kind, severity=severity,
        source="notification" if notification else "device", now=now,
        code=code,
        source_type=_s(sent, 64), level=_s(entry.get("level"), 16),
        description=_s(entry.get("description") or entry.get("message"), 2000),
        occurred_at=_s(entry.get("date"), 32), emergency=emergency,
    )
    if kind == "powerRestored":
        clear_open(conn, modem_id=modem_id, meter_id=meter_id, kind="powerLoss", now=now)
    return result


def modem_back(conn: Connection, modem_id: int, now: datetime) -> int:
    """The modem identified itself again (a new session): its own last-gasp power-loss alarms end (HES-24)."""
    return clear_open(conn, modem_id=modem_id, meter_id=None, kind="powerLoss", source="device", now=now)


# ---------------------------------------------------------------------------------------------- reading rules

def watched(registers: list[Any], protocol: str) -> list[str]:
    """Register names whose previous latest value the rules need (FF, GF; every analyzer register)."""
    names = [r.obis for r in registers]
    if protocol == "modbus":
        return names
    return [n for n in names if status_codes.is_ff(n) or status_codes.is_gf(n)]


@dataclass(frozen=True)
class Before:
    """The meter's latest values of the watched registers before this reading, and their read times."""

    values: dict[str, str]
    read_at: dict[str, datetime]

    def supersedes(self, obis: str, read_at: datetime) -> bool:
        """True when a reading at ``read_at`` replaced (or created) the latest value of ``obis``: the same rule as
        the register_latest upsert (only if not older), so no second query is needed."""
        previous = as_utc(self.read_at.get(obis))
        return previous is None or previous <= to_utc(read_at)


def latest(conn: Connection, meter_id: int, names: list[str]) -> Before:
    """The meter's latest values of ``names`` before this reading is applied."""
    if not names:
        return Before({}, {})
    rows = list(conn.execute(
        select(register_latest.c.obis, register_latest.c.value, register_latest.c.read_at).where(
            register_latest.c.meter_id == meter_id, register_latest.c.obis.in_(names)
        )
    ))
    return Before({r.obis: r.value for r in rows}, {r.obis: r.read_at for r in rows})


def _ff_bits(value: str | None) -> int:
    if not value:
        return 0
    try:
        return status_codes.parse_code(value, status_codes.table().ff_width)
    except status_codes.StatusCodeError:
        return 0


def on_reading(
    conn: Connection,
    *,
    modem_id: int,
    meter_id: int,
    raw_id: int,
    registers: list[Any],
    protocol: str,
    before: Before,
    read_at: datetime,
    now: datetime,
    map_name: str | None = None,
) -> list[int]:
    """Raise and clear alarms from a stored reading that became the meter's latest (an older packet arriving
    late never flips alarm state): FF bits that appeared / went away, a changed GF code, HES-33 analyzer rules.
    Returns the ids of newly raised alarms."""
    raised: list[int] = []
    values = {r.obis: r.value for r in registers}
    previous = before.values
    tab = status_codes.table()
    ff_obis = next((o for o in tab.ff_obis if o in values), None)
    if ff_obis is not None and before.supersedes(ff_obis, read_at):
        try:
            now_bits = status_codes.parse_code(values[ff_obis], tab.ff_width)
        except status_codes.StatusCodeError:
            now_bits = None
        if now_bits is not None:
            old_bits = _ff_bits(next((previous[o] for o in tab.ff_obis if o in previous), None))
            for bit in status_codes.set_bits(now_bits & ~old_bits):
                entry = tab.ff_bits.get(bit)
                kind, severity = (entry.type, entry.severity) if entry else ("meterWarning", "info")
                alarm_id, new = raise_alarm(
                    conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id, kind=kind, severity=severity,
                    source="ff", now=now, code=f"FF.{bit}", source_type=entry.name if entry else f"reserved_{bit}",
                    description=entry.en if entry else f"FF bit {bit} (reserved)",
                    detail={"obis": ff_obis, "value": values[ff_obis], "bit": bit},
                )
                if new:
                    raised.append(alarm_id)
            for bit in status_codes.set_bits(old_bits & ~now_bits):
                clear_open(conn, modem_id=modem_id, meter_id=meter_id, code=f"FF.{bit}", now=now)
    gf_obis = next((o for o in tab.gf_obis if o in values), None)
    if gf_obis is not None and gf_obis in previous and previous[gf_obis] != values[gf_obis] \
            and before.supersedes(gf_obis, read_at):
        detail: dict[str, Any] = {"obis": gf_obis, "from": previous[gf_obis], "to": values[gf_obis]}
        with contextlib.suppress(status_codes.StatusCodeError):
            detail["fields"] = status_codes.decode_gf(values[gf_obis])
        alarm_id, new = raise_alarm(
            conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id, kind="geoCodeChanged",
            severity="info", source="gf", now=now, code=f"GF.{values[gf_obis]}"[:32], source_type="gf",
            description=f"GF code changed from {previous[gf_obis]} to {values[gf_obis]}", detail=detail,
        )
        if new:
            raised.append(alarm_id)
    if protocol == "modbus" and map_name and registers and before.supersedes(registers[0].obis, read_at):
        raised += _modbus(conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id, values=values,
                          before=previous, map_name=map_name, now=now)
    return raised


def _numbers(values: dict[str, str]) -> dict[str, Decimal | str]:
    out: dict[str, Decimal | str] = {}
    for name, text in values.items():
        try:
            out[name] = Decimal(text)
        except (InvalidOperation, TypeError, ValueError):
            out[name] = text
    return out


def _modbus(
    conn: Connection, *, modem_id: int, meter_id: int, raw_id: int, values: dict[str, str], before: dict[str, str],
    map_name: str, now: datetime,
) -> list[int]:
    """HES-33 on an analyzer read stored by ingest: the map's thresholds over the values now and before; a rule
    that starts firing raises, one that stops clears."""
    try:
        limits = modbus.load_map(map_name).alarms
    except (modbus.ModbusError, OSError):
        return []
    current = set(modbus.evaluate_alarms(_numbers(values), limits))
    previous = set(modbus.evaluate_alarms(_numbers(before), limits)) if before else set()
    raised = []
    for code in sorted(current - previous):
        alarm_id, new = raise_alarm(
            conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id, kind=modbus_type(code),
            severity=normalize_severity(None, modbus_type(code)), source="modbus", now=now, code=code[:32],
            source_type=code, description=f"HES-33 rule {code} ({map_name})",
            detail={"map": map_name, "values": {k: v for k, v in values.items() if k.split("_")[0] in
                                                ("voltage", "current", "power", "phase")}},
        )
        if new:
            raised.append(alarm_id)
    for code in sorted(previous - current):
        clear_open(conn, modem_id=modem_id, meter_id=meter_id, code=code[:32], source="modbus", now=now)
    return raised


def _s(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


# ---------------------------------------------------------------------------------------------- queries

def view(row: Any) -> dict[str, Any]:
    """One alarm as the API and UI show it (times in UTC with their offset)."""
    return {
        "id": row.id, "type": row.type, "severity": row.severity, "state": row.state, "source": row.source,
        "source_type": row.source_type, "emergency": bool(row.emergency), "modem": row.modem_id,
        "meter": row.meter_id, "code": row.code, "level": row.level, "description": row.description,
        "occurred_at": row.occurred_at, "received_at": as_utc(row.received_at),
        "last_seen_at": as_utc(row.last_seen_at), "repeats": row.repeats, "acked_at": as_utc(row.acked_at),
        "acked_by": row.acked_by, "cleared_at": as_utc(row.cleared_at), "cleared_by": row.cleared_by,
        "raw_id": row.raw_id, "detail": row.detail,
    }


def query(
    conn: Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    modem_id: int | None = None,
    meter_id: int | None = None,
    emergency: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Alarms newest first, filtered; returns (total matching, this page). ``since``/``until`` bound the time
    the head-end received them (half-open: since <= t < until)."""
    where = []
    if state is not None:
        where.append(alarms.c.state == state)
    if kind is not None:
        where.append(alarms.c.type == kind)
    if severity is not None:
        where.append(alarms.c.severity == severity)
    if modem_id is not None:
        where.append(alarms.c.modem_id == modem_id)
    if meter_id is not None:
        where.append(alarms.c.meter_id == meter_id)
    if emergency is not None:
        where.append(alarms.c.emergency.is_(emergency))
    if since is not None:
        where.append(alarms.c.received_at >= to_utc(since))
    if until is not None:
        where.append(alarms.c.received_at < to_utc(until))
    cond = and_(true(), *where)
    total = int(conn.execute(select(func.count()).select_from(alarms).where(cond)).scalar_one())
    rows = conn.execute(
        select(alarms).where(cond).order_by(alarms.c.received_at.desc(), alarms.c.id.desc()).limit(limit)
        .offset(offset)
    )
    return total, [view(r) for r in rows]


def get(conn: Connection, alarm_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
    return view(row) if row is not None else None
