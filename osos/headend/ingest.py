"""Uplink ingest: store the raw message, then what it means, in one transaction per batch (HES-5, HES-6,
HES-9, HES-47, HES-48).

Trust (issue 7, defence in depth beside the broker's ACLs): a device speaks only for itself. A message is
accepted only from an ``active`` modem of the inventory (no registration on the fly), on its own topic, or on
the shared legacy topic when an admin marked it legacy; an answer closes only an order sent to its modem; a
readout for a meter bound to another modem, or dated in the future, is kept but flagged and never becomes that
meter's latest value. Everything refused is still stored raw (status ``rejected``) with a security log row.

Idempotent by construction: the raw row's ``dedup_key`` is unique, so a QoS 1 redelivery or a gateway resend
finds its key taken and writes nothing else. The MQTT message is acknowledged to the broker only after the
transaction commits (see service.py), so a crash between receive and commit means redelivery, never loss.
Bad input becomes a raw row with status invalid/rejected plus a log record; it never raises out of here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from osos.headend import alarms as alarm_rules
from osos.headend import logs, orders, timesync
from osos.headend.interpret import Interpretation, MeterReading, interpret, invalid, oversized, summary
from osos.protocols import mass
from osos.store.db import as_utc, insert_or_ignore, upsert, utcnow
from osos.store.schema import heartbeats, log_records, meters, modems, raw_messages, readings, register_latest
from osos.store.schema import orders as orders_table

log = logging.getLogger(__name__)

# Functions a device pushes on its own; the head-end acknowledges each one (MASS: every message gets an ack).
NO_ACK = {"ack"}


@dataclass
class Incoming:
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)
    token: Any = None  # transport handle (e.g. the MQTT mid) returned untouched in the outcome
    size: int | None = None  # set (with sha256) when ``payload`` is only the kept prefix of an oversized one
    sha256: str | None = None

    def __post_init__(self) -> None:
        """An oversized payload is cut at once to the prefix kept as evidence, so it is never held or parsed
        whole (HES-6: hash + size + the first 4 KiB, status rejected)."""
        if len(self.payload) > mass.MAX_PAYLOAD:
            self.size = len(self.payload)
            self.sha256 = hashlib.sha256(self.payload).hexdigest()
            self.payload = self.payload[: mass.OVERSIZED_KEEP]


@dataclass
class Outcome:
    token: Any
    status: str  # stored | duplicate | invalid | rejected | error
    raw_id: int | None = None
    error: str | None = None
    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        """True when the broker may forget the message (it is stored, or known bad). ``error`` (the database
        failed) is not settled: the message must come again."""
        return self.status != "error"


def write_log(
    conn: Connection,
    category: str,
    level: str,
    message: str,
    raw_id: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """A categorized log record (HES-6, HES-59)."""
    conn.execute(
        insert(log_records).values(
            at=now or utcnow(), category=category, level=level, message=message[:2000], raw_id=raw_id, detail=detail
        )
    )


class Ingestor:
    def __init__(self, engine: Engine, topics: mass.Topics, *, future_skew_s: float = 600.0,
                 time_sync_threshold_s: float = timesync.DEFAULT_THRESHOLD_S) -> None:
        self.engine = engine
        self.topics = topics
        self.future_skew_s = future_skew_s
        self.time_sync_threshold_s = time_sync_threshold_s
        self.retry_policies: dict[str, orders.RetryPolicy] | None = None  # the head-end's (OSOS_ORDER_RETRIES)

    def _interpret(self, item: Incoming) -> Interpretation:
        if item.size is not None and item.sha256 is not None:
            return oversized(item.size, item.sha256)
        return interpret(item.payload, item.topic, self.topics, item.received_at, future_skew_s=self.future_skew_s)

    # -- public -----------------------------------------------------------------------------------------------
    def process(self, batch: list[Incoming]) -> list[Outcome]:
        """Store a batch in one transaction; if that fails, retry message by message so one bad row cannot
        hold back the others."""
        if not batch:
            return []
        interpreted = [(item, self._interpret(item)) for item in batch]
        try:
            with self.engine.begin() as conn:
                senders: dict[mass.Device, Any] = {}  # inventory rows looked up once per batch
                return [self._store(conn, item, it, senders) for item, it in interpreted]
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                log.error("database error storing a message from %s: %s", batch[0].topic, exc)
                self._log_db_error(exc)
                return [Outcome(batch[0].token, "error", error=str(exc))]
            log.warning("batch of %d failed (%s); storing one by one", len(batch), exc.__class__.__name__)
            return [out for item in batch for out in self.process([item])]
        except Exception as exc:  # a handler bug: keep the bytes as an invalid row rather than block the queue
            if len(batch) > 1:
                return [out for item in batch for out in self.process([item])]
            log.exception("storing a message from %s failed unexpectedly", batch[0].topic)
            return [self._store_unprocessable(batch[0], exc)]

    # -- internals --------------------------------------------------------------------------------------------
    def _store_unprocessable(self, item: Incoming, exc: Exception) -> Outcome:
        """Keep a message the handlers could not process as raw + log record (HES-5: raw is never lost)."""
        reason = f"internal: {exc.__class__.__name__}: {exc}"
        failed = invalid(item.payload, reason)
        try:
            with self.engine.begin() as conn:
                return self._store(conn, item, failed)
        except SQLAlchemyError as db_exc:
            self._log_db_error(db_exc)
            return Outcome(item.token, "error", error=str(db_exc))

    def _log_db_error(self, exc: Exception) -> None:
        try:
            with self.engine.begin() as conn:
                write_log(conn, "database", "error", f"storing a message failed: {exc}")
        except SQLAlchemyError:
            log.exception("cannot write the database-error log record either")

    def _reply_topic(self, topic: str, device: mass.Device) -> str:
        """Answer on the session the message came in on (plain mount or not) and on its topic style."""
        return self.topics.downlink_for(device, self.topics.transport(topic), legacy=self.topics.is_legacy(topic))

    def _vet(
        self, conn: Connection, item: Incoming, it: Interpretation, senders: dict[mass.Device, Any] | None = None
    ) -> tuple[Interpretation, Any]:
        """Who sent this, and may it say what it says (HES-4, HES-6)? Returns the interpretation (turned into a
        ``rejected`` one when not) and the sender's modem row (None when refused or unparseable)."""
        msg = it.message
        if msg is None or it.status == "rejected":
            return it, None
        device = msg.device
        if senders is not None and device in senders:
            modem = senders[device]
        else:
            modem = conn.execute(
                select(modems.c.id, modems.c.status, modems.c.topic_style).where(
                    modems.c.flag == device.flag, modems.c.serial == device.serial
                )
            ).first()
            if senders is not None:
                senders[device] = modem
        reason = None
        if modem is None:
            reason = f"identity: unknown device {device.key}"
        elif modem.status != "active":
            reason = f"identity: device {device.key} is disabled"
        elif self.topics.is_legacy(item.topic) and modem.topic_style != "legacy":
            reason = f"identity: {device.key} is not marked legacy and may not use the shared topic"
        elif msg.reference_id.startswith(orders.REFERENCE_PREFIX):  # only such a referenceId can answer an order
            order = conn.execute(
                select(orders_table.c.id, orders_table.c.modem_id, orders_table.c.started_at).where(
                    orders_table.c.reference_id == msg.reference_id
                )
            ).first()
            if order is not None and order.modem_id != modem.id:
                reason = (f"identity: {device.key} answered order {order.id}, which was sent to modem "
                          f"{order.modem_id}")
            elif order is not None:
                it.order_sent_at = as_utc(order.started_at)
        if reason is not None:
            return invalid(item.payload, reason, status="rejected", message=msg), None
        return it, modem

    def _store(
        self, conn: Connection, item: Incoming, it: Interpretation, senders: dict[mass.Device, Any] | None = None
    ) -> Outcome:
        it, sender = self._vet(conn, item, it, senders)
        msg = it.message
        now = item.received_at
        flags = list(it.flags)
        raw_id = insert_or_ignore(
            conn,
            raw_messages,
            {
                "dedup_key": it.dedup_key[:320],
                "received_at": now,
                "topic": item.topic[:256],
                "device_flag": msg.device.flag if msg else None,
                "device_serial": msg.device.serial if msg else None,
                "function": msg.function if msg else None,
                "reference_id": msg.reference_id if msg else None,
                "payload": item.payload,
                "status": it.status,
                "error": it.error,
                "flags": ",".join(flags) or None,
                "payload_size": item.size,
            },
            ["dedup_key"],
        )
        replies: list[tuple[str, dict[str, Any]]] = []
        if msg is not None and msg.function not in NO_ACK and it.status != "rejected":  # never answer a stranger
            if it.status == "ok":
                replies.append((self._reply_topic(item.topic, msg.device), mass.ack(msg.device, msg.reference_id)))
            else:
                replies.append(
                    (
                        self._reply_topic(item.topic, msg.device),
                        mass.ack(msg.device, msg.reference_id, fail_code=400, reason=it.error),
                    )
                )
        if raw_id is None:  # seen before: redelivery or resend. Answer again, store nothing.
            return Outcome(item.token, "duplicate", replies=replies)

        if it.status != "ok":
            category = "security" if it.status == "rejected" else "parsing"
            write_log(conn, category, "warning", f"{item.topic}: {it.error}", raw_id=raw_id, now=now)
            if sender is not None and msg is not None and msg.function == "read":  # a bad answer fails its order
                orders.finish(conn, msg.reference_id, succeeded=False, error=it.error, modem_id=sender.id, now=now)
            return Outcome(item.token, it.status, raw_id=raw_id, error=it.error, replies=replies)

        assert msg is not None and sender is not None
        modem_id = int(sender.id)
        conn.execute(
            update(modems)
            .where(modems.c.id == modem_id)
            .values(last_seen_at=now, transport=self.topics.transport(item.topic))
        )
        handler = getattr(self, f"_on_{msg.function}", None)
        if handler is not None:
            handler(conn, msg, it, modem_id, raw_id, item)
        elif not msg.is_fail:
            orders.finish(conn, msg.reference_id, succeeded=True, result={"raw_id": raw_id}, modem_id=modem_id,
                          now=now)
        if it.flags != flags:  # a handler found something (foreign-meter ...): mark the raw row too
            conn.execute(update(raw_messages).where(raw_messages.c.id == raw_id).values(flags=",".join(it.flags)))
        return Outcome(item.token, "stored", raw_id=raw_id, replies=replies)

    def _flag(self, conn: Connection, it: Interpretation, flag: str, text: str, raw_id: int, item: Incoming) -> None:
        """Mark a stored message with a trust flag and say why in the security log (HES-6, HES-59)."""
        if flag not in it.flags:
            it.flags.append(flag)
        write_log(conn, "security", "warning", f"{item.topic}: {flag}: {text}", raw_id=raw_id, now=item.received_at)

    # -- per function -----------------------------------------------------------------------------------------
    def _on_identification(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        body = msg.body if isinstance(msg.body, dict) else {}
        interfaces = body.get("communicationInterfaces") or [{}]
        first_if = interfaces[0] if isinstance(interfaces, list) and interfaces else {}
        first_if = first_if if isinstance(first_if, dict) else {}
        conn.execute(
            update(modems)
            .where(modems.c.id == modem_id)
            .values(
                brand=_s(body.get("brand"), 64),
                model=_s(body.get("model"), 64),
                firmware=_s(body.get("firmware"), 64),
                protocol_version=_s(body.get("protocolVersion"), 32),
                device_type=_s(body.get("deviceType"), 16),
                comm_type=_s(body.get("communicationType") or first_if.get("type"), 16),
                imei=_s(body.get("imei") or first_if.get("imei"), 32),
                ip=_s(body.get("ip") or first_if.get("ip"), 64),
                timezone=_s(body.get("timezone"), 8),
                signal=_i(body.get("signal")),
                identity=body,
                identified_at=item.received_at,
            )
        )
        for meter in body.get("meters") or []:
            if not isinstance(meter, dict) or not meter.get("serialNumber") or not meter.get("flag"):
                continue
            flag, serial = str(meter["flag"]).upper(), str(meter["serialNumber"])
            _, owner = self._upsert_meter(
                conn,
                flag=flag,
                serial=serial,
                modem_id=modem_id,
                now=item.received_at,
                brand=_s(meter.get("brand"), 64),
                model=_s(meter.get("model"), 64),
                kind=_s(meter.get("kind") or meter.get("type"), 16),
                protocol=_s(meter.get("protocol"), 16),
                identity=meter,
            )
            if owner is not None:
                self._flag(conn, it, "foreign-meter", f"lists meter {flag}{serial}, bound to modem {owner}; "
                           "not re-bound", raw_id, item)
        alarm_rules.modem_back(conn, modem_id, item.received_at)  # a new session: its last gasp is over (HES-24)
        orders.finish(conn, msg.reference_id, succeeded=True, result={"raw_id": raw_id}, modem_id=modem_id,
                      now=item.received_at)

    def _on_heartbeat(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        body = msg.body if isinstance(msg.body, dict) else {}
        conn.execute(
            insert(heartbeats).values(
                modem_id=modem_id,
                raw_id=raw_id,
                received_at=item.received_at,
                device_date=_s(body.get("deviceDate"), 32),
                signal=_i(body.get("signal")),
                cpu_temp=_i(body.get("cpuTemp")),
            )
        )
        values: dict[str, Any] = {"last_heartbeat_at": item.received_at}
        if _i(body.get("signal")) is not None:
            values["signal"] = _i(body.get("signal"))
        drift = timesync.heartbeat_drift_s(conn, body, modem_id, item.received_at)  # HES-35
        if drift is not None:
            values.update(clock_drift_s=drift, drift_measured_at=item.received_at)
        conn.execute(update(modems).where(modems.c.id == modem_id).values(**values))

    def _on_alarm(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming,
        *, notification: bool = False,
    ) -> None:
        """Device alarms, normalized and deduplicated (osos/headend/alarms.py; HES-24, HES-28)."""
        entries = msg.body if isinstance(msg.body, list) else [msg.body]
        emergency = self.topics.is_emergency(item.topic)
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            meter_id = None
            ref = entry.get("meter")
            if isinstance(ref, dict) and ref.get("serialNumber"):  # only a meter behind this modem
                mine = and_(meters.c.serial == str(ref["serialNumber"]), meters.c.modem_id == modem_id)
                row = conn.execute(select(meters.c.id).where(mine)).first()
                meter_id = row.id if row else None
            alarm_rules.from_device(conn, entry, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id,
                                    emergency=emergency, now=item.received_at, notification=notification)

    def _on_notification(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        """MASS notification function (HES-25): stored as informational alarms."""
        self._on_alarm(conn, msg, it, modem_id, raw_id, item, notification=True)
        if not msg.is_fail:  # as for any other function: an answer closes its order
            orders.finish(conn, msg.reference_id, succeeded=True, result={"raw_id": raw_id}, modem_id=modem_id,
                          now=item.received_at)

    def _on_log(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        """MASS log function: the modem's own log entries become log records of category ``modem`` (HES-59)."""
        entries = msg.body if isinstance(msg.body, list) else [msg.body]
        for entry in entries:
            if isinstance(entry, dict):
                text = entry.get("message") or entry.get("description") or entry.get("log")
                level = entry.get("level")
            else:
                text, level = entry, None
            if text is None or text == "":
                continue
            write_log(conn, "modem", logs.normalize_level(level), f"{msg.device.key}: {text}", raw_id=raw_id,
                      detail={"modem": modem_id, "device": msg.device.key,
                              "entry": entry if isinstance(entry, dict) else None},
                      now=item.received_at)
        if not msg.is_fail:  # as for any other function: an answer closes its order
            orders.finish(conn, msg.reference_id, succeeded=True, result={"raw_id": raw_id}, modem_id=modem_id,
                          now=item.received_at)

    def _on_ack(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        if msg.is_fail:
            body = msg.body if isinstance(msg.body, dict) else {}
            reason = f"device refused: {body.get('failCode')} {body.get('failDescrition') or ''}".strip()
            orders.finish(conn, msg.reference_id, succeeded=False, error=reason, modem_id=modem_id,
                          now=item.received_at)

    def _on_read(
        self, conn: Connection, msg: mass.Message, it: Interpretation, modem_id: int, raw_id: int, item: Incoming
    ) -> None:
        if msg.is_fail or it.reading is None:
            body = msg.body if isinstance(msg.body, dict) else {}
            reason = f"read failed: {body.get('failCode')} {body.get('failDescrition') or ''}".strip()
            write_log(
                conn, "communication", "warning", f"{msg.device.key}: {reason}", raw_id=raw_id, now=item.received_at
            )
            code = body.get("failCode")
            meter = body.get("meter") if isinstance(body.get("meter"), dict) else {}
            part = f"{meter.get('flag') or ''}{meter.get('serialNumber') or ''}" or None
            orders.finish(conn, msg.reference_id, succeeded=False, error=reason, modem_id=modem_id,
                          retryable=isinstance(code, int) and code in orders.RETRYABLE_FAIL_CODES,
                          policies=self.retry_policies, part=part, now=item.received_at)
            return
        reading = it.reading
        meter_id = self._store_reading(conn, reading, modem_id, raw_id, item, it)
        if "foreign-meter" not in it.flags:  # HES-35: only a meter of this modem, before its order is closed
            drift = timesync.read_drift_s(msg.body, it.order_sent_at, item.received_at)
            if drift is not None:
                timesync.record_meter_drift(conn, meter_id, drift, now=item.received_at,
                                            threshold_s=self.time_sync_threshold_s)
        result = summary(reading) | {"raw_id": raw_id, "meter_id": meter_id}
        if it.flags:
            result["flags"] = list(it.flags)
        orders.finish(conn, msg.reference_id, succeeded=True, result=result, modem_id=modem_id,
                      part=f"{reading.flag}{reading.serial}", now=item.received_at)

    def _store_reading(
        self, conn: Connection, reading: MeterReading, modem_id: int, raw_id: int, item: Incoming, it: Interpretation
    ) -> int:
        """Readings are always stored (HES-5: nothing is lost), but only a trusted one becomes the meter's latest
        value: not a read of a meter bound to another modem, not one dated beyond the allowed clock skew."""
        now = item.received_at
        future = "future-date" in it.flags
        meter_id, owner = self._upsert_meter(
            conn,
            flag=reading.flag,
            serial=reading.serial,
            modem_id=modem_id,
            now=now,
            ident=reading.ident,
            last_read_at=None if future else reading.read_at,
            protocol=reading.protocol,
        )
        if owner is not None:
            self._flag(conn, it, "foreign-meter", f"read of meter {reading.flag}{reading.serial}, bound to modem "
                       f"{owner}; not its latest value", raw_id, item)
        if future:
            self._flag(conn, it, "future-date", f"read of meter {reading.flag}{reading.serial} dated "
                       f"{reading.read_at.isoformat() if reading.read_at else '?'}, beyond the allowed skew of "
                       f"{self.future_skew_s:g} s; not its latest value", raw_id, item)
        read_at = reading.read_at or now
        if reading.registers:
            conn.execute(
                insert(readings),
                [
                    {
                        "raw_id": raw_id,
                        "meter_id": meter_id,
                        "obis": r.obis[:32],
                        "value": r.value[:64],
                        "unit": r.unit,
                        "extra": r.extra,
                        "read_at": read_at,
                    }
                    for r in reading.registers
                ],
            )
        if owner is not None or future:
            return meter_id
        watched = alarm_rules.watched(reading.registers, reading.protocol)  # FF/GF/HES-33 rules (issue 9)
        before = alarm_rules.latest(conn, meter_id, watched) if watched else None
        upsert(
            conn,
            register_latest,
            [
                {
                    "meter_id": meter_id,
                    "obis": r.obis[:32],
                    "value": r.value[:64],
                    "unit": r.unit,
                    "extra": r.extra,
                    "read_at": read_at,
                    "raw_id": raw_id,
                }
                for r in reading.registers
            ],
            ["meter_id", "obis"],
            ["value", "unit", "extra", "read_at", "raw_id"],
            only_if_newer="read_at",
        )
        if before is not None:
            alarm_rules.on_reading(conn, modem_id=modem_id, meter_id=meter_id, raw_id=raw_id,
                                   registers=reading.registers, protocol=reading.protocol, before=before,
                                   read_at=read_at, now=now, map_name=_modbus_map(it))
        return meter_id

    def _upsert_meter(
        self, conn: Connection, *, flag: str, serial: str, modem_id: int, now: datetime, **fields: Any
    ) -> tuple[int, int | None]:
        """Register a meter by flag + serial (AMR-7, HES-47) the first time it is seen, bound to the modem that
        reported it. Returns ``(meter_id, owner)``: ``owner`` is the other modem's id when the meter is already
        bound elsewhere; then nothing about the meter is changed. Moving a meter to another modem is an inventory
        action, never the side effect of an uplink, which any device could otherwise use to take over a meter
        (issue 7)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        row = conn.execute(
            select(meters.c.id, meters.c.modem_id).where(meters.c.flag == flag, meters.c.serial == serial)
        ).first()
        if row is None:
            new_id = insert_or_ignore(
                conn,
                meters,
                {"flag": flag, "serial": serial, "modem_id": modem_id, "first_seen_at": now, **fields},
                ["flag", "serial"],
            )
            if new_id is not None:
                return int(new_id), None
            row = conn.execute(
                select(meters.c.id, meters.c.modem_id).where(meters.c.flag == flag, meters.c.serial == serial)
            ).first()
            assert row is not None
        if row.modem_id is not None and row.modem_id != modem_id:
            return int(row.id), int(row.modem_id)
        conn.execute(update(meters).where(meters.c.id == row.id).values(modem_id=modem_id, **fields))
        return int(row.id), None


def _modbus_map(it: Interpretation) -> str | None:
    """The register map a Modbus answer names (``data.records[].map``), for its HES-33 thresholds."""
    body = it.message.body if it.message is not None and isinstance(it.message.body, dict) else {}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    records = data.get("records") if isinstance(data, dict) else None
    if isinstance(records, list) and records and isinstance(records[0], dict):
        name = records[0].get("map")
        return name if isinstance(name, str) else None
    return None


def _s(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _i(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
