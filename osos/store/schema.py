"""The relational schema (SQLAlchemy Core), shared by SQLite (embedded) and PostgreSQL (production).

Times are UTC. Raw messages are kept byte for byte (HES-5); parsed rows point at the raw row they came from,
so parsing can be re-run and nothing parsed exists without its source (HES-47).
Changes to this file need an Alembic migration in ``osos/store/migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY is the rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")
UTC = DateTime(timezone=True)

modems = Table(
    "modems",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("flag", String(3), nullable=False),
    Column("serial", String(32), nullable=False),
    Column("brand", String(64)),
    Column("model", String(64)),
    Column("firmware", String(64)),
    Column("protocol_version", String(32)),
    Column("device_type", String(16)),  # MM, HU, DCU ... (HES-22)
    Column("comm_type", String(16)),  # 2G/4G, NB-IoT, PLC, RF ...
    Column("imei", String(32)),
    Column("ip", String(64)),
    Column("timezone", String(8)),
    # "device": per-device topics; "legacy": marked by an admin to use the shared MASS topics (HES-4, docs/security.md)
    Column("topic_style", String(8), nullable=False, default="device"),
    Column("status", String(16), nullable=False, default="active", server_default="active"),  # active | disabled
    Column("mqtt_username", String(64)),  # the broker identity issued at provisioning (never its password)
    Column("transport", String(8)),  # "tls" | "plain": how its last uplink reached the broker (HES-54)
    Column("provisioned_at", UTC),
    Column("provisioned_by", String(64)),
    Column("identity", JSON),  # the whole identification response as received (parsed JSON)
    Column("signal", Integer),
    Column("registered_at", UTC, nullable=False),
    Column("identified_at", UTC),
    Column("last_seen_at", UTC),
    Column("last_heartbeat_at", UTC),
    # HES-35: the modem's clock minus the head-end's receive time at its last heartbeat (osos.headend.timesync)
    Column("clock_drift_s", Integer),
    Column("drift_measured_at", UTC),
    # how many orders the modem takes at once (issue 8 item 2); NULL = 1. Set from its profile by provisioning.
    Column("max_concurrent", Integer),
    UniqueConstraint("flag", "serial", name="uq_modems_flag_serial"),
)

meters = Table(
    "meters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("flag", String(3), nullable=False),
    Column("serial", String(32), nullable=False),
    Column("modem_id", Integer, ForeignKey("modems.id"), index=True),
    Column("brand", String(64)),
    Column("model", String(64)),
    Column("kind", String(16)),  # single-phase, three-phase, kombi, water, gas, analyzer ... (HES-26)
    Column("protocol", String(16)),  # iec62056-21, dlms, modbus, mbus, wmbus
    Column("ident", String(128)),  # identification line as last read (e.g. "/LGZ5\\2ZMG405000b.P07")
    Column("installation_no", String(32), index=True),
    Column("subscriber_name", String(128), index=True),
    Column("identity", JSON),
    Column("first_seen_at", UTC, nullable=False),
    Column("last_read_at", UTC),
    # HES-35: the meter's clock minus the head-end's estimate of the reading moment (osos.headend.timesync)
    Column("clock_drift_s", Integer),
    Column("drift_measured_at", UTC),
    UniqueConstraint("flag", "serial", name="uq_meters_flag_serial"),
)

raw_messages = Table(
    "raw_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # device|function|referenceId|part, or "invalid|<sha256>": makes QoS 1 redelivery and resends idempotent.
    Column("dedup_key", String(320), nullable=False),
    Column("received_at", UTC, nullable=False),
    Column("topic", String(256), nullable=False),
    Column("device_flag", String(3)),
    Column("device_serial", String(32)),
    Column("function", String(32)),
    Column("reference_id", String(128)),
    Column("payload", LargeBinary, nullable=False),  # exactly as received (HES-5)
    Column("status", String(16), nullable=False),  # ok | invalid | rejected
    Column("error", Text),
    # comma-separated trust flags: foreign-meter, future-date, oversized (HES-6); NULL when nothing was flagged
    Column("flags", String(128)),
    Column("payload_size", BigInteger),  # set when only a prefix of an oversized payload was kept
    UniqueConstraint("dedup_key", name="uq_raw_messages_dedup_key"),
)
Index("ix_raw_messages_device", raw_messages.c.device_flag, raw_messages.c.device_serial, raw_messages.c.id)

readings = Table(
    "readings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("raw_id", BigId, ForeignKey("raw_messages.id"), nullable=False, index=True),
    Column("meter_id", Integer, ForeignKey("meters.id"), nullable=False),
    Column("obis", String(32), nullable=False),
    Column("value", String(64), nullable=False),  # digits exactly as read (AMR-2)
    Column("unit", String(16)),
    Column("extra", JSON),  # further value groups, e.g. the time of a maximum demand
    Column("read_at", UTC, nullable=False),
    UniqueConstraint("raw_id", "meter_id", "obis", name="uq_readings_raw_meter_obis"),
)
Index("ix_readings_meter_obis_time", readings.c.meter_id, readings.c.obis, readings.c.read_at)

register_latest = Table(
    "register_latest",
    metadata,
    Column("meter_id", Integer, ForeignKey("meters.id"), primary_key=True),
    Column("obis", String(32), primary_key=True),
    Column("value", String(64), nullable=False),
    Column("unit", String(16)),
    Column("extra", JSON),
    Column("read_at", UTC, nullable=False),
    Column("raw_id", BigId, ForeignKey("raw_messages.id"), nullable=False),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("modem_id", Integer, ForeignKey("modems.id"), nullable=False),
    Column("raw_id", BigId, ForeignKey("raw_messages.id"), nullable=False, unique=True),
    Column("received_at", UTC, nullable=False),
    Column("device_date", String(32)),
    Column("signal", Integer),
    Column("cpu_temp", Integer),
)
Index("ix_heartbeats_modem_time", heartbeats.c.modem_id, heartbeats.c.received_at)

alarms = Table(
    "alarms",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("raw_id", BigId, ForeignKey("raw_messages.id"), nullable=False, index=True),
    Column("modem_id", Integer, ForeignKey("modems.id"), nullable=False),
    Column("meter_id", Integer, ForeignKey("meters.id")),
    Column("received_at", UTC, nullable=False),
    Column("occurred_at", String(32)),
    Column("emergency", Boolean, nullable=False, default=False),
    Column("type", String(32)),
    Column("level", String(16)),
    Column("code", String(32)),
    Column("description", Text),
    # issue 9 (HES-11, HES-25, HES-28, HES-33): normalized type/severity, where it came from, and its state.
    # ``type`` is the normalized type (osos/data/alarms/types.toml); ``source_type`` what the sender called it.
    Column("source", String(16)),  # device | ff | gf | modbus | notification
    Column("source_type", String(64)),
    Column("severity", String(16)),  # critical | warning | info
    Column("state", String(16), nullable=False, default="raised", server_default="raised"),
    # set while the alarm is not cleared: one open alarm per device + type + code (dedup); NULL once cleared
    Column("open_key", String(200)),
    Column("repeats", Integer, nullable=False, default=0, server_default="0"),
    Column("last_seen_at", UTC),
    Column("acked_at", UTC),
    Column("acked_by", String(64)),
    Column("cleared_at", UTC),
    Column("cleared_by", String(64)),
    Column("detail", JSON),
    UniqueConstraint("open_key", name="uq_alarms_open_key"),
)
Index("ix_alarms_state_received", alarms.c.state, alarms.c.received_at)
Index("ix_alarms_received", alarms.c.received_at)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # read, ...
    # pending | running | succeeded | failed | expired | cancelled (osos.headend.orders.MOVES)
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=5),  # 0..9, 9 the most urgent (HES-12; 0003 flipped it)
    Column("meter_id", Integer, ForeignKey("meters.id")),
    Column("modem_id", Integer, ForeignKey("modems.id")),
    Column("reference_id", String(128), nullable=False),
    Column("request", JSON),
    Column("result", JSON),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_by", String(64)),
    Column("created_at", UTC, nullable=False),
    Column("updated_at", UTC, nullable=False),
    Column("started_at", UTC),
    Column("finished_at", UTC),
    Column("deadline_at", UTC),  # the running attempt's answer deadline
    Column("source", String(16), nullable=False, default="api", server_default="api"),  # api | ui | schedule | system
    Column("not_before", UTC),  # a retry waits for its backoff
    Column("expires_at", UTC),  # the order's own deadline: not done by then, it ends expired
    Column("max_attempts", Integer),  # NULL: the kind's retry policy
    Column("dedup_key", String(200)),  # kind|meter|modem|request hash: identical open orders (HES-12)
    Column("exclusive_key", String(64)),  # contradicting open orders (relay connect vs disconnect of one meter)
    Column("expected_parts", Integer),  # a modem-level read: how many meters must answer
    UniqueConstraint("reference_id", name="uq_orders_reference_id"),
)
OPEN = "status IN ('pending', 'running')"
Index("ix_orders_claim", orders.c.status, orders.c.priority.desc(), orders.c.id)
Index("ix_orders_modem_status", orders.c.modem_id, orders.c.status)
Index("ix_orders_meter_id", orders.c.meter_id, orders.c.id)
Index("ix_orders_kind", orders.c.kind, orders.c.id)
Index("ix_orders_created_by", orders.c.created_by, orders.c.id)
Index("ix_orders_source", orders.c.source, orders.c.id)
Index("ix_orders_created_at", orders.c.created_at)
Index("uq_orders_open_dedup", orders.c.dedup_key, unique=True, postgresql_where=text(OPEN), sqlite_where=text(OPEN))
# the dispatcher's expiry sweep (every second) finds pending orders past their deadline without a scan of the queue
Index("ix_orders_pending_expiry", orders.c.expires_at, postgresql_where=text("status = 'pending'"),
      sqlite_where=text("status = 'pending'"))
Index("ix_orders_open_exclusive", orders.c.exclusive_key, postgresql_where=text(OPEN), sqlite_where=text(OPEN))

# every send of an order (issue 8 item 1): when it went, when and how it was answered
order_attempts = Table(
    "order_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("attempt", Integer, nullable=False),  # 1, 2, ...
    Column("sent_at", UTC, nullable=False),
    Column("answered_at", UTC),
    Column("outcome", String(16)),  # NULL while open; succeeded | failed | timeout | refused | cancelled
    Column("error", Text),
    UniqueConstraint("order_id", "attempt", name="uq_order_attempts_order_id"),
)

# Device groups (issue 8): free-form labels on meters, one row per (meter, tag), so "every meter tagged X" is an
# indexed join on SQLite and PostgreSQL alike (a JSON list column would need dialect-specific JSON operators).
meter_tags = Table(
    "meter_tags",
    metadata,
    Column("meter_id", Integer, ForeignKey("meters.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(64), primary_key=True),
)
Index("ix_meter_tags_tag", meter_tags.c.tag, meter_tags.c.meter_id)

# HES-10: recurring orders for a device group. next_run_at is the claim: a process runs a due schedule only if
# its conditional UPDATE moves next_run_at on from the value it read (osos.headend.scheduler), so N head-ends
# dispatch each run exactly once.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("cron", String(128)),  # 5-field cron in the configured time zone, or
    Column("every_minutes", Integer),  # every N minutes aligned to local midnight (N divides 1440)
    Column("group", JSON, nullable=False),  # {"modems": [...], "tags": [...], "kind": ..., "brand": ...}
    Column("priority", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_by", String(64)),
    Column("created_at", UTC, nullable=False),
    Column("last_run_at", UTC),
    Column("next_run_at", UTC, nullable=False),
    UniqueConstraint("name", name="uq_schedules_name"),
)
Index("ix_schedules_enabled_next", schedules.c.enabled, schedules.c.next_run_at)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTC, nullable=False),
    # bumped by a password change, disable or delete: every token issued before is dead (HES-56)
    Column("token_generation", Integer, nullable=False, default=0, server_default="0"),
    Column("updated_at", UTC),
    UniqueConstraint("username", name="uq_users_username"),
)

# Tokens revoked before their expiry (logout); rows can be purged once expires_at has passed.
revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(32), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("expires_at", UTC, nullable=False, index=True),
    Column("revoked_at", UTC, nullable=False),
)

# HES-6 / HES-59: categorized log records, each category with its own retention.
log_records = Table(
    "log_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTC, nullable=False),
    Column("category", String(32), nullable=False),
    Column("level", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Column("raw_id", BigId, ForeignKey("raw_messages.id")),
    Column("detail", JSON),
)
Index("ix_log_records_category_at", log_records.c.category, log_records.c.at)
