"""Decode the binary part of a read answer (HES-5, HES-40): ``data.rawHex`` plus ``data.records``.

A gateway that reads a DLMS, Modbus or M-Bus meter sends the bytes exactly as they came (``rawHex``) and a list
of records that say what each slice is (``offset``/``length`` into the bytes, plus the COSEM reference, the
Modbus request, or nothing for an M-Bus long frame). This module turns that into registers. The head-end runs
it on what it received and trusts its own result, not the gateway's ``values``. Pure: no I/O, no clock.

Register names: DLMS registers by their OBIS code ``A.B.C.D.E.F``; Modbus registers by the register map's name
(``active_energy_import``); M-Bus records by ``<description>[.s<storage>][.t<tariff>]`` with the function when
it is not instantaneous.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from osos.protocols import dlms as D
from osos.protocols.errors import DecodeError


class AnswerError(DecodeError):
    """The raw bytes or their records do not fit together (bad hex, slice outside, undecodable data)."""


@dataclass(frozen=True)
class Value:
    name: str
    value: str
    unit: str | None
    extra: list[dict[str, str | None]] | None = None


@dataclass
class Decoded:
    values: list[Value]
    profile: list[dict[str, Any]]


def _raw(raw_hex: Any) -> bytes:
    if not isinstance(raw_hex, str):
        raise AnswerError("rawHex must be a hex string", 0)
    try:
        return bytes.fromhex(raw_hex)
    except ValueError:
        raise AnswerError("rawHex is not hexadecimal", 0) from None


def _slices(raw: bytes, records: Any) -> list[tuple[dict[str, Any], bytes]]:
    if not isinstance(records, list) or not records:
        raise AnswerError("records must be a non-empty list", 0)
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise AnswerError(f"record {i} is not an object", i)
        offset, length = rec.get("offset"), rec.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0 \
                or offset + length > len(raw):
            raise AnswerError(f"record {i}: offset/length outside the {len(raw)} raw bytes", i)
        out.append((rec, raw[offset: offset + length]))
    return out


def _text(value: Any) -> str:
    """Exact text of a value: Decimals in plain notation (``50``, never ``5E+1``)."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def dotted(obis: str) -> str:
    """Any OBIS notation -> ``A.B.C.D.E.F``."""
    try:
        return ".".join(str(b) for b in D.obis_bytes(obis))
    except (ValueError, D.DLMSError) as exc:
        raise AnswerError(f"bad OBIS code {obis!r}: {exc}", 0) from None


def _plain(d: D.Data) -> str:
    if d.type is D.DataType.OCTET_STRING and len(d.value) == 12:
        try:
            return D.data_datetime(d).isoformat()
        except D.DLMSError:
            pass
    if d.type is D.DataType.OCTET_STRING:
        return bytes(d.value).hex()
    if d.type in (D.DataType.ARRAY, D.DataType.STRUCTURE):
        return "[" + ",".join(_plain(i) for i in d.value) + "]"
    return str(d.value)


def _scaler_unit(d: D.Data, what: str) -> tuple[int, str | None]:
    try:
        scaler, unit = d.items
        return int(scaler.value), D.UNITS.get(int(unit.value), str(unit.value))
    except (TypeError, ValueError, AttributeError):
        raise AnswerError(f"{what}: attribute 3 is not a scaler_unit structure", 0) from None


def _number(value: D.Data, scale: tuple[int, str | None] | None) -> tuple[str, str | None]:
    if scale is None or not isinstance(value.value, int) or isinstance(value.value, bool):
        return _plain(value), None
    return _text(D.scaled(value.value, scale[0])), scale[1]


def decode_dlms(raw_hex: Any, records: Any) -> Decoded:
    """Registers (class 1/3/4/8/70) and profile rows (class 7) from A-XDR attribute values."""
    got: dict[tuple[int, str, int], D.Data] = {}
    order: list[tuple[int, str]] = []
    for rec, part in _slices(_raw(raw_hex), records):
        try:
            key = (int(rec["class"]), dotted(str(rec["obis"])), int(rec["attr"]))
        except (KeyError, TypeError, ValueError):
            raise AnswerError(f"DLMS record {rec!r} needs class, obis and attr", 0) from None
        got[key] = D.decode_data_exact(part)
        if key[:2] not in order:
            order.append(key[:2])
    values: list[Value] = []
    rows: list[dict[str, Any]] = []
    for class_id, obis in order:
        attr2 = got.get((class_id, obis, 2))
        if class_id == 7:
            if attr2 is not None:
                rows.extend(_profile_rows(obis, attr2, got.get((7, obis, 3)), got))
            continue
        if attr2 is None:
            continue
        if class_id in (3, 4):
            attr3 = got.get((class_id, obis, 3))
            value, unit = _number(attr2, _scaler_unit(attr3, obis) if attr3 is not None else None)
            values.append(Value(obis, value, unit))
        elif class_id == 70:
            state = got.get((70, obis, 3))
            extra = [{"value": str(state.value), "unit": "control_state"}] if state is not None else None
            values.append(Value(obis, "connected" if attr2.value else "disconnected", None, extra))
        else:
            values.append(Value(obis, _plain(attr2), None))
    return Decoded(values, rows)


def _profile_rows(obis: str, buffer: D.Data, columns: D.Data | None,
                  got: dict[tuple[int, str, int], D.Data]) -> list[dict[str, Any]]:
    """Rows of a profile generic buffer; a class 3/4 column is scaled with its own attribute 3 when read."""
    names: list[tuple[int, str]] = []
    if columns is not None:
        for col in columns.items:
            try:
                code = bytes(col.items[1].value)
                if len(code) != 6:
                    raise ValueError(code)
                names.append((int(col.items[0].value), ".".join(str(b) for b in code)))
            except (AttributeError, IndexError, TypeError, ValueError):
                raise AnswerError(f"profile {obis}: capture objects are not (class, obis, attr, index)", 0) from None
    rows = []
    for row in buffer.items or []:
        cells = row.items or []
        entry: dict[str, Any] = {"profile": obis, "values": {}}
        for i, cell in enumerate(cells):
            class_id, name = names[i] if i < len(names) else (0, f"column{i}")
            if class_id == 8:
                entry["time"] = _plain(cell)
                continue
            scale_data = got.get((class_id, name, 3)) if class_id in (3, 4) else None
            scale = _scaler_unit(scale_data, name) if scale_data is not None else None
            value, unit = _number(cell, scale)
            entry["values"][name] = {"value": value, "unit": unit}
        rows.append(entry)
    return rows


def decode_modbus(raw_hex: Any, records: Any) -> Decoded:
    """Register values by map name from the words of each request (big-endian, as on the wire)."""
    from osos.protocols import modbus as M

    words: dict[int, int] = {}
    regmap = None
    for rec, part in _slices(_raw(raw_hex), records):
        name, reference = rec.get("map"), rec.get("reference")
        if not isinstance(name, str) or not isinstance(reference, int) or len(part) % 2:
            raise AnswerError(f"Modbus record {rec!r} needs map, reference and whole words", 0)
        if regmap is None:
            if name not in M.available_maps():
                raise AnswerError(f"unknown register map {name!r}", 0)
            regmap = M.load_map(name)
        elif regmap.name != name:
            raise AnswerError("one answer mixes register maps", 0)
        for i in range(0, len(part), 2):
            words[reference + i // 2] = int.from_bytes(part[i: i + 2], "big")
    assert regmap is not None
    decoded, _errors = M.decode_words(regmap, words)
    units = {r.name: r.unit or None for r in regmap.registers}
    return Decoded([Value(k, _text(v), units.get(k)) for k, v in decoded.items()], [])


def decode_mbus(raw_hex: Any, records: Any) -> Decoded:
    """Data records of each long frame (EN 13757-3), named by description, storage and tariff."""
    from osos.protocols import mbus

    values: list[Value] = []
    seen: set[str] = set()
    for _rec, part in _slices(_raw(raw_hex), records):
        telegram = mbus.decode(part)
        for record in telegram.records:
            if record.function == "more_records" or record.value is None:
                continue
            name = str(record.description or record.vif_hex)
            if record.storage:
                name += f".s{record.storage}"
            if record.tariff:
                name += f".t{record.tariff}"
            if record.function not in ("instantaneous", None):
                name += f".{record.function}"
            if name in seen:
                continue
            seen.add(name)
            values.append(Value(name, _text(record.value), record.unit))
    return Decoded(values, [])


DECODERS = {"dlms": decode_dlms, "modbus": decode_modbus, "mbus": decode_mbus}


def decode_answer(protocol: Any, raw_hex: Any, records: Any) -> Decoded:
    """Dispatch on ``data.protocol``; an unknown protocol is an AnswerError naming it."""
    decoder = DECODERS.get(protocol) if isinstance(protocol, str) else None
    if decoder is None:
        raise AnswerError(f"unknown protocol {protocol!r} (known: iec62056-21, {', '.join(DECODERS)})", 0)
    try:
        return decoder(raw_hex, records)
    except AnswerError:
        raise
    except DecodeError as exc:
        raise AnswerError(f"{protocol}: {exc}", getattr(exc, "position", 0)) from None
