"""The modem inventory's write side (HES-4, HES-9).

Minimal version written by the "broker" slice so provisioning works on its own branch; the "checks" slice owns
this file and its fuller version replaces this one at merge (same signature).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from osos.store.schema import modems


class ModemExists(ValueError):
    """A modem with this flag and serial is already in the inventory."""


def register_modem(conn: Connection, flag: str, serial: str, *, legacy: bool = False, by: str,
                   now: datetime) -> int:
    """Add a provisioned modem (active; ``legacy`` marks it for the shared MASS topics) and return its id."""
    exists = conn.execute(select(modems.c.id).where(modems.c.flag == flag, modems.c.serial == serial)).first()
    if exists is not None:
        raise ModemExists(f"modem {flag}{serial} already exists")
    result = conn.execute(
        modems.insert().values(
            flag=flag, serial=serial, status="active", topic_style="legacy" if legacy else "device",
            mqtt_username=f"{flag}{serial}", provisioned_at=now, provisioned_by=by, registered_at=now,
        )
    )
    return int(result.inserted_primary_key[0])
