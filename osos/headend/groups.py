"""Device groups: which meters a schedule or a rollout addresses (issue 8 item 5, HES-10).

A group is a JSON object ``{"modems": [...], "tags": [...], "kind": "...", "brand": "..."}``. Each key present
narrows the selection (the keys are combined with AND; inside a list any entry matches); ``{}`` is every meter.
Modems are named by id (integer) or by ``FLAGserial`` / serial (string). Tags live in ``meter_tags``, one row per
meter and tag: selecting by tag is then an indexed join on both stores, where a JSON column would need each
dialect's own JSON operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.engine import Connection

from osos.store.schema import meter_tags, meters, modems

GROUP_KEYS = ("modems", "tags", "kind", "brand")
MAX_LIST = 1000
MAX_TAG = 64


class GroupError(ValueError):
    """A group definition that cannot select anything meaningful; the message says why."""


def _text(value: Any, what: str, limit: int = 64) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise GroupError(f"{what} must be a non-empty string of at most {limit} characters")
    return value.strip()


def normalize_group(group: Any) -> dict[str, Any]:
    """Check a group definition and return it in canonical form (what is stored with a schedule)."""
    if group is None:
        return {}
    if not isinstance(group, dict):
        raise GroupError("a group must be an object with modems, tags, kind and/or brand")
    unknown = sorted(set(group) - set(GROUP_KEYS))
    if unknown:
        raise GroupError(f"unknown group key {', '.join(unknown)} (known: {', '.join(GROUP_KEYS)})")
    out: dict[str, Any] = {}
    if group.get("modems") is not None:
        items = group["modems"]
        if not isinstance(items, list) or not items or len(items) > MAX_LIST:
            raise GroupError(f"modems must be a non-empty list of at most {MAX_LIST} modem ids or serials")
        modem_refs: list[int | str] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise GroupError("a modem is named by its id (integer) or its serial (string)")
            modem_refs.append(item if isinstance(item, int) else _text(item, "a modem serial", 35))
        out["modems"] = modem_refs
    if group.get("tags") is not None:
        items = group["tags"]
        if not isinstance(items, list) or not items or len(items) > MAX_LIST:
            raise GroupError(f"tags must be a non-empty list of at most {MAX_LIST} tags")
        out["tags"] = sorted({_text(t, "a tag", MAX_TAG) for t in items})
    for key in ("kind", "brand"):
        if group.get(key) is not None:
            out[key] = _text(group[key], key)
    return out


def _modem_clause(refs: list[int | str]) -> Any:
    ids = [r for r in refs if isinstance(r, int)]
    names = [r for r in refs if isinstance(r, str)]
    clauses = []
    if ids:
        clauses.append(modems.c.id.in_(ids))
    if names:
        clauses.append(modems.c.serial.in_(names))
        clauses.append((modems.c.flag + modems.c.serial).in_([n.upper()[:3] + n[3:] for n in names]))
    return select(modems.c.id).where(or_(*clauses))


def group_query(group: dict[str, Any]) -> Any:
    """SELECT of the ids of the group's meters, in id order."""
    group = normalize_group(group)
    query = select(meters.c.id).order_by(meters.c.id)
    where = []
    if "modems" in group:
        where.append(meters.c.modem_id.in_(_modem_clause(group["modems"])))
    if "tags" in group:
        where.append(meters.c.id.in_(select(meter_tags.c.meter_id).where(meter_tags.c.tag.in_(group["tags"]))))
    if "kind" in group:
        where.append(func.lower(meters.c.kind) == group["kind"].lower())
    if "brand" in group:
        where.append(func.lower(meters.c.brand) == group["brand"].lower())
    return query.where(and_(*where)) if where else query


def group_meters(conn: Connection, group: dict[str, Any], *, batch: int = 1000) -> Iterator[int]:
    """The ids of the meters a group selects, read in pages by id so a fleet-wide group never sits in memory."""
    last = 0
    query = group_query(group)
    while True:
        ids = [int(r[0]) for r in conn.execute(query.where(meters.c.id > last).limit(batch))]
        yield from ids
        if len(ids) < batch:
            return
        last = ids[-1]


def set_tags(conn: Connection, meter_id: int, tags: list[str]) -> list[str]:
    """Replace a meter's tags; returns them sorted."""
    clean = sorted({_text(t, "a tag", MAX_TAG) for t in tags})
    if conn.execute(select(meters.c.id).where(meters.c.id == meter_id)).first() is None:
        raise GroupError(f"meter {meter_id} does not exist")
    conn.execute(delete(meter_tags).where(meter_tags.c.meter_id == meter_id))
    if clean:
        conn.execute(insert(meter_tags), [{"meter_id": meter_id, "tag": t} for t in clean])
    return clean


def get_tags(conn: Connection, meter_id: int) -> list[str]:
    query = select(meter_tags.c.tag).where(meter_tags.c.meter_id == meter_id).order_by(meter_tags.c.tag)
    return [str(r.tag) for r in conn.execute(query)]
