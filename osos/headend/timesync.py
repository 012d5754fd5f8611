"""Central time synchronisation (HES-35, issue 8 item 6): clock drift per meter and modem, and time-set orders for
meters whose clock is off by more than the threshold (``Settings.time_sync_threshold_s``, default 300 s).

Drift is the device's clock minus the head-end's idea of the same moment, in whole seconds (positive: ahead).

* A meter's drift comes from the ``readDate`` of a read that answers one of our orders: the meter was read
  between the order's dispatch and the answer's arrival, so the drift is the distance of ``readDate`` from that
  window (0 inside it). A push or a read kept in the gateway's outbox carries an old ``readDate`` that says
  nothing about the clock, so only answers to orders are measured.
* A modem's drift comes from each heartbeat's ``deviceDate`` against the receive time.

Sync orders are created in the ingest transaction that measured the drift (so centrally, by whichever head-end
stored the read), kind ``time-set``, source ``system``; the order dedup keeps at most one open per meter. There is
no modem time-set order kind yet: modem drift is stored and shown, and no order is created for it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from osos.headend import orders
from osos.headend.interpret import parse_device_time
from osos.store.schema import meters, modems

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_S = 300
SYNC_KIND = "time-set"
SYSTEM_USER = "system:time-sync"
_SECOND = timedelta(seconds=1)


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded toward zero (device clocks have one-second resolution)."""
    whole = abs(delta) // _SECOND
    return whole if delta >= timedelta(0) else -whole


def window_drift_s(device_time: datetime, sent_at: datetime, received_at: datetime) -> int:
    """Drift of a clock read at some moment between ``sent_at`` and ``received_at`` (UTC)."""
    earliest = sent_at.replace(microsecond=0)  # the device prints whole seconds
    if device_time < earliest:
        return _seconds(device_time - earliest)
    if device_time > received_at:
        return _seconds(device_time - received_at)
    return 0


def read_drift_s(body: Any, sent_at: datetime | None, received_at: datetime) -> int | None:
    """The drift a read response shows, or None when it measures nothing (no readDate/timezone, or not the
    answer to an order of ours that was sent: ``sent_at`` is when that order went out, None otherwise)."""
    if not isinstance(body, dict) or sent_at is None:
        return None
    device_time = parse_device_time(body.get("readDate"), body.get("timezone"))
    if device_time is None:
        return None
    return window_drift_s(device_time, sent_at, received_at)


def heartbeat_drift_s(conn: Connection, body: Any, modem_id: int, received_at: datetime) -> int | None:
    """A heartbeat's ``deviceDate`` minus its receive time; the zone is the heartbeat's ``timezone`` or, as most
    devices send it only there, the one the modem gave in its identification. None when unreadable."""
    if not isinstance(body, dict) or not isinstance(body.get("deviceDate"), str):
        return None
    tz = body.get("timezone")
    if not isinstance(tz, str):
        tz = conn.execute(select(modems.c.timezone).where(modems.c.id == modem_id)).scalar_one_or_none()
    device_time = parse_device_time(body["deviceDate"], tz)
    return None if device_time is None else _seconds(device_time - received_at)


def record_meter_drift(conn: Connection, meter_id: int, drift_s: int, *, now: datetime,
                       threshold_s: float = DEFAULT_THRESHOLD_S) -> int | None:
    """Store a meter's drift; beyond the threshold queue a time-set order for it (an open one is answered
    instead, HES-12). Returns the order id, or None when none is needed or it cannot be queued (logged)."""
    conn.execute(update(meters).where(meters.c.id == meter_id).values(clock_drift_s=drift_s, drift_measured_at=now))
    if abs(drift_s) <= threshold_s:
        return None
    try:
        order_id = orders.create_order(conn, SYNC_KIND, meter_id=meter_id, created_by=SYSTEM_USER, source="system",
                                       now=now)
    except orders.OrderError as exc:
        from osos.headend.ingest import write_log

        write_log(conn, "orders", "warning", f"meter {meter_id}: clock off by {drift_s} s, no time-set order: {exc}",
                  now=now)
        return None
    log.info("meter %s: clock off by %s s; time-set order %s", meter_id, drift_s, order_id)
    return order_id
