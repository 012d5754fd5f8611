"""Typed request and response bodies of the Web API (they also document /docs, HES-51, HES-61)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

# Row ids are INTEGER columns: a larger number cannot exist, and PostgreSQL would refuse it with an error instead
# of "not found" - so the API refuses it up front (422).
MAX_ID = 2**31 - 1
# Free text that reaches SQL must not hold control characters (PostgreSQL refuses NUL in text): 422 up front.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
MeterIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="meter id")]
OrderIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="order id")]


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")


class ErrorResponse(BaseModel):
    detail: str


class Modem(BaseModel):
    id: int
    flag: str
    serial: str
    brand: str | None
    model: str | None
    device_type: str | None
    comm_type: str | None
    firmware: str | None
    last_seen_at: datetime | None
    last_heartbeat_at: datetime | None
    signal: int | None
    clock_drift_s: int | None = Field(None, description="clock minus head-end time at the last measurement, "
                                      "seconds; positive = ahead (HES-35)")
    drift_measured_at: datetime | None = None
    meters: int = Field(description="number of meters behind this modem")
    online: bool = Field(description="a heartbeat within 3 heartbeat periods or 5 minutes, whichever is longer")


class ModemDetail(Modem):
    protocol_version: str | None
    imei: str | None
    ip: str | None
    timezone: str | None
    topic_style: str
    identity: Any = Field(None, description="the whole identification answer as received (HES-22)")
    registered_at: datetime
    identified_at: datetime | None


ModemIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="modem id")]


class ModemRef(BaseModel):
    id: int
    flag: str
    serial: str


class Meter(BaseModel):
    id: int
    flag: str
    serial: str
    modem: ModemRef | None
    kind: str | None
    brand: str | None
    model: str | None
    protocol: str | None
    ident: str | None
    installation_no: str | None
    subscriber_name: str | None
    first_seen_at: datetime | None
    last_read_at: datetime | None
    clock_drift_s: int | None = Field(None, description="clock minus head-end time at the last measurement, "
                                      "seconds; positive = ahead (HES-35)")
    drift_measured_at: datetime | None = None


class RegisterValue(BaseModel):
    value: str = Field(description="the digits exactly as read, e.g. \"015214.234\" (AMR-2)")
    unit: str | None
    read_at: datetime
    extra: Any = None
    raw_id: int


class ParsedValue(BaseModel):
    obis: str
    value: str
    unit: str | None
    extra: Any = None
    read_at: datetime


class RawMessage(BaseModel):
    id: int
    received_at: datetime
    topic: str
    device_flag: str | None
    device_serial: str | None
    function: str | None
    reference_id: str | None
    status: str
    error: str | None
    size: int = Field(description="payload length in bytes")
    encoding: Literal["utf-8", "hex"] = Field(description="how `payload` renders the stored bytes")
    payload: str
    readable: str | None = Field(
        description="for text frames with control bytes (STX, ETX, BCC): the text with <STX>-style names for them"
    )
    parsed: list[ParsedValue] = Field(description="this meter's readings parsed from the message (HES-13)")


OrderKind = Literal["read", "relay", "time-set", "load-profile"]  # == osos.headend.orders.ORDER_KINDS (tested)


class OrderCreate(BaseModel):
    kind: OrderKind = Field(examples=["read"], description="read, relay, time-set or load-profile")
    meter: int | None = Field(default=None, ge=1, le=MAX_ID)
    modem: int | None = Field(default=None, ge=1, le=MAX_ID, description="instead of meter: every meter behind it")
    priority: int = Field(default=5, ge=0, le=9,
                          description="0..9, 9 is the most urgent (HES-12; before schema 0003 it was 0)")
    deadline: datetime | None = Field(default=None, description="not done by then, the order ends `expired` "
                                                                "(default: 24 h, OSOS_ORDER_TTL_S)")
    directive: str | None = Field(default=None, max_length=64,
                                  description="read only: a read directive (readout, short-read, load-profile, "
                                              "load-profile-2)")
    params: dict[str, str | int] | None = Field(
        default=None, max_length=8,
        description="per kind: a read takes start/end (ISO 8601); meter secrets and link settings are refused")
    state: Literal["connect", "disconnect"] | None = Field(default=None, description="relay orders (HES-11)")
    start: str | None = Field(default=None, max_length=40, description="load-profile orders: ISO 8601 (AMR-5)")
    end: str | None = Field(default=None, max_length=40, description="load-profile orders: ISO 8601")


class OrderCreated(BaseModel):
    id: int
    status: str
    existing: bool = Field(False, description="true (status 200): an identical open order answered instead (HES-12)")


OrderStatus = Literal["pending", "running", "succeeded", "failed", "expired", "cancelled"]
OrderSource = Literal["api", "ui", "schedule", "system"]


class OrderAttempt(BaseModel):
    attempt: int
    sent_at: datetime
    answered_at: datetime | None
    outcome: str | None = Field(description="null while open; succeeded, failed, timeout, refused or cancelled")
    error: str | None


class Order(BaseModel):
    id: int
    kind: str
    status: OrderStatus
    source: OrderSource
    meter: int | None
    modem: int | None = None
    request: Any = None
    priority: int
    attempts: int
    created_by: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None = Field(None, description="a retry waits until then")
    expires_at: datetime | None = Field(None, description="the order's deadline")
    result: Any = None
    error: str | None
    attempt_log: list[OrderAttempt] = Field(default_factory=list, description="every send, oldest first")


class OrderPage(BaseModel):
    total: int = Field(description="how many orders match the filters")
    limit: int
    offset: int
    items: list[Order]


class OrderCancel(BaseModel):
    reason: str | None = Field(None, max_length=200, pattern=NO_CONTROL)


# ------------------------------------------------------------------------------------------- schedules (HES-10)

ScheduleIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="schedule id")]


class DeviceGroup(BaseModel):
    """Which meters: every key given narrows the selection (AND); inside a list any entry matches; {} is every
    meter."""

    model_config = {"extra": "forbid"}
    modems: list[int | str] | None = Field(default=None, max_length=1000,
                                           description="modem ids or serials (FLAGserial or serial)")
    tags: list[str] | None = Field(default=None, max_length=1000, description="meter tags")
    kind: str | None = Field(default=None, max_length=64, description="meter kind, e.g. three-phase")
    brand: str | None = Field(default=None, max_length=64, description="meter brand (flag), e.g. MKL")


class ScheduleCreate(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL)
    kind: str = Field(max_length=32, examples=["read"], description="an order kind that needs no request")
    cron: str | None = Field(default=None, max_length=128, pattern=NO_CONTROL, examples=["0 2 * * *"],
                             description="5-field cron in the head-end's time zone")
    every_minutes: int | None = Field(default=None, ge=1, le=1440,
                                      description="instead of cron: every N minutes from local midnight")
    group: DeviceGroup = Field(default_factory=DeviceGroup)
    priority: int = Field(default=5, ge=0, le=9)


class Schedule(BaseModel):
    id: int
    name: str
    kind: str
    cron: str | None
    every_minutes: int | None
    group: dict[str, Any]
    priority: int
    enabled: bool
    created_by: str | None
    created_at: datetime | None
    last_run_at: datetime | None
    next_run_at: datetime | None


# --------------------------------------------------------------------------------------- users (HES-56, HES-60)

UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="user id")]
Role = Literal["admin", "operator", "viewer"]


class User(BaseModel):
    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    updated_at: datetime | None


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=NO_CONTROL)
    role: Role
    password: str | None = Field(None, min_length=1, max_length=1024,
                                 description="omit to have a strong one generated and returned once")


class UserCreated(User):
    password: str | None = Field(None, description="the generated password, shown only in this answer")


class UserPatch(BaseModel):
    role: Role | None = None
    disabled: bool | None = Field(None, description="true ends every session of the user")


class PasswordSet(BaseModel):
    password: str | None = Field(None, min_length=1, max_length=1024,
                                 description="omit to have a strong one generated and returned once")


class PasswordResult(BaseModel):
    password: str | None = Field(None, description="the generated password, shown only in this answer")
