"""The MQTT envelope between modems/gateways and the head-end (HES-34, HES-44..49).

Compatible with the public MASS v0.2 reference (JSON ``{device:{flag, serialNumber}, function, referenceId,
request|response}``), plus OSOS extensions documented in docs/protocol.md: per-device topics usable in broker
ACLs, a separate emergency topic (HES-24), and packet classes for the KPIs (HES-19).

Pure: bytes in, validated messages out. The JSON header is authoritative; MQTT v5 user properties are an extra
that mirrors it, so everything works on MQTT 3.1.1 brokers too.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from osos.protocols.errors import DecodeError

FUNCTIONS = (
    "identification",
    "heartbeat",
    "ack",
    "alarm",
    "read",
    "configuration",
    "schedule",
    "notification",
    "log",
    "write",
    "reset",
    "firmwareUpdate",
    "profile",
    "directive",
    "relay",
)

#: OSOS packet classes (HES-19 KPIs count deliveries per class).
PACKET_CLASSES = (
    "shortRead",
    "longRead",
    "loadProfile1",
    "loadProfile2",
    "warning",
    "history",
    "outage",
)

MAX_PAYLOAD = 1 << 20  # 1 MiB: a gateway never needs more for one message; bigger is refused, not parsed.
#: how much of an oversized payload is kept (with its size and SHA-256) as evidence (HES-5, HES-6)
OVERSIZED_KEEP = 4096


class MassError(DecodeError):
    """An uplink or downlink message that is not a valid MASS envelope."""


@dataclass(frozen=True)
class Device:
    flag: str
    serial: str

    @property
    def key(self) -> str:
        return f"{self.flag}{self.serial}"


@dataclass(frozen=True)
class Message:
    """One validated envelope. ``body`` is the ``request`` (downlink) or ``response`` (uplink) part."""

    device: Device
    function: str
    reference_id: str
    body: Any = None
    is_request: bool = False
    status: str | None = None  # messageStatus, e.g. "success" / "fail"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_fail(self) -> bool:
        if self.status == "fail":
            return True
        return isinstance(self.body, dict) and "failCode" in self.body


@dataclass(frozen=True)
class Topics:
    """Topic layout. Legacy MASS devices share one topic each way; OSOS gateways use per-device topics so a
    broker ACL can pin each device to its own branch (``mass/device/<flag>/<serial>/#``).

    TLS and plain sessions (HES-54): the broker's plain device listener has ``mount_point plain/``, the TLS one
    none, so the head-end (connected without mount point) sees a plain device's uplink as ``plain/mass/device/...``
    and reaches it on ``plain/mass/server/...``. ``device_tls`` says whether a topic without that prefix came over
    TLS; a deployment without TLS (one plain listener, no mount point) leaves it False and every session is plain.
    """

    root: str = "mass"
    plain_mount: str = "plain"
    device_tls: bool = False

    @property
    def legacy_uplink(self) -> str:
        return f"{self.root}/device/to_server"

    @property
    def legacy_downlink(self) -> str:
        return f"{self.root}/server/to_device"

    def uplink(self, device: Device) -> str:
        return f"{self.root}/device/{device.flag}/{device.serial}/to_server"

    def emergency(self, device: Device) -> str:
        return f"{self.root}/device/{device.flag}/{device.serial}/emergency"

    def downlink(self, device: Device) -> str:
        return f"{self.root}/server/{device.flag}/{device.serial}/to_device"

    def _mounted(self, topic: str) -> str:
        return f"{self.plain_mount}/{topic}" if self.plain_mount else topic

    def transport(self, topic: str) -> str:
        """``"tls"`` or ``"plain"``: how the uplink on ``topic`` reached the broker (HES-54)."""
        if self.plain_mount and topic.startswith(self.plain_mount + "/"):
            return "plain"
        return "tls" if self.device_tls else "plain"

    def strip_mount(self, topic: str) -> str:
        """The topic as the device named it (without the plain listener's mount point)."""
        if self.plain_mount and topic.startswith(self.plain_mount + "/"):
            return topic[len(self.plain_mount) + 1 :]
        return topic

    def downlink_for(self, device: Device, transport: str | None, legacy: bool = False) -> str:
        """Where the head-end reaches ``device`` on the session it last used: the plain mount's form for a
        plain session when the broker also has a TLS listener (``device_tls``), the bare topic otherwise."""
        base = self.legacy_downlink if legacy else self.downlink(device)
        return self._mounted(base) if self.device_tls and transport == "plain" else base

    @property
    def uplink_filters(self) -> tuple[str, ...]:
        """What the head-end subscribes to for normal traffic: both session forms (TLS/bare and plain mount)."""
        bare = (self.legacy_uplink, f"{self.root}/device/+/+/to_server")
        return bare + tuple(self._mounted(f) for f in bare) if self.plain_mount else bare

    @property
    def emergency_filter(self) -> str:
        return f"{self.root}/device/+/+/emergency"

    @property
    def emergency_filters(self) -> tuple[str, ...]:
        bare = self.emergency_filter
        return (bare, self._mounted(bare)) if self.plain_mount else (bare,)

    def is_emergency(self, topic: str) -> bool:
        topic = self.strip_mount(topic)
        return topic.startswith(f"{self.root}/device/") and topic.endswith("/emergency")

    def is_legacy(self, topic: str) -> bool:
        return self.strip_mount(topic) == self.legacy_uplink

    def device_from_topic(self, topic: str) -> Device | None:
        parts = self.strip_mount(topic).split("/")
        prefix = self.root.split("/")
        n = len(prefix)
        if len(parts) == n + 4 and parts[:n] == prefix and parts[n] == "device":
            return Device(parts[n + 1], parts[n + 2])
        return None


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("osos.protocols").joinpath("schemas/mass-envelope.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator() -> Any:
    import jsonschema

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def new_reference_id() -> str:
    return str(uuid.uuid4())


def make(
    function: str,
    device: Device,
    *,
    reference_id: str | None = None,
    request: Any = None,
    response: Any = None,
    status: str | None = None,
) -> dict[str, Any]:
    """Build an envelope as a plain dict (what goes on the wire after :func:`encode`)."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown MASS function {function!r}")
    msg: dict[str, Any] = {
        "device": {"flag": device.flag, "serialNumber": device.serial},
        "function": function,
        "referenceId": reference_id or new_reference_id(),
    }
    if status is not None:
        msg["messageStatus"] = status
    if request is not None:
        msg["request"] = request
    if response is not None:
        msg["response"] = response
    return msg


def ack(
    device: Device, reference_id: str, *, fail_code: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    """A positive ack, or a negative one with ``failCode``/``failDescrition`` (the reference's spelling)."""
    if fail_code is None:
        return make("ack", device, reference_id=reference_id)
    return make(
        "ack",
        device,
        reference_id=reference_id,
        response={"failCode": fail_code, "failDescrition": reason or ""},
        status="fail",
    )


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(payload: bytes) -> Message:
    """Parse and validate one envelope; raises :class:`MassError` with the reason on anything else."""
    if len(payload) > MAX_PAYLOAD:
        raise MassError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MassError("payload is not UTF-8", exc.start) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MassError(f"invalid JSON: {exc.msg}", exc.pos) from None
    except RecursionError:
        raise MassError("JSON nested too deeply") from None
    errors = sorted(_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise MassError(f"schema: {where}: {err.message}")
    is_request = "request" in obj
    return Message(
        device=Device(obj["device"]["flag"], obj["device"]["serialNumber"]),
        function=obj["function"],
        reference_id=obj["referenceId"],
        body=obj.get("request") if is_request else obj.get("response"),
        is_request=is_request,
        status=obj.get("messageStatus"),
        raw=obj,
    )


def user_properties(message: dict[str, Any]) -> list[tuple[str, str]]:
    """MQTT v5 user properties mirroring the JSON header, as the reference simulator sends them."""
    return [
        ("device.flag", message["device"]["flag"]),
        ("device.serialNumber", message["device"]["serialNumber"]),
        ("function", message["function"]),
        ("referenceId", message["referenceId"]),
    ]
