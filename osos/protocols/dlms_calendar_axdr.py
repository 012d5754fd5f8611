"""A-XDR types of the activity calendar (class 20) and special days table (class 11) (AMR-4, HES-37).

``osos.tariff.dlms_calendar.ActivityCalendar`` keeps these attributes as plain Python values
(list = array, tuple = structure, bytes = octet-string, int = unsigned integer). This module turns
them into typed :class:`~osos.protocols.dlms.Data` and back, following the attribute definitions of
the Blue Book (IEC 62056-6-2 §4.5.5 class 20, §4.5.4 class 11). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from osos.protocols import dlms as D

# the four "active" attributes of class 20 (2..5); the passive ones (6..9) have the same types
CALENDAR_ATTRIBUTES = {
    "calendar_name_active": 2,
    "season_profile_active": 3,
    "week_profile_table_active": 4,
    "day_profile_table_active": 5,
}
PASSIVE_OFFSET = 4  # passive attribute = active + 4
TARIFF_SCRIPT_TABLE = bytes([0, 0, 10, 0, 100, 255])


def _oct(v: Any, what: str) -> D.Data:
    if not isinstance(v, bytes | bytearray):
        raise D.DLMSError(f"{what} must be bytes")
    return D.octets(bytes(v))


def _u(v: Any, what: str, wide: bool = False) -> D.Data:
    if not isinstance(v, int) or isinstance(v, bool):
        raise D.DLMSError(f"{what} must be an integer")
    try:
        return D.u16(v) if wide else D.u8(v)
    except ValueError:
        raise D.DLMSError(f"{what} {v} out of range") from None


def _seq(v: Any, n: int | None, what: str) -> list[Any]:
    if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
        raise D.DLMSError(f"{what} must be a sequence" + (f" of {n}" if n else ""))
    return list(v)


def calendar_to_data(values: dict[str, Any]) -> dict[int, D.Data]:
    """Plain values keyed as in ``ActivityCalendar.to_dlms()`` -> {active attribute id: Data}."""
    seasons = [D.struct_(_oct(s[0], "season name"), _oct(s[1], "season start"), _oct(s[2], "week name"))
               for s in (_seq(x, 3, "season") for x in _seq(values["season_profile_active"], None, "seasons"))]
    weeks = [D.struct_(_oct(w[0], "week name"), *(_u(d, "day id") for d in w[1:]))
             for w in (_seq(x, 8, "week") for x in _seq(values["week_profile_table_active"], None, "weeks"))]
    days = []
    for item in _seq(values["day_profile_table_active"], None, "days"):
        day_id, actions = _seq(item, 2, "day profile")
        acts = [D.struct_(_oct(a[0], "start time"), _oct(a[1], "script"), _u(a[2], "selector", wide=True))
                for a in (_seq(x, 3, "action") for x in _seq(actions, None, "actions"))]
        days.append(D.struct_(_u(day_id, "day id"), D.array(acts)))
    return {2: _oct(values.get("calendar_name_active", b""), "calendar name"), 3: D.array(seasons),
            4: D.array(weeks), 5: D.array(days)}


def special_days_to_data(entries: list[Any]) -> D.Data:
    return D.array(D.struct_(_u(e[0], "index", wide=True), _oct(e[1], "date"), _u(e[2], "day id"))
                   for e in (_seq(x, 3, "special day") for x in entries))


def to_plain(d: D.Data) -> Any:
    """Data -> plain values (array = list, structure = tuple); what the tariff module reads."""
    if d.type is D.DataType.ARRAY:
        return [to_plain(i) for i in d.value]
    if d.type is D.DataType.STRUCTURE:
        return tuple(to_plain(i) for i in d.value)
    return d.value


def calendar_from_data(attrs: dict[int, D.Data], special_days: D.Data | None = None) -> dict[str, Any]:
    """{active attribute id: Data} (+ class 11 attribute 2) -> plain values for ``from_dlms``."""
    out = {name: to_plain(attrs[idx]) for name, idx in CALENDAR_ATTRIBUTES.items() if idx in attrs}
    if special_days is not None:
        out["special_days_table"] = to_plain(special_days)
    return out


def default_calendar_attributes(tariff_by_hour: list[int]) -> list[D.Data]:
    """[name, seasons, weeks, days] of a one-season, one-day calendar switching at every band change."""
    actions = []
    for h, t in enumerate(tariff_by_hour):
        if h == 0 or tariff_by_hour[h - 1] != t:
            actions.append((bytes([h, 0, 0, 0]), TARIFF_SCRIPT_TABLE, t))
    values = {
        "calendar_name_active": b"OSOS-STD",
        "season_profile_active": [(b"ALL", bytes([0xFF, 0xFF, 1, 1, 0xFF, 0, 0, 0, 0, 0x80, 0, 0xFF]), b"STD")],
        "week_profile_table_active": [(b"STD", 1, 1, 1, 1, 1, 1, 1)],
        "day_profile_table_active": [(1, actions)],
    }
    d = calendar_to_data(values)
    return [d[2], d[3], d[4], d[5]]


def default_special_days() -> D.Data:
    return D.array([])
