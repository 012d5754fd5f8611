"""What an uplink message means, decided without touching the database (pure, so it is easy to test).

The ingest step then writes what this module found. Keeping the two apart means a parsing rule can be re-run
over stored raw messages later (HES-5: raw is kept, parsing is repeatable).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from osos.protocols import iec62056_21 as iec
from osos.protocols import mass
from osos.protocols.errors import DecodeError
from osos.protocols.meter_answers import decode_answer

log = logging.getLogger(__name__)

# Registers that carry the meter's serial number in IEC 62056-21 readouts, most specific first.
SERIAL_REGISTERS = ("0.0.0", "C.1.0", "96.1.0", "0.0.1")


@dataclass(frozen=True)
class Register:
    obis: str
    value: str
    unit: str | None
    extra: list[dict[str, str | None]] | None = None


@dataclass
class MeterReading:
    """One meter's readout inside a read response."""

    flag: str
    serial: str
    ident: str | None
    registers: list[Register]
    read_at: datetime | None
    packet_class: str | None
    protocol: str = "iec62056-21"
    profile: list[dict[str, Any]] = field(default_factory=list)  # load-profile rows of binary protocols


@dataclass
class Interpretation:
    """Everything ingest needs to store one message. ``status`` is ok | invalid | rejected."""

    status: str
    dedup_key: str
    error: str | None = None
    message: mass.Message | None = None
    reading: MeterReading | None = None
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # trust flags for raw_messages.flags (HES-6)
    # when the sending modem was sent this referenceId as an order: when that order went out (set by ingest's
    # identity check, which looks the order up anyway; time sync measures the meter clock against it)
    order_sent_at: datetime | None = None

    @property
    def device(self) -> mass.Device | None:
        return self.message.device if self.message else None


def invalid(
    payload: bytes, reason: str, status: str = "invalid", message: mass.Message | None = None
) -> Interpretation:
    """A message that fails validation, keyed by the hash of its bytes so even it is stored only once."""
    digest = hashlib.sha256(payload).hexdigest()
    return Interpretation(status=status, dedup_key=f"{status}|{digest}", error=reason, message=message)


def oversized(size: int, digest: str) -> Interpretation:
    """A payload over :data:`mass.MAX_PAYLOAD`: never parsed; kept as hash + size + a prefix (HES-5, HES-6)."""
    return Interpretation(
        status="rejected",
        dedup_key=f"rejected|{digest}",
        error=f"size: payload of {size} bytes exceeds {mass.MAX_PAYLOAD} (sha256 {digest})",
        flags=["oversized"],
    )


def dedup_key(message: mass.Message, part: str = "", *, legacy: bool = False) -> str:
    """The stable identity of an uplink packet: sender + function + referenceId (+ the meter, when one request
    is answered by one message per meter behind the modem). The sender is the topic's device, or ``legacy/`` +
    the header's device on the shared topic, where anyone could write that header: a forged packet therefore
    never takes the key of the real one and can never make it a "duplicate" (HES-6)."""
    sender = f"legacy/{message.device.key}" if legacy else message.device.key
    return f"{sender}|{message.function}|{message.reference_id}|{part}"


def parse_device_time(text: str | None, tz: str | None) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` with an optional ``+HH:MM`` zone; None when absent or unreadable."""
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        return None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    if not tz:
        return None
    try:
        sign = -1 if tz.startswith("-") else 1
        hours, minutes = tz.lstrip("+-").split(":")
        offset = timedelta(hours=int(hours), minutes=int(minutes)) * sign
    except ValueError:
        return None
    return (naive - offset).replace(tzinfo=UTC)


def _registers_from_lines(lines: list[iec.DataLine]) -> list[Register]:
    regs: list[Register] = []
    seen: set[str] = set()
    for line in lines:
        if not line.values or not line.address or line.address in seen or line.address.startswith("P."):
            continue  # load-profile blocks and their rows are not registers; a repeated address keeps its first
        seen.add(line.address)
        first, rest = line.values[0], line.values[1:]
        extra = [{"value": v.value, "unit": v.unit} for v in rest] or None
        regs.append(Register(line.address, first.value, first.unit, extra))
    return regs


def split_frames(data: bytes) -> list[bytes]:
    """Cut a capture into its ``STX ... ETX|EOT BCC`` frames (a readout block, or the answers of a
    programming-mode session one after the other). Anything between frames is an error."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 1] != iec.STX:
            raise iec.IECError("expected STX at the start of a frame", pos)
        end = next((i for i in range(pos + 1, len(data)) if data[i] in (0x03, 0x04)), -1)
        if end < 0:
            raise iec.IECError("frame has no ETX", len(data))
        if end + 1 >= len(data):
            raise iec.IECError("BCC missing after ETX", end + 1)
        frames.append(data[pos : end + 2])
        pos = end + 2
    return frames


def parse_readout(raw_data: str) -> tuple[list[Register], bool | None]:
    """Parse the data part of a read: a readout ``STX ... ! ETX BCC`` block, a series of programming-mode data
    messages (each BCC verified), or bare data lines as MASS devices send them. Returns the registers and
    whether BCCs were checked (None: there were none)."""
    if not raw_data.startswith(iec.STX.decode("latin-1")):
        return _registers_from_lines(iec.parse_data_lines(raw_data)), None
    frames = split_frames(_latin1(raw_data))
    if len(frames) == 1 and frames[0][-5:-2] == b"!\r\n":  # a readout block ends with the "!" line
        return _registers_from_lines(list(iec.parse_data_block(frames[0]).lines)), True
    lines: list[iec.DataLine] = []
    for frame in frames:
        lines.extend(iec.parse_data_message(frame).lines)
    return _registers_from_lines(lines), True


def _binary_read(body: dict[str, Any], data: dict[str, Any], received_at: datetime) -> MeterReading:
    """DLMS / Modbus / M-Bus answers (HES-40): decode ``rawHex`` with the protocol's own codec; the gateway's
    ``values`` are not trusted. The meter must be named in the body (binary answers carry no ident line)."""
    protocol = data.get("protocol")
    decoded = decode_answer(protocol, data.get("rawHex"), data.get("records"))
    meter_ref = body.get("meter") or {}
    flag, serial = meter_ref.get("flag"), meter_ref.get("serialNumber")
    if not flag or not serial:
        raise DecodeError(f"a {protocol} answer must name its meter (flag and serialNumber)")
    registers = [Register(v.name, v.value, v.unit, v.extra) for v in decoded.values]
    return MeterReading(
        flag=str(flag).upper(),
        serial=str(serial),
        ident=None,
        registers=registers,
        read_at=parse_device_time(body.get("readDate"), body.get("timezone")) or received_at,
        packet_class=body.get("packetClass"),
        protocol=str(protocol),
        profile=decoded.profile,
    )


def _meter_from_read(message: mass.Message, received_at: datetime) -> MeterReading:
    body = message.body if isinstance(message.body, dict) else {}
    data = body.get("data") or {}
    if not isinstance(data, dict):
        raise DecodeError("read response data must be an object")
    if data.get("protocol", "iec62056-21") != "iec62056-21":
        return _binary_read(body, data, received_at)
    raw_data = data.get("rawData")
    if not isinstance(raw_data, str) or not raw_data.strip():
        raise DecodeError("read response carries no rawData")
    registers, _ = parse_readout(raw_data)
    profile = iec_profile_rows(raw_data)
    ident_line = data.get("id")
    ident = None
    if ident_line:  # MASS sends the identification line without its CR LF; the codec wants the line as sent
        line = ident_line if ident_line.endswith("\r\n") else ident_line + "\r\n"
        ident = iec.parse_identification(_latin1(line))
    meter_ref = body.get("meter") or {}
    flag = meter_ref.get("flag") or (ident.flag if ident else None)
    serial = meter_ref.get("serialNumber")
    if not serial:
        by_obis = {r.obis: r.value for r in registers}
        serial = next((by_obis[o] for o in SERIAL_REGISTERS if by_obis.get(o)), None)
    if not flag or not serial:
        raise DecodeError("cannot tell which meter this readout is from (no flag/serial)")
    if ident and meter_ref.get("flag") and ident.flag.upper() != meter_ref["flag"].upper():
        raise DecodeError(f"identification flag {ident.flag} does not match meter flag {meter_ref['flag']}")
    read_at = parse_device_time(body.get("readDate"), body.get("timezone")) or received_at
    return MeterReading(
        flag=flag.upper(),
        serial=str(serial),
        ident=ident_line,
        registers=registers,
        read_at=read_at,
        packet_class=body.get("packetClass"),
        profile=profile,
    )


def iec_profile_rows(raw_data: str) -> list[dict[str, Any]]:
    """Load-profile rows of an IEC 62056-21 ``R5 P.0x`` answer (AMR-5): one per period, with the meter's local
    time as printed, its status and the channel values; [] when the answer holds no profile."""
    if "P.0" not in raw_data:
        return []
    rows: list[dict[str, Any]] = []
    frames = split_frames(_latin1(raw_data)) if raw_data.startswith("\x02") else [_latin1(raw_data)]
    for frame in frames:
        if b"P.0" not in frame:
            continue
        for block in iec.parse_load_profile(frame).blocks:
            for when, row in block.entries():
                rows.append({"profile": f"P.{block.profile:02d}",
                             "time": when.strftime("%Y-%m-%dT%H:%M"), "status": block.status,
                             "values": {obis: {"value": v.value, "unit": unit}
                                        for (obis, unit), v in zip(block.channels, row, strict=True)}})
    return rows


def _latin1(text: str) -> bytes:
    """IEC 62056-21 frames travel as 8-bit text; a character outside latin-1 cannot have come off the wire."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise DecodeError(f"character {text[exc.start]!r} cannot be part of a meter frame", exc.start) from None


def interpret(
    payload: bytes, topic: str, topics: mass.Topics, received_at: datetime, *, future_skew_s: float = 600.0
) -> Interpretation:
    """Validate format, identity and integrity of one uplink message (HES-6) and say what it carries.
    Never raises: input that trips an unforeseen path is still an invalid message (logged, acknowledged), so a
    poison message can never hold a worker on an unacknowledged delivery. A read dated more than
    ``future_skew_s`` after its arrival is flagged ``future-date`` (ingest never makes it the latest value)."""
    if len(payload) > mass.MAX_PAYLOAD:
        return oversized(len(payload), hashlib.sha256(payload).hexdigest())
    try:
        return _interpret(payload, topic, topics, received_at, future_skew_s)
    except Exception as exc:  # a parser bug must not become a stuck queue; the raw bytes are kept for re-parsing
        log.exception("interpreting a message from %s failed unexpectedly", topic)
        return invalid(payload, f"internal: {exc.__class__.__name__}: {exc}")


def _interpret(
    payload: bytes, topic: str, topics: mass.Topics, received_at: datetime, future_skew_s: float
) -> Interpretation:
    try:
        message = mass.decode(payload)
    except mass.MassError as exc:
        return invalid(payload, f"format: {exc}")
    legacy = topics.is_legacy(topic)
    topic_device = topics.device_from_topic(topic)
    if topic_device is None and not legacy:
        return invalid(payload, f"identity: {topic} is not a device topic", status="rejected", message=message)
    if topic_device is not None and topic_device != message.device:
        return invalid(
            payload,
            f"identity: topic belongs to {topic_device.key} but the message says {message.device.key}",
            status="rejected",
            message=message,
        )
    if message.is_request:
        return invalid(payload, "format: a device sent a request, only responses go uplink", message=message)

    if message.function == "read" and not message.is_fail:
        try:
            reading = _meter_from_read(message, received_at)
        except DecodeError as exc:
            kind = "integrity" if isinstance(exc, iec.BCCError) else "format"
            return invalid(payload, f"{kind}: {exc}", message=message)
        flags = []
        if reading.read_at is not None and reading.read_at > received_at + timedelta(seconds=future_skew_s):
            flags.append("future-date")
        return Interpretation("ok", dedup_key(message, reading.serial, legacy=legacy), message=message,
                              reading=reading, flags=flags)

    part = ""
    if message.function == "read" and isinstance(message.body, dict):
        part = str((message.body.get("meter") or {}).get("serialNumber") or "")
    return Interpretation("ok", dedup_key(message, part, legacy=legacy), message=message)


def summary(reading: MeterReading) -> dict[str, Any]:
    """The part of a read that an order's result shows."""
    out: dict[str, Any] = {
        "meter": {"flag": reading.flag, "serial": reading.serial},
        "registers": {r.obis: {"value": r.value, "unit": r.unit} for r in reading.registers},
    }
    if reading.protocol != "iec62056-21":
        out["protocol"] = reading.protocol
    if reading.profile:
        out["profile"] = reading.profile
    return out
