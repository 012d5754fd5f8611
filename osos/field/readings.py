"""Turn a directive run into the MASS ``read`` answer body (HES-47: meter identity plus the data as read).

Kept apart from the MQTT glue so the exact packet a gateway sends is testable without a broker. The raw
text goes out untouched (HES-5) next to the parsed values; ``bccOk`` says whether every frame's block check
character matched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from osos.field.directives import RunResult
from osos.protocols import iec62056_21 as iec

SECRET_PARAMS = frozenset({"password", "ek", "ak"})  # never echoed uplink
BINARY_KINDS = {"dlms": "dlms", "modbus": "modbus", "mbus": "mbus"}  # output kind -> data.protocol


def split_frames(data: bytes) -> list[bytes]:
    """STX/SOH ... ETX/EOT BCC frames (and lone ACK/NAK bytes) of a receive buffer, in order."""
    frames, i, n = [], 0, len(data)
    while i < n:
        if data[i] in (0x06, 0x15):
            frames.append(data[i : i + 1])
            i += 1
            continue
        end = next((j for j in range(i + 1, n) if data[j] in (0x03, 0x04)), None)
        if end is None or end + 1 >= n:
            frames.append(data[i:])
            break
        frames.append(data[i : end + 2])
        i = end + 2
    return frames


def bcc_ok(data: bytes) -> bool:
    frames = [f for f in split_frames(data) if len(f) > 1]
    return bool(frames) and all(f[-2] in (0x03, 0x04) and iec.bcc(f[:-1]) == f[-1] for f in frames)


def _value(line: iec.DataLine) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": line.values[0].value, "unit": line.values[0].unit}
    if len(line.values) > 1:
        entry["values"] = [{"value": v.value, "unit": v.unit} for v in line.values]
        if len(line.values) == 2 and line.values[1].unit is None:
            entry["timestamp"] = line.values[1].value
    return entry


def parse_values(kind: str, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(register values by OBIS, load-profile rows) from the raw answer; malformed parts raise IECError."""
    values: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    if kind == "readout":
        block = iec.parse_data_block(raw, verify_bcc=False)
        for line in block.lines:
            if line.address and line.address not in values:
                values[line.address] = _value(line)
    elif kind == "messages":
        for frame in split_frames(raw):
            if not frame.startswith(iec.STX):
                continue
            msg = iec.parse_data_message(frame, verify_bcc=False)
            if msg.error:
                continue
            for line in msg.lines:
                if line.address and line.address not in values:
                    values[line.address] = _value(line)
    elif kind == "load_profile":
        profile = iec.parse_load_profile(raw, verify_bcc=False)
        for block in profile.blocks:
            for when, row in block.entries():
                rows.append(
                    {
                        "time": when.strftime("%Y-%m-%d %H:%M"),
                        "status": block.status,
                        "values": {obis: {"value": v.value, "unit": unit}
                                   for (obis, unit), v in zip(block.channels, row, strict=True)},
                    }
                )
    return values, rows


def read_response(
    *,
    meter: dict[str, str],
    directive: dict[str, Any],
    result: RunResult,
    read_date: datetime,
    packet_class: str | None = None,
    push: bool = False,
) -> dict[str, Any]:
    """The ``response`` body of one meter's read answer."""
    output = directive.get("output", {})
    kind = output.get("kind", "readout")
    if kind in BINARY_KINDS:
        return _binary_response(meter=meter, directive=directive, result=result, read_date=read_date,
                                packet_class=packet_class, push=push)
    ident = result.buffers.get(output.get("id", "ident"), b"")
    raw = result.buffers.get(output.get("rawData", "data"), b"")
    body: dict[str, Any] = {
        "readDate": read_date.strftime("%Y-%m-%d %H:%M:%S"),
        "timezone": "+00:00",
        "meter": meter,
        "packetClass": packet_class or directive.get("packetClass", "longRead"),
        "directive": directive["name"],
        "data": {"id": ident.decode("latin-1").rstrip("\r\n"), "rawData": raw.decode("latin-1")},
        "params": {k: v for k, v in result.captured.items() if k not in SECRET_PARAMS},
        "bytesIn": result.bytes_in,
        "bytesOut": result.bytes_out,
        "durationMs": int(result.duration_s * 1000),
    }
    try:
        values, rows = parse_values(kind, raw) if raw and kind != "none" else ({}, [])
        body["values"] = values
        if rows:
            body["profile"] = rows
    except iec.IECError as exc:
        body["values"] = {}
        body["parseError"] = str(exc)
    body["bccOk"] = bcc_ok(raw) if raw and kind != "none" else True
    if push:
        body["push"] = True
    return body


def _binary_response(
    *,
    meter: dict[str, str],
    directive: dict[str, Any],
    result: RunResult,
    read_date: datetime,
    packet_class: str | None,
    push: bool,
) -> dict[str, Any]:
    """DLMS/Modbus/M-Bus answers (HES-40): the bytes as read in hex, the records that say what each slice is,
    and the gateway's own parse in ``values`` (the head-end decodes ``rawHex`` itself)."""
    from osos.protocols.meter_answers import AnswerError, decode_answer

    protocol = BINARY_KINDS[directive.get("output", {}).get("kind")]
    raw = result.buffers.get(directive.get("output", {}).get("rawData", "data"), b"")
    records = [dict(r) for r in result.records]
    body: dict[str, Any] = {
        "readDate": read_date.strftime("%Y-%m-%d %H:%M:%S"),
        "timezone": "+00:00",
        "meter": meter,
        "packetClass": packet_class or directive.get("packetClass", "longRead"),
        "directive": directive["name"],
        "data": {"id": "", "protocol": protocol, "rawHex": raw.hex(), "records": records},
        "params": {k: v for k, v in result.captured.items() if k not in SECRET_PARAMS},
        "bytesIn": result.bytes_in,
        "bytesOut": result.bytes_out,
        "durationMs": int(result.duration_s * 1000),
        "values": {},
    }
    if records:
        try:
            decoded = decode_answer(protocol, raw.hex(), records)
            body["values"] = {v.name: {"value": v.value, "unit": v.unit} for v in decoded.values}
            if decoded.profile:
                body["profile"] = decoded.profile
        except AnswerError as exc:
            body["parseError"] = str(exc)
    if push:
        body["push"] = True
    return body
