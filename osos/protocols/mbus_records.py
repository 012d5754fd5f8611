"""EN 13757-3 application-layer data records (DIB/VIB/data), shared by wired M-Bus and wM-Bus.

Own decoder rather than a library's: the head-end needs every record exactly (DIF/DIFE storage,
tariff, sub-unit; VIF/VIFE incl. FDh/FBh tables, plain-text and manufacturer VIFs; corrections),
values as int/Decimal, and a clear error with a byte position on malformed input. See docs/mbus.md.
Pure: bytes in, dataclasses out (covers HES-40, HES-38).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from decimal import Context, Decimal

from osos.protocols.errors import DecodeError
from osos.protocols.mbus_tables import VifInfo, tables

MAX_DIFE = 10  # EN 13757-3 allows at most 10 DIFEs and 10 VIFEs per record
MAX_VIFE = 10

# exact arithmetic for scaling: float32 values expand to at most ~150 significant digits
_EXACT = Context(prec=400)

FUNCTIONS = ("instantaneous", "maximum", "minimum", "error")
_FIXED_LENGTH = {0x0: 0, 0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x5: 4, 0x6: 6, 0x7: 8,
                 0x8: 0, 0x9: 1, 0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}


class MBusError(DecodeError):
    """Malformed M-Bus / wM-Bus input (or a meter-reported application error)."""


@dataclass(frozen=True)
class Record:
    """One decoded data record. ``value`` is exact: int/Decimal for numbers, str for dates and
    texts (dates as ISO ``YYYY-MM-DD[THH:MM:SS]`` in meter time), hex for binary, None if absent."""

    index: int
    function: str  # instantaneous|maximum|minimum|error|manufacturer|more_records
    storage: int
    tariff: int
    subunit: int
    dif: int
    dife: tuple[int, ...]
    vif: int | None
    vife: tuple[int, ...]
    quantity: str
    unit: str
    value: int | Decimal | str | None
    data_type: str  # int|bcd|real|date|datetime|text|binary|none|manufacturer
    raw: bytes
    position: int
    notes: tuple[str, ...] = field(default=())

    @property
    def vif_hex(self) -> str:
        """DIF..VIFE header bytes as hex, e.g. ``04 13`` -> the VIB part ``13``."""
        parts = [] if self.vif is None else [self.vif, *self.vife]
        return bytes(parts).hex().upper()

    @property
    def description(self) -> str:
        return "; ".join((self.quantity, *self.notes)) if self.notes else self.quantity


def _extensions(data: bytes, i: int, n: int, base: int, first: int, limit: int, what: str) -> tuple[list[int], int]:
    """The DIFE/VIFE bytes that follow ``first`` while bit 7 says "another follows"; returns them and the index
    after the last one."""
    out: list[int] = []
    extended = bool(first & 0x80)
    while extended:
        if i >= n:
            raise MBusError(f"premature end of record in {what}", base + i)
        if len(out) >= limit:
            raise MBusError(f"too many {what}s (more than {limit})", base + i)
        out.append(data[i])
        extended = bool(data[i] & 0x80)
        i += 1
    return out, i


def bcd_value(raw: bytes) -> int | None:
    """Type A BCD, least significant byte first; Fh in the top nibble means negative.
    Returns None if any other digit is not decimal (meters use that for "no value")."""
    digits = raw[::-1].hex()
    sign = 1
    if digits and digits[0] == "f":
        sign, digits = -1, "0" + digits[1:]
    if not digits or not digits.isdigit():
        return None
    return sign * int(digits)


def _type_g(raw: bytes) -> str:
    day = raw[0] & 0x1F
    month = raw[1] & 0x0F
    year = ((raw[0] & 0xE0) >> 5) | ((raw[1] & 0xF0) >> 1)
    return f"{2000 + year:04d}-{month:02d}-{day:02d}"


def _type_f(raw: bytes) -> str | None:
    if raw[0] & 0x80:  # IV: time invalid
        return None
    minute = raw[0] & 0x3F
    hour = raw[1] & 0x1F
    day = raw[2] & 0x1F
    month = raw[3] & 0x0F
    year = ((raw[2] & 0xE0) >> 5) | ((raw[3] & 0xF0) >> 1)
    century = (raw[1] & 0x60) >> 5
    if century == 0 and year <= 80:  # two-digit years of older meters
        century = 1
    return f"{1900 + 100 * century + year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:00"


def _type_i(raw: bytes) -> str | None:
    if raw[1] & 0x80:
        return None
    second = raw[0] & 0x3F
    minute = raw[1] & 0x3F
    hour = raw[2] & 0x1F
    day = raw[3] & 0x1F
    month = raw[4] & 0x0F
    year = ((raw[3] & 0xE0) >> 5) | ((raw[4] & 0xF0) >> 1)
    return f"{2000 + year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def _lvar_length(lvar: int, position: int) -> tuple[int, str]:
    """Data length and coding of a variable-length (DIF xDh) record, EN 13757-3 table 5."""
    if lvar <= 0xBF:
        return lvar, "text"
    if 0xC0 <= lvar <= 0xC9:
        return lvar - 0xC0, "bcd+"
    if 0xD0 <= lvar <= 0xD9:
        return lvar - 0xD0, "bcd-"
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0, "binary"
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC), "binary"
    if lvar == 0xF5:
        return 48, "binary"
    if lvar == 0xF6:
        return 64, "binary"
    raise MBusError(f"reserved LVAR 0x{lvar:02X} in variable-length record", position)


@dataclass(frozen=True)
class _Vib:
    info: VifInfo
    corrections: tuple[tuple[str, Decimal], ...]
    notes: tuple[str, ...]
    manufacturer: bool


def _interpret_vib(vif: int, vifes: list[int], text_unit: str | None) -> _Vib:
    t = tables()
    base = vif & 0x7F
    rest: list[int]
    manufacturer = False
    notes_prefix: list[str] = []
    if vif in (0xFD, 0xFB):
        table = t.fd if vif == 0xFD else t.fb
        code = vifes[0] & 0x7F
        name = "FDh" if vif == 0xFD else "FBh"
        info = table.get(code, VifInfo("Reserved", "Reserved", Decimal(1)))
        if code not in table:
            notes_prefix = [f"{name} VIFE 0x{code:02X}"]
        rest = vifes[1:]
    elif base == 0x7C:
        info = VifInfo(text_unit or "", "-", Decimal(1))
        rest = vifes
    elif base == 0x7F:
        info = t.primary[0x7F]
        return _Vib(info, (), (), True)
    elif base in (0x7B, 0x7D):  # extension markers without their extension bit
        info = VifInfo("Reserved", "Reserved", Decimal(1))
        notes_prefix = [f"VIF 0x{vif:02X}"]
        rest = vifes
    else:
        info = t.primary[base]
        rest = vifes
    corrections: list[tuple[str, Decimal]] = []
    notes: list[str] = list(notes_prefix)
    for v in rest:
        code = v & 0x7F
        if code == 0x7F:  # manufacturer-specific VIFEs follow: not ours to interpret
            manufacturer = True
            notes.append("manufacturer specific VIFE")
            break
        if 0x70 <= code <= 0x77:
            corrections.append(("mul", Decimal(1).scaleb((code & 0x07) - 6)))
        elif 0x78 <= code <= 0x7B:
            corrections.append(("add", Decimal(1).scaleb((code & 0x03) - 3)))
        elif code == 0x7D:
            corrections.append(("mul", Decimal(1000)))
        else:
            notes.append(t.combinable.get(code, f"VIFE 0x{code:02X}"))
    return _Vib(info, tuple(corrections), tuple(notes), manufacturer)


def _number(raw_value: int | Decimal, vib: _Vib) -> Decimal | int:
    value = _EXACT.multiply(Decimal(raw_value), vib.info.factor)
    for op, amount in vib.corrections:
        value = _EXACT.multiply(value, amount) if op == "mul" else _EXACT.add(value, amount)
    if value == value.to_integral_value():
        return int(value)
    return value.normalize(_EXACT)


def _decode_value(coding: int, raw: bytes, lvar_kind: str | None, vib: _Vib) -> tuple[int | Decimal | str | None, str]:
    kind = vib.info.kind
    if coding in (0x0, 0x8):
        return None, "none"
    if coding == 0xD:
        if lvar_kind == "text" and vib.info.quantity == "Manufacturer specific":
            return raw[::-1].hex().upper(), "binary"  # proprietary bytes, not text
        if lvar_kind == "text":
            return raw[::-1].decode("latin-1"), "text"
        if lvar_kind in ("bcd+", "bcd-"):
            bcd = bcd_value(raw)
            if bcd is None:
                return raw[::-1].hex().upper(), "binary"
            return _number(-bcd if lvar_kind == "bcd-" else bcd, vib), "bcd"
        return raw[::-1].hex().upper(), "binary"
    if coding == 0x5:
        (real,) = struct.unpack("<f", raw)
        if real != real or real in (float("inf"), float("-inf")):
            return None, "real"
        return _number(Decimal(real), vib), "real"  # Decimal(float) is exact
    if coding in (0x9, 0xA, 0xB, 0xC, 0xE):
        bcd = bcd_value(raw)
        if bcd is None:
            return raw[::-1].hex().upper(), "binary"
        return _number(bcd, vib), "bcd"
    # integers (type B, signed) or compound date/time types
    if kind == "date" and len(raw) == 2:
        return _type_g(raw), "date"
    if kind == "datetime" and len(raw) == 4:
        return _type_f(raw), "datetime"
    if kind == "datetime" and len(raw) == 6:
        return _type_i(raw), "datetime"
    return _number(int.from_bytes(raw, "little", signed=True), vib), "int"


def decode_records(data: bytes, base: int = 0) -> tuple[list[Record], bool]:
    """Decode all records of an application-layer payload.

    ``base`` is the payload's offset in the whole frame so error positions point into the frame.
    Returns the records and whether the meter signalled "more records follow" (DIF 1Fh).
    """
    records: list[Record] = []
    more = False
    n = len(data)
    i = 0
    while i < n:
        start = i
        dif = data[i]
        if dif == 0x2F:  # idle filler
            i += 1
            continue
        if dif in (0x0F, 0x1F):
            more = dif == 0x1F
            raw = bytes(data[i + 1 :])
            records.append(Record(
                index=len(records), function="more_records" if more else "manufacturer", storage=0,
                tariff=0, subunit=0, dif=dif, dife=(), vif=None, vife=(),
                quantity="Manufacturer specific", unit="", value=raw.hex().upper(),
                data_type="manufacturer", raw=raw, position=base + start,
            ))
            break
        if dif & 0x0F == 0x0F:
            raise MBusError(f"reserved special-function DIF 0x{dif:02X}", base + i)
        i += 1
        difes, i = _extensions(data, i, n, base, dif, MAX_DIFE, "DIFE")
        if i >= n:
            raise MBusError("premature end of record: VIF missing", base + i)
        vif = data[i]
        i += 1
        text_unit = None
        if vif & 0x7F == 0x7C:
            if i >= n:
                raise MBusError("premature end of record in plain-text VIF length", base + i)
            length = data[i]
            i += 1
            if i + length > n:
                raise MBusError(f"plain-text VIF of {length} bytes runs past the end", base + i)
            text_unit = bytes(data[i : i + length])[::-1].decode("latin-1")
            i += length
        vifes, i = _extensions(data, i, n, base, vif, MAX_VIFE, "VIFE")
        coding = dif & 0x0F
        lvar_kind = None
        if coding == 0xD:
            if i >= n:
                raise MBusError("premature end of record: LVAR missing", base + i)
            length, lvar_kind = _lvar_length(data[i], base + i)
            i += 1
        else:
            length = _FIXED_LENGTH[coding]
        if i + length > n:
            raise MBusError(f"premature end of data: record needs {length} bytes, {n - i} left", base + i)
        raw = bytes(data[i : i + length])
        i += length
        vib = _interpret_vib(vif, vifes, text_unit)
        value, data_type = _decode_value(coding, raw, lvar_kind, vib)
        storage = (dif >> 6) & 0x01
        tariff = subunit = 0
        for k, dife in enumerate(difes):
            storage |= (dife & 0x0F) << (1 + 4 * k)
            tariff |= ((dife >> 4) & 0x03) << (2 * k)
            subunit |= ((dife >> 6) & 0x01) << k
        records.append(Record(
            index=len(records), function=FUNCTIONS[(dif >> 4) & 0x03], storage=storage, tariff=tariff,
            subunit=subunit, dif=dif, dife=tuple(difes), vif=vif, vife=tuple(vifes),
            quantity=vib.info.quantity, unit=vib.info.unit, value=value, data_type=data_type,
            raw=raw, position=base + start, notes=vib.notes,
        ))
    return records, more


def record_to_json(record: Record) -> dict:
    """The JSON shape `osos decode` prints for one record (values as exact strings)."""
    value = record.value
    return {
        "value": None if value is None else str(value),
        "unit": record.unit,
        "function": record.function,
        "storage": record.storage,
        "tariff": record.tariff,
        "subunit": record.subunit,
        "vif": record.vif_hex,
        "description": record.description,
        "type": record.data_type,
    }
