"""The modem inventory: a modem exists because someone provisioned it, never because a message named it (HES-4,
HES-9, HES-56).

Ingest refuses any device that is not an ``active`` row here; provisioning (``osos modem add``, the API) calls
:func:`register_modem` and issues the broker credentials beside it.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from osos.protocols import mass
from osos.store.schema import modems

# the MASS envelope's own rules for a device (osos/protocols/schemas/mass-envelope.json)
FLAG = re.compile(r"[A-Za-z]{3}")
SERIAL = re.compile(r"[A-Za-z0-9._-]{1,32}")


class InventoryError(ValueError):
    """A modem that cannot be registered as asked (bad flag/serial, already provisioned)."""


def register_modem(
    conn: Connection, flag: str, serial: str, *, legacy: bool = False, by: str | None = None, now: datetime
) -> int:
    """Create the inventory row of one modem and return its id. ``legacy`` marks a device that may use the
    shared MASS topics (an admin's decision, docs/security.md); its broker username is ``FLAG+SERIAL``."""
    if not FLAG.fullmatch(flag):
        raise InventoryError(f"flag {flag!r} must be 3 letters")
    if not SERIAL.fullmatch(serial):
        raise InventoryError(f"serial {serial!r} must be 1..32 of A-Z a-z 0-9 . _ -")
    if conn.execute(select(modems.c.id).where(modems.c.flag == flag, modems.c.serial == serial)).first():
        raise InventoryError(f"modem {flag}{serial} is already provisioned")
    result = conn.execute(
        insert(modems).values(
            flag=flag,
            serial=serial,
            topic_style="legacy" if legacy else "device",
            status="active",
            mqtt_username=mass.Device(flag, serial).key,
            registered_at=now,
            provisioned_at=now,
            provisioned_by=by,
        )
    )
    return int(result.inserted_primary_key[0])


def ensure_modem(
    conn: Connection, flag: str, serial: str, *, legacy: bool = False, by: str | None = None, now: datetime
) -> int:
    """The id of a provisioned modem, registering it first if it is not (for a self-contained demo whose fleet is
    its own; a real deployment provisions each modem explicitly)."""
    row = conn.execute(select(modems.c.id).where(modems.c.flag == flag, modems.c.serial == serial)).first()
    return int(row.id) if row else register_modem(conn, flag, serial, legacy=legacy, by=by, now=now)
