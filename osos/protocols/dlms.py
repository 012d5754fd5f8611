"""DLMS/COSEM codec: A-XDR data, xDLMS APDUs, the TCP wrapper and suite-0 ciphering (HES-40).

Pure code: bytes in, typed values out, no I/O and no clock. It is an adapter over dlms-cosem 21.3.2
(MIT, the last release before the licence became BSL 1.1):

* the library does the ACSE layer (AARQ/AARE/RLRQ/RLRE in BER, InitiateRequest/Response, conformance
  block) and the AES-GCM primitives (`dlms_cosem.security.encrypt/decrypt/gmac`);
* the A-XDR ``Data`` codec and the GET/SET/ACTION/notification APDUs are written here, because the
  library's versions are client-only (they encode requests and decode responses, not the reverse a
  meter needs), do not bound-check (a truncated buffer is silently accepted) and several encoders
  fail on real values (arrays, strings and ciphered APDUs longer than 255 bytes, booleans,
  date-time). A meter simulator and a fuzz-safe decoder need both directions and strict checks.

Every bad input raises :class:`DLMSError` (a :class:`DecodeError`) with the byte position.
References: IEC 62056-5-3 / DLMS UA Green Book (xDLMS APDUs, A-XDR, security suite 0),
IEC 62056-6-2 / Blue Book (COSEM data types, date-time, units), IEC 62056-47 (wrapper).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum
from typing import Any

from osos.protocols.errors import DecodeError


class DLMSError(DecodeError):
    """Malformed, truncated or unauthenticated DLMS input."""


# --------------------------------------------------------------------------------------------
# A-XDR data (Blue Book 4.1.5)


class DataType(IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


# fixed-size integer types: (byte count, signed)
_INT_TYPES: dict[DataType, tuple[int, bool]] = {
    DataType.DOUBLE_LONG: (4, True),
    DataType.DOUBLE_LONG_UNSIGNED: (4, False),
    DataType.INTEGER: (1, True),
    DataType.LONG: (2, True),
    DataType.UNSIGNED: (1, False),
    DataType.LONG_UNSIGNED: (2, False),
    DataType.LONG64: (8, True),
    DataType.LONG64_UNSIGNED: (8, False),
    DataType.ENUM: (1, False),
    DataType.BCD: (1, True),
}
# fixed-size octet types, kept as raw bytes (floats are never turned into Python floats)
_FIXED_OCTETS: dict[DataType, int] = {
    DataType.FLOAT32: 4,
    DataType.FLOAT64: 8,
    DataType.DATE_TIME: 12,
    DataType.DATE: 5,
    DataType.TIME: 4,
}
MAX_DEPTH = 32


@dataclass(frozen=True)
class Data:
    """One A-XDR value. ``value`` is int, bool, bytes, str (visible/utf8 string; bit string as
    '0'/'1' characters), a tuple of Data (array, structure) or None."""

    type: DataType
    value: Any = None

    def __post_init__(self) -> None:
        t = self.type
        if t in _INT_TYPES:
            size, signed = _INT_TYPES[t]
            if not isinstance(self.value, int) or isinstance(self.value, bool):
                raise TypeError(f"{t.name} needs an int")
            lo, hi = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, (1 << 8 * size) - 1)
            if not lo <= self.value <= hi:
                raise ValueError(f"{self.value} does not fit {t.name}")
        elif t in (DataType.ARRAY, DataType.STRUCTURE):
            if not isinstance(self.value, tuple) or not all(isinstance(v, Data) for v in self.value):
                raise TypeError(f"{t.name} needs a tuple of Data")
        elif t in _FIXED_OCTETS:
            if not isinstance(self.value, bytes) or len(self.value) != _FIXED_OCTETS[t]:
                raise ValueError(f"{t.name} needs {_FIXED_OCTETS[t]} bytes")
        elif t is DataType.OCTET_STRING:
            if not isinstance(self.value, bytes):
                raise TypeError("octet-string needs bytes")
        elif t in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
            if not isinstance(self.value, str):
                raise TypeError(f"{t.name} needs a str")
        elif t is DataType.BIT_STRING:
            if not isinstance(self.value, str) or set(self.value) - {"0", "1"}:
                raise TypeError("bit-string needs a str of 0/1")
        elif t is DataType.BOOLEAN and not isinstance(self.value, bool):
            raise TypeError("boolean needs a bool")

    @property
    def items(self) -> tuple[Data, ...]:
        if self.type not in (DataType.ARRAY, DataType.STRUCTURE):
            raise TypeError(f"{self.type.name} has no items")
        return self.value  # type: ignore[no-any-return]


# short constructors, used by the meter and the client
def null() -> Data:
    return Data(DataType.NULL)


def boolean(v: bool) -> Data:
    return Data(DataType.BOOLEAN, v)


def u8(v: int) -> Data:
    return Data(DataType.UNSIGNED, v)


def i8(v: int) -> Data:
    return Data(DataType.INTEGER, v)


def u16(v: int) -> Data:
    return Data(DataType.LONG_UNSIGNED, v)


def i16(v: int) -> Data:
    return Data(DataType.LONG, v)


def u32(v: int) -> Data:
    return Data(DataType.DOUBLE_LONG_UNSIGNED, v)


def i32(v: int) -> Data:
    return Data(DataType.DOUBLE_LONG, v)


def enum(v: int) -> Data:
    return Data(DataType.ENUM, v)


def octets(v: bytes) -> Data:
    return Data(DataType.OCTET_STRING, bytes(v))


def visible(v: str) -> Data:
    return Data(DataType.VISIBLE_STRING, v)


def struct_(*items: Data) -> Data:
    return Data(DataType.STRUCTURE, tuple(items))


def array(items: Iterable[Data]) -> Data:
    return Data(DataType.ARRAY, tuple(items))


def encode_length(n: int) -> bytes:
    """A-XDR length: one byte below 128, else 0x80|count followed by count big-endian bytes."""
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def decode_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise DLMSError("length expected, input ends", pos)
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4:
        raise DLMSError(f"unsupported length-of-length {count}", pos)
    if pos + 1 + count > len(buf):
        raise DLMSError("length field truncated", pos)
    return int.from_bytes(buf[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _take(buf: bytes, pos: int, n: int, what: str) -> tuple[bytes, int]:
    if n < 0 or pos + n > len(buf):
        raise DLMSError(f"{what}: needs {n} bytes, {max(len(buf) - pos, 0)} left", pos)
    return bytes(buf[pos : pos + n]), pos + n


def encode_data(d: Data) -> bytes:
    t = d.type
    out = bytearray([t])
    if t in (DataType.NULL, DataType.DONT_CARE):
        pass
    elif t in (DataType.ARRAY, DataType.STRUCTURE):
        out += encode_length(len(d.value))
        for item in d.value:
            out += encode_data(item)
    elif t is DataType.BOOLEAN:
        out.append(0xFF if d.value else 0x00)
    elif t is DataType.BIT_STRING:
        bits: str = d.value
        out += encode_length(len(bits))
        padded = bits + "0" * (-len(bits) % 8)
        out += bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    elif t in _INT_TYPES:
        size, signed = _INT_TYPES[t]
        out += d.value.to_bytes(size, "big", signed=signed)
    elif t in _FIXED_OCTETS:
        out += d.value
    elif t is DataType.OCTET_STRING:
        out += encode_length(len(d.value)) + d.value
    elif t in (DataType.VISIBLE_STRING, DataType.UTF8_STRING):
        raw = d.value.encode("ascii" if t is DataType.VISIBLE_STRING else "utf-8")
        out += encode_length(len(raw)) + raw
    else:  # pragma: no cover - every DataType is handled above
        raise ValueError(f"cannot encode {t!r}")
    return bytes(out)


_TYPE_BY_TAG = {int(t): t for t in DataType}
_NAME = {t: t.name.lower() for t in DataType}


def _fast(t: DataType, value: Any = None) -> Data:
    """Build a Data the decoder has already validated, skipping __post_init__ (hot path)."""
    d = object.__new__(Data)
    object.__setattr__(d, "type", t)
    object.__setattr__(d, "value", value)
    return d


def decode_data(buf: bytes, pos: int = 0, _depth: int = 0) -> tuple[Data, int]:
    """Decode one Data at ``pos``; returns it and the position after it."""
    if _depth > MAX_DEPTH:
        raise DLMSError("data nested too deeply", pos)
    if pos >= len(buf):
        raise DLMSError("data tag expected, input ends", pos)
    tag = buf[pos]
    found = _TYPE_BY_TAG.get(tag)
    if found is None:
        raise DLMSError(f"unknown data type tag {tag}", pos)
    t = found
    p = pos + 1
    if t in (DataType.NULL, DataType.DONT_CARE):
        return _fast(t), p
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        count, p = decode_length(buf, p)
        if count > len(buf) - p:  # every element needs at least its tag byte
            raise DLMSError(f"{_NAME[t]} of {count} elements cannot fit", pos)
        items = []
        for _ in range(count):
            item, p = decode_data(buf, p, _depth + 1)
            items.append(item)
        return _fast(t, tuple(items)), p
    if t is DataType.BOOLEAN:
        raw, p = _take(buf, p, 1, "boolean")
        return _fast(t, raw[0] != 0), p
    if t is DataType.BIT_STRING:
        nbits, p = decode_length(buf, p)
        raw, p = _take(buf, p, (nbits + 7) // 8, "bit-string")
        return _fast(t, "".join(f"{b:08b}" for b in raw)[:nbits]), p
    if t in _INT_TYPES:
        size, signed = _INT_TYPES[t]
        raw, p = _take(buf, p, size, _NAME[t])
        return _fast(t, int.from_bytes(raw, "big", signed=signed)), p
    if t in _FIXED_OCTETS:
        raw, p = _take(buf, p, _FIXED_OCTETS[t], _NAME[t])
        return _fast(t, raw), p
    n, p = decode_length(buf, p)
    raw, p = _take(buf, p, n, _NAME[t])
    if t is DataType.OCTET_STRING:
        return _fast(t, raw), p
    try:
        text = raw.decode("ascii" if t is DataType.VISIBLE_STRING else "utf-8")
    except UnicodeDecodeError:
        raise DLMSError(f"{_NAME[t]} is not valid text", pos) from None
    return _fast(t, text), p


def decode_data_exact(buf: bytes) -> Data:
    d, p = decode_data(buf, 0)
    if p != len(buf):
        raise DLMSError(f"{len(buf) - p} trailing bytes after data", p)
    return d


# --------------------------------------------------------------------------------------------
# OBIS codes, units, scalers


def obis_bytes(code: str | bytes) -> bytes:
    """'1.0.1.8.0.255', '1-0:1.8.0.255' or '1-0:1.8.0' (F = 255) -> 6 bytes."""
    if isinstance(code, bytes):
        if len(code) != 6:
            raise ValueError("an OBIS code is 6 bytes")
        return code
    text = code.replace("-", ".").replace(":", ".").replace("*", ".").replace("&", ".")
    parts = [p for p in text.split(".") if p != ""]
    if len(parts) == 5:
        parts.append("255")
    if len(parts) != 6:
        raise ValueError(f"not an OBIS code: {code!r}")
    values = [int(p) for p in parts]
    if any(not 0 <= v <= 255 for v in values):
        raise ValueError(f"OBIS group out of range: {code!r}")
    return bytes(values)


def obis_str(raw: bytes) -> str:
    """6 bytes -> 'A-B:C.D.E.F' (IEC 62056-61 notation)."""
    if len(raw) != 6:
        raise ValueError("an OBIS code is 6 bytes")
    a, b, c, d, e, f = raw
    return f"{a}-{b}:{c}.{d}.{e}.{f}"


# Blue Book unit enumeration (class 3 scaler_unit), the ones a head-end meets most
UNITS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency",
    11: "m", 12: "m/s", 13: "m3", 14: "m3", 15: "m3/h", 16: "m3/h", 17: "m3/d", 18: "m3/d",
    19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h", 27: "W",
    28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m",
    37: "F", 38: "Ω", 39: "Ωm2/m", 40: "Wb", 41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)",
    46: "1/(varh)", 47: "1/(VAh)", 48: "V2h", 49: "A2h", 50: "kg/s", 51: "S", 52: "K",
    53: "1/(V2h)", 54: "1/(A2h)", 55: "1/m3", 56: "%", 57: "Ah", 60: "Wh/m3", 61: "J/m3",
    62: "Mol %", 63: "g/m3", 64: "Pa s", 65: "J/kg", 70: "dBm", 71: "dBμV", 72: "dB", 254: "other",
    255: "count",
}


def scaled(value: int, scaler: int) -> Decimal:
    """value × 10^scaler, exactly."""
    return Decimal(value).scaleb(scaler)


# --------------------------------------------------------------------------------------------
# COSEM date-time (Blue Book 4.1.6.1): 12 octets; deviation = minutes from local time to UTC,
# i.e. UTC+03:00 is -180; 0x8000 = not specified.

DEVIATION_UNSPECIFIED = -0x8000


def datetime_to_octets(when: dt.datetime, clock_status: int = 0) -> bytes:
    if when.tzinfo is None:
        dev = DEVIATION_UNSPECIFIED
    else:
        off = when.utcoffset()
        assert off is not None
        dev = -int(off.total_seconds() // 60)
    return (
        when.year.to_bytes(2, "big")
        + bytes([when.month, when.day, when.isoweekday(), when.hour, when.minute, when.second,
                 when.microsecond // 10000])
        + dev.to_bytes(2, "big", signed=True)
        + bytes([clock_status])
    )


@dataclass(frozen=True)
class CosemDateTime:
    """A decoded date-time; fields that are 'not specified' (0xFF / 0xFFFF) are None."""

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None
    clock_status: int | None

    def to_datetime(self) -> dt.datetime:
        """A concrete datetime (aware when the deviation is given); DLMSError if wildcarded."""
        if None in (self.year, self.month, self.day, self.hour, self.minute):
            raise DLMSError("date-time has unspecified fields")
        if self.deviation is not None and not -720 <= self.deviation <= 720:
            raise DLMSError(f"date-time deviation {self.deviation} min is outside -720..720")
        tz = None if self.deviation is None else dt.timezone(dt.timedelta(minutes=-self.deviation))
        try:
            return dt.datetime(self.year, self.month, self.day, self.hour, self.minute,  # type: ignore[arg-type]
                               self.second or 0, (self.hundredths or 0) * 10000, tzinfo=tz)
        except ValueError as exc:
            raise DLMSError(f"invalid date-time: {exc}") from None

    def iso(self) -> str:
        try:
            return self.to_datetime().isoformat()
        except DLMSError:
            return "date-time with wildcards"


def octets_to_datetime(raw: bytes) -> CosemDateTime:
    if len(raw) != 12:
        raise DLMSError(f"date-time needs 12 bytes, got {len(raw)}")
    year = int.from_bytes(raw[0:2], "big")
    dev = int.from_bytes(raw[9:11], "big", signed=True)

    def spec(v: int, bad: Sequence[int] = (0xFF,)) -> int | None:
        return None if v in bad else v

    return CosemDateTime(
        year=None if year == 0xFFFF else year,
        month=spec(raw[2], (0xFF, 0xFD, 0xFE)),
        day=spec(raw[3], (0xFF, 0xFD, 0xFE)),
        weekday=spec(raw[4]),
        hour=spec(raw[5]),
        minute=spec(raw[6]),
        second=spec(raw[7]),
        hundredths=spec(raw[8]),
        deviation=None if dev == DEVIATION_UNSPECIFIED else dev,
        clock_status=spec(raw[11]),
    )


def data_datetime(d: Data) -> dt.datetime:
    """A date-time carried as octet-string(12) or date-time(25) -> datetime."""
    if d.type not in (DataType.OCTET_STRING, DataType.DATE_TIME):
        raise DLMSError(f"expected a date-time, got {d.type.name.lower()}")
    return octets_to_datetime(d.value).to_datetime()


# --------------------------------------------------------------------------------------------
# xDLMS APDUs (Green Book 9.5, A-XDR encoded)


class Tag(IntEnum):
    INITIATE_REQUEST = 0x01
    READ_REQUEST = 0x05
    INITIATE_RESPONSE = 0x08
    CONFIRMED_SERVICE_ERROR = 0x0E
    DATA_NOTIFICATION = 0x0F
    GLO_INITIATE_REQUEST = 0x21
    GLO_INITIATE_RESPONSE = 0x28
    AARQ = 0x60
    AARE = 0x61
    RLRQ = 0x62
    RLRE = 0x63
    GET_REQUEST = 0xC0
    SET_REQUEST = 0xC1
    EVENT_NOTIFICATION_REQUEST = 0xC2
    ACTION_REQUEST = 0xC3
    GET_RESPONSE = 0xC4
    SET_RESPONSE = 0xC5
    ACTION_RESPONSE = 0xC7
    GLO_GET_REQUEST = 0xC8
    GLO_SET_REQUEST = 0xC9
    GLO_ACTION_REQUEST = 0xCB
    GLO_GET_RESPONSE = 0xCC
    GLO_SET_RESPONSE = 0xCD
    GLO_ACTION_RESPONSE = 0xCF
    EXCEPTION_RESPONSE = 0xD8
    GENERAL_GLO_CIPHER = 0xDB


# plain tag -> its global-ciphered tag (Green Book table "glo-xxx")
GLO_TAG = {
    Tag.GET_REQUEST: Tag.GLO_GET_REQUEST,
    Tag.SET_REQUEST: Tag.GLO_SET_REQUEST,
    Tag.ACTION_REQUEST: Tag.GLO_ACTION_REQUEST,
    Tag.GET_RESPONSE: Tag.GLO_GET_RESPONSE,
    Tag.SET_RESPONSE: Tag.GLO_SET_RESPONSE,
    Tag.ACTION_RESPONSE: Tag.GLO_ACTION_RESPONSE,
}
CIPHERED_TAGS = frozenset(GLO_TAG.values()) | {Tag.GENERAL_GLO_CIPHER, Tag.GLO_INITIATE_REQUEST,
                                                Tag.GLO_INITIATE_RESPONSE}


class DataAccessResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


class StateError(IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(IntEnum):
    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


def _enum_or_int(enum_cls: type[IntEnum], v: int) -> IntEnum | int:
    try:
        return enum_cls(v)
    except ValueError:
        return v


@dataclass(frozen=True)
class InvokeId:
    """invoke-id-and-priority: bits 0-3 id, bit 6 confirmed, bit 7 high priority."""

    invoke_id: int = 1
    confirmed: bool = True
    high_priority: bool = True

    def to_byte(self) -> int:
        return (self.invoke_id & 0x0F) | (0x40 if self.confirmed else 0) | (0x80 if self.high_priority else 0)

    @classmethod
    def from_byte(cls, b: int) -> InvokeId:
        return cls(b & 0x0F, bool(b & 0x40), bool(b & 0x80))


@dataclass(frozen=True)
class AttributeRef:
    """A COSEM attribute (or, with ``member`` = method id, a method) of one object."""

    class_id: int
    obis: bytes
    index: int

    def to_bytes(self) -> bytes:
        return self.class_id.to_bytes(2, "big") + self.obis + self.index.to_bytes(1, "big", signed=False)

    @classmethod
    def parse(cls, buf: bytes, pos: int) -> tuple[AttributeRef, int]:
        raw, p = _take(buf, pos, 9, "cosem descriptor")
        return cls(int.from_bytes(raw[0:2], "big"), raw[2:8], raw[8]), p

    def describe(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "obis": obis_str(self.obis), "index": self.index}


@dataclass(frozen=True)
class AccessSelection:
    selector: int
    parameters: Data


def _parse_access(buf: bytes, p: int) -> tuple[AccessSelection | None, int]:
    flag, p = _take(buf, p, 1, "access-selection flag")
    if flag[0] == 0:
        return None, p
    if flag[0] != 1:
        raise DLMSError(f"bad OPTIONAL flag {flag[0]}", p - 1)
    sel, p = _take(buf, p, 1, "access selector")
    params, p = decode_data(buf, p)
    return AccessSelection(sel[0], params), p


def _encode_access(a: AccessSelection | None) -> bytes:
    return b"\x00" if a is None else b"\x01" + bytes([a.selector]) + encode_data(a.parameters)


@dataclass(frozen=True)
class GetRequest:
    attribute: AttributeRef
    access: AccessSelection | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class GetRequestNext:
    block_number: int
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class GetResponse:
    """get-response-normal: exactly one of ``data`` / ``error``."""

    data: Data | None = None
    error: DataAccessResult | int | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class GetRequestWithList:
    """get-request-with-list: several attributes in one request (selective transfer, HES-36)."""

    attributes: tuple[tuple[AttributeRef, AccessSelection | None], ...]
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class GetResponseWithList:
    """One Get-Data-Result per requested attribute: a Data or a data-access-result."""

    results: tuple[Data | DataAccessResult | int, ...]
    invoke: InvokeId = field(default_factory=InvokeId)


def encode_result_list(results: Sequence[Data | DataAccessResult | int]) -> bytes:
    """SEQUENCE OF Get-Data-Result (also the raw data of a with-list answer sent in blocks)."""
    out = bytearray(encode_length(len(results)))
    for r in results:
        out += b"\x00" + encode_data(r) if isinstance(r, Data) else bytes([1, int(r)])
    return bytes(out)


def decode_result_list(buf: bytes, pos: int = 0) -> tuple[tuple[Data | DataAccessResult | int, ...], int]:
    n, p = decode_length(buf, pos)
    if n > len(buf) - p:
        raise DLMSError(f"list of {n} results cannot fit", pos)
    out: list[Data | DataAccessResult | int] = []
    for _ in range(n):
        choice, p = _choice(buf, p, "get-data-result")
        if choice == 0:
            d, p = decode_data(buf, p)
            out.append(d)
        elif choice == 1:
            e, p = _choice(buf, p, "data-access-result")
            out.append(_enum_or_int(DataAccessResult, e))
        else:
            raise DLMSError(f"bad get-data-result choice {choice}", p - 1)
    return tuple(out), p


@dataclass(frozen=True)
class GetResponseBlock:
    """get-response-with-datablock: ``raw`` is a slice of the encoded Data."""

    last: bool
    block_number: int
    raw: bytes | None = None
    error: DataAccessResult | int | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class SetRequest:
    attribute: AttributeRef
    value: Data
    access: AccessSelection | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class SetResponse:
    result: DataAccessResult | int
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class ActionRequest:
    method: AttributeRef
    parameter: Data | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class ActionResponse:
    result: ActionResult | int
    data: Data | None = None
    data_error: DataAccessResult | int | None = None
    invoke: InvokeId = field(default_factory=InvokeId)


@dataclass(frozen=True)
class ExceptionResponse:
    state_error: StateError | int
    service_error: ServiceError | int
    invocation_counter: int | None = None  # the counter the server expects (invocation-counter-error)


@dataclass(frozen=True)
class DataNotification:
    body: Data
    long_invoke_id: int = 1
    when: bytes = b""  # empty or a 12-byte COSEM date-time


@dataclass(frozen=True)
class CipheredApdu:
    """glo-xxx (system title implicit, from the association) or general-glo-cipher."""

    tag: int
    security_control: int
    invocation_counter: int
    ciphertext: bytes  # includes the 12-byte tag when authenticated
    system_title: bytes | None = None  # only general-glo-cipher carries it


@dataclass(frozen=True)
class AcseApdu:
    """AARQ/AARE/RLRQ/RLRE, parsed by dlms-cosem's ACSE layer (kept as the library object)."""

    tag: int
    parsed: Any
    raw: bytes


Apdu = (GetRequest | GetRequestNext | GetRequestWithList | GetResponse | GetResponseWithList | GetResponseBlock
        | SetRequest | SetResponse
        | ActionRequest | ActionResponse | ExceptionResponse | DataNotification | CipheredApdu | AcseApdu)


def encode_apdu(apdu: Apdu) -> bytes:
    if isinstance(apdu, GetRequest):
        return (bytes([Tag.GET_REQUEST, 1, apdu.invoke.to_byte()]) + apdu.attribute.to_bytes()
                + _encode_access(apdu.access))
    if isinstance(apdu, GetRequestNext):
        return bytes([Tag.GET_REQUEST, 2, apdu.invoke.to_byte()]) + apdu.block_number.to_bytes(4, "big")
    if isinstance(apdu, GetResponse):
        head = bytes([Tag.GET_RESPONSE, 1, apdu.invoke.to_byte()])
        if apdu.data is not None:
            return head + b"\x00" + encode_data(apdu.data)
        return head + bytes([1, int(apdu.error or 0)])
    if isinstance(apdu, GetRequestWithList):
        req = bytearray([Tag.GET_REQUEST, 3, apdu.invoke.to_byte()]) + encode_length(len(apdu.attributes))
        for ref, acc in apdu.attributes:
            req += ref.to_bytes() + _encode_access(acc)
        return bytes(req)
    if isinstance(apdu, GetResponseWithList):
        return bytes([Tag.GET_RESPONSE, 3, apdu.invoke.to_byte()]) + encode_result_list(apdu.results)
    if isinstance(apdu, GetResponseBlock):
        head = bytes([Tag.GET_RESPONSE, 2, apdu.invoke.to_byte(), 1 if apdu.last else 0])
        head += apdu.block_number.to_bytes(4, "big")
        if apdu.raw is not None:
            return head + b"\x00" + encode_length(len(apdu.raw)) + apdu.raw
        return head + bytes([1, int(apdu.error or 0)])
    if isinstance(apdu, SetRequest):
        return (bytes([Tag.SET_REQUEST, 1, apdu.invoke.to_byte()]) + apdu.attribute.to_bytes()
                + _encode_access(apdu.access) + encode_data(apdu.value))
    if isinstance(apdu, SetResponse):
        return bytes([Tag.SET_RESPONSE, 1, apdu.invoke.to_byte(), int(apdu.result)])
    if isinstance(apdu, ActionRequest):
        out = bytes([Tag.ACTION_REQUEST, 1, apdu.invoke.to_byte()]) + apdu.method.to_bytes()
        return out + (b"\x00" if apdu.parameter is None else b"\x01" + encode_data(apdu.parameter))
    if isinstance(apdu, ActionResponse):
        out = bytes([Tag.ACTION_RESPONSE, 1, apdu.invoke.to_byte(), int(apdu.result)])
        if apdu.data is not None:
            return out + b"\x01\x00" + encode_data(apdu.data)
        if apdu.data_error is not None:
            return out + bytes([1, 1, int(apdu.data_error)])
        return out + b"\x00"
    if isinstance(apdu, ExceptionResponse):
        out = bytes([Tag.EXCEPTION_RESPONSE, int(apdu.state_error), int(apdu.service_error)])
        if apdu.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            out += (apdu.invocation_counter or 0).to_bytes(4, "big")
        return out
    if isinstance(apdu, DataNotification):
        return (bytes([Tag.DATA_NOTIFICATION]) + apdu.long_invoke_id.to_bytes(4, "big")
                + encode_length(len(apdu.when)) + apdu.when + encode_data(apdu.body))
    if isinstance(apdu, CipheredApdu):
        content = bytes([apdu.security_control]) + apdu.invocation_counter.to_bytes(4, "big") + apdu.ciphertext
        if apdu.tag == Tag.GENERAL_GLO_CIPHER:
            st = apdu.system_title or b""
            return bytes([apdu.tag]) + encode_length(len(st)) + st + encode_length(len(content)) + content
        return bytes([apdu.tag]) + encode_length(len(content)) + content
    if isinstance(apdu, AcseApdu):
        return apdu.raw
    raise TypeError(f"not an APDU: {apdu!r}")


def _invoke(buf: bytes, p: int) -> tuple[InvokeId, int]:
    raw, p = _take(buf, p, 1, "invoke-id-and-priority")
    return InvokeId.from_byte(raw[0]), p


def _end(buf: bytes, p: int) -> None:
    if p != len(buf):
        raise DLMSError(f"{len(buf) - p} trailing bytes after APDU", p)


def _choice(buf: bytes, p: int, what: str) -> tuple[int, int]:
    raw, p = _take(buf, p, 1, what)
    return raw[0], p


def decode_apdu(buf: bytes) -> Apdu:
    """Decode one complete xDLMS or ACSE APDU."""
    buf = bytes(buf)
    if not buf:
        raise DLMSError("empty APDU", 0)
    tag = buf[0]
    p = 1
    if tag in (Tag.AARQ, Tag.AARE, Tag.RLRQ, Tag.RLRE):
        return AcseApdu(tag, parse_acse(buf), buf)
    if tag == Tag.GET_REQUEST:
        kind, p = _choice(buf, p, "get-request type")
        inv, p = _invoke(buf, p)
        if kind == 1:
            ref, p = AttributeRef.parse(buf, p)
            acc, p = _parse_access(buf, p)
            _end(buf, p)
            return GetRequest(ref, acc, inv)
        if kind == 2:
            raw, p = _take(buf, p, 4, "block number")
            _end(buf, p)
            return GetRequestNext(int.from_bytes(raw, "big"), inv)
        if kind == 3:
            n, p = decode_length(buf, p)
            if n * 10 > len(buf) - p:
                raise DLMSError(f"list of {n} attributes cannot fit", p)
            items = []
            for _ in range(n):
                ref, p = AttributeRef.parse(buf, p)
                acc, p = _parse_access(buf, p)
                items.append((ref, acc))
            _end(buf, p)
            return GetRequestWithList(tuple(items), inv)
        raise DLMSError(f"unsupported get-request type {kind}", 1)
    if tag == Tag.GET_RESPONSE:
        kind, p = _choice(buf, p, "get-response type")
        inv, p = _invoke(buf, p)
        if kind == 1:
            choice, p = _choice(buf, p, "get-data-result")
            if choice == 0:
                d, p = decode_data(buf, p)
                _end(buf, p)
                return GetResponse(d, None, inv)
            if choice == 1:
                err, p = _choice(buf, p, "data-access-result")
                _end(buf, p)
                return GetResponse(None, _enum_or_int(DataAccessResult, err), inv)
            raise DLMSError(f"bad get-data-result choice {choice}", p - 1)
        if kind == 2:
            last, p = _choice(buf, p, "last-block")
            raw, p = _take(buf, p, 4, "block number")
            number = int.from_bytes(raw, "big")
            choice, p = _choice(buf, p, "datablock result")
            if choice == 0:
                n, p = decode_length(buf, p)
                chunk, p = _take(buf, p, n, "raw-data")
                _end(buf, p)
                return GetResponseBlock(last != 0, number, chunk, None, inv)
            if choice == 1:
                err, p = _choice(buf, p, "data-access-result")
                _end(buf, p)
                return GetResponseBlock(last != 0, number, None, _enum_or_int(DataAccessResult, err), inv)
            raise DLMSError(f"bad datablock result choice {choice}", p - 1)
        if kind == 3:
            results, p = decode_result_list(buf, p)
            _end(buf, p)
            return GetResponseWithList(results, inv)
        raise DLMSError(f"unsupported get-response type {kind}", 1)
    if tag == Tag.SET_REQUEST:
        kind, p = _choice(buf, p, "set-request type")
        inv, p = _invoke(buf, p)
        if kind != 1:
            raise DLMSError(f"unsupported set-request type {kind}", 1)
        ref, p = AttributeRef.parse(buf, p)
        acc, p = _parse_access(buf, p)
        value, p = decode_data(buf, p)
        _end(buf, p)
        return SetRequest(ref, value, acc, inv)
    if tag == Tag.SET_RESPONSE:
        kind, p = _choice(buf, p, "set-response type")
        inv, p = _invoke(buf, p)
        if kind != 1:
            raise DLMSError(f"unsupported set-response type {kind}", 1)
        res, p = _choice(buf, p, "result")
        _end(buf, p)
        return SetResponse(_enum_or_int(DataAccessResult, res), inv)
    if tag == Tag.ACTION_REQUEST:
        kind, p = _choice(buf, p, "action-request type")
        inv, p = _invoke(buf, p)
        if kind != 1:
            raise DLMSError(f"unsupported action-request type {kind}", 1)
        ref, p = AttributeRef.parse(buf, p)
        flag, p = _choice(buf, p, "parameters flag")
        param = None
        if flag == 1:
            param, p = decode_data(buf, p)
        elif flag != 0:
            raise DLMSError(f"bad OPTIONAL flag {flag}", p - 1)
        _end(buf, p)
        return ActionRequest(ref, param, inv)
    if tag == Tag.ACTION_RESPONSE:
        kind, p = _choice(buf, p, "action-response type")
        inv, p = _invoke(buf, p)
        if kind != 1:
            raise DLMSError(f"unsupported action-response type {kind}", 1)
        res, p = _choice(buf, p, "action result")
        flag, p = _choice(buf, p, "return-parameters flag")
        data = None
        derr = None
        if flag == 1:
            choice, p = _choice(buf, p, "get-data-result")
            if choice == 0:
                data, p = decode_data(buf, p)
            elif choice == 1:
                e, p = _choice(buf, p, "data-access-result")
                derr = _enum_or_int(DataAccessResult, e)
            else:
                raise DLMSError(f"bad get-data-result choice {choice}", p - 1)
        elif flag != 0:
            raise DLMSError(f"bad OPTIONAL flag {flag}", p - 1)
        _end(buf, p)
        return ActionResponse(_enum_or_int(ActionResult, res), data, derr, inv)
    if tag == Tag.EXCEPTION_RESPONSE:
        se, p = _choice(buf, p, "state-error")
        ve, p = _choice(buf, p, "service-error")
        ic = None
        if ve == ServiceError.INVOCATION_COUNTER_ERROR:
            raw, p = _take(buf, p, 4, "invocation counter")
            ic = int.from_bytes(raw, "big")
        _end(buf, p)
        return ExceptionResponse(_enum_or_int(StateError, se), _enum_or_int(ServiceError, ve), ic)
    if tag == Tag.DATA_NOTIFICATION:
        raw, p = _take(buf, p, 4, "long-invoke-id-and-priority")
        n, p = decode_length(buf, p)
        when, p = _take(buf, p, n, "date-time")
        if n not in (0, 12):
            raise DLMSError(f"notification date-time has {n} bytes, expected 0 or 12", p - n)
        body, p = decode_data(buf, p)
        _end(buf, p)
        return DataNotification(body, int.from_bytes(raw, "big"), when)
    if tag in CIPHERED_TAGS:
        st = None
        if tag == Tag.GENERAL_GLO_CIPHER:
            n, p = decode_length(buf, p)
            st, p = _take(buf, p, n, "system title")
            if n != 8:
                raise DLMSError(f"system title has {n} bytes, expected 8", p - n)
        n, p = decode_length(buf, p)
        content, p = _take(buf, p, n, "ciphered content")
        _end(buf, p)
        if n < 5:
            raise DLMSError("ciphered content shorter than its security header", p - n)
        return CipheredApdu(tag, content[0], int.from_bytes(content[1:5], "big"), content[5:], st)
    raise DLMSError(f"unsupported APDU tag 0x{tag:02X}", 0)


def parse_acse(buf: bytes) -> Any:
    """AARQ/AARE/RLRQ/RLRE through dlms-cosem, its exceptions turned into DLMSError."""
    from dlms_cosem.protocol import acse

    classes = {Tag.AARQ: acse.ApplicationAssociationRequest, Tag.AARE: acse.ApplicationAssociationResponse,
               Tag.RLRQ: acse.ReleaseRequest, Tag.RLRE: acse.ReleaseResponse}
    cls = classes.get(Tag(buf[0]))
    if cls is None:
        raise DLMSError(f"not an ACSE APDU: 0x{buf[0]:02X}", 0)
    if len(buf) < 2 or buf[1] != len(buf) - 2:
        raise DLMSError("ACSE APDU length does not match its content", 1)
    try:
        return cls.from_bytes(buf)
    except Exception as exc:  # the library raises ValueError, IndexError, KeyError, asn1 errors...
        raise DLMSError(f"bad {Tag(buf[0]).name}: {exc.__class__.__name__}: {exc}", 0) from None


# --------------------------------------------------------------------------------------------
# Security suite 0 (AES-128-GCM, 12-byte tag), Green Book 9.2.7.2


SC_AUTH_ENC = 0x30  # authenticated + encrypted, suite 0
SC_AUTH = 0x10  # authenticated only (HLS-GMAC tags)


def _sc(value: int) -> Any:
    from dlms_cosem.security import SecurityControlField

    try:
        return SecurityControlField.from_bytes(bytes([value]))
    except ValueError as exc:
        raise DLMSError(f"security control 0x{value:02X}: {exc}") from None


def encrypt(plain: bytes, *, system_title: bytes, invocation_counter: int, ek: bytes, ak: bytes,
            security_control: int = SC_AUTH_ENC) -> bytes:
    """Ciphertext || 12-byte tag for an authenticated+encrypted APDU."""
    from dlms_cosem import security

    return bytes(security.encrypt(_sc(security_control), system_title, invocation_counter, ek, plain, ak))


def decrypt(ciphertext: bytes, *, system_title: bytes, invocation_counter: int, ek: bytes, ak: bytes,
            security_control: int = SC_AUTH_ENC) -> bytes:
    from dlms_cosem import security
    from dlms_cosem.exceptions import DecryptionError

    if len(ciphertext) < 12:
        raise DLMSError("ciphertext shorter than the authentication tag")
    try:
        return bytes(security.decrypt(_sc(security_control), system_title, invocation_counter, ek,
                                      ciphertext, ak))
    except DecryptionError:
        raise DLMSError("authentication tag does not verify (wrong key, system title or counter)") from None
    except ValueError as exc:
        raise DLMSError(f"cannot decrypt: {exc}") from None


def decrypt_unauthenticated(ciphertext: bytes, *, system_title: bytes, invocation_counter: int,
                            ek: bytes) -> bytes:
    """GCM is CTR mode from counter 2: recover the plaintext when only the encryption key is known
    (for `osos decode` with one key). The tag is NOT checked."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    body = ciphertext[:-12] if len(ciphertext) >= 12 else ciphertext
    iv = system_title + invocation_counter.to_bytes(4, "big") + (2).to_bytes(4, "big")
    d = Cipher(algorithms.AES(ek), modes.CTR(iv)).decryptor()
    return d.update(body) + d.finalize()


def gmac_tag(challenge: bytes, *, system_title: bytes, invocation_counter: int, ek: bytes, ak: bytes) -> bytes:
    """The 12-byte GMAC of SC(0x10) || AK || challenge (HLS mechanism 5)."""
    from dlms_cosem import security

    return bytes(security.gmac(_sc(SC_AUTH), system_title, invocation_counter, ek, ak, challenge))


def hls_gmac_response(challenge: bytes, *, system_title: bytes, invocation_counter: int, ek: bytes,
                      ak: bytes) -> bytes:
    """f(challenge) = SC || IC || GMAC, what each side sends to prove it holds the keys."""
    tag = gmac_tag(challenge, system_title=system_title, invocation_counter=invocation_counter, ek=ek, ak=ak)
    return bytes([SC_AUTH]) + invocation_counter.to_bytes(4, "big") + tag


def cipher_apdu(plain: bytes, *, system_title: bytes, invocation_counter: int, ek: bytes, ak: bytes,
                general: bool = False) -> bytes:
    """Wrap a plain xDLMS APDU into glo-xxx (or general-glo-cipher) with suite-0 protection."""
    if not plain:
        raise ValueError("nothing to cipher")
    ct = encrypt(plain, system_title=system_title, invocation_counter=invocation_counter, ek=ek, ak=ak)
    if general:
        return encode_apdu(CipheredApdu(Tag.GENERAL_GLO_CIPHER, SC_AUTH_ENC, invocation_counter, ct, system_title))
    try:
        tag = GLO_TAG[Tag(plain[0])]
    except (KeyError, ValueError):
        raise ValueError(f"no glo- tag for APDU 0x{plain[0]:02X}; use general=True") from None
    return encode_apdu(CipheredApdu(tag, SC_AUTH_ENC, invocation_counter, ct))


def decipher_apdu(c: CipheredApdu, *, system_title: bytes, ek: bytes, ak: bytes) -> bytes:
    """Plain APDU bytes of a ciphered one; ``system_title`` is the sender's (used unless the APDU carries one)."""
    st = c.system_title or system_title
    sc = c.security_control
    if sc & 0x0F != 0:
        raise DLMSError(f"security suite {sc & 0x0F} is not supported (suite 0 only)")
    if sc & 0x30 != 0x30:
        raise DLMSError(f"security control 0x{sc:02X}: only authenticated+encrypted APDUs are accepted")
    return decrypt(c.ciphertext, system_title=st, invocation_counter=c.invocation_counter, ek=ek, ak=ak,
                   security_control=sc)


# --------------------------------------------------------------------------------------------
# IEC 62056-47 wrapper (TCP/UDP): version 1, source wPort, destination wPort, length; all u16.

WRAPPER_VERSION = 1
WRAPPER_HEADER = 8


def wrap(apdu: bytes, source: int, destination: int) -> bytes:
    if len(apdu) > 0xFFFF:
        raise ValueError("APDU too long for one wrapper frame")
    return struct.pack(">HHHH", WRAPPER_VERSION, source, destination, len(apdu)) + apdu


@dataclass(frozen=True)
class WrapperFrame:
    source: int
    destination: int
    apdu: bytes


def parse_wrapper_header(header: bytes) -> tuple[int, int, int]:
    """(source, destination, length) of an 8-byte wrapper header."""
    if len(header) != WRAPPER_HEADER:
        raise DLMSError(f"wrapper header needs 8 bytes, got {len(header)}", 0)
    version, src, dst, length = struct.unpack(">HHHH", header)
    if version != WRAPPER_VERSION:
        raise DLMSError(f"wrapper version {version}, expected 1", 0)
    return src, dst, length


def unwrap(frame: bytes) -> WrapperFrame:
    src, dst, length = parse_wrapper_header(bytes(frame[:WRAPPER_HEADER]))
    if len(frame) - WRAPPER_HEADER != length:
        raise DLMSError(f"wrapper says {length} bytes, frame carries {len(frame) - WRAPPER_HEADER}", 6)
    return WrapperFrame(src, dst, bytes(frame[WRAPPER_HEADER:]))


# --------------------------------------------------------------------------------------------
# JSON view (osos decode --protocol dlms)


def data_to_json(d: Data) -> dict[str, Any]:
    name = d.type.name.lower().replace("_", "-")
    if d.type in (DataType.ARRAY, DataType.STRUCTURE):
        return {"type": name, "value": [data_to_json(i) for i in d.value]}
    if d.type is DataType.OCTET_STRING:
        out: dict[str, Any] = {"type": name, "value": d.value.hex()}
        if len(d.value) == 12:
            cdt = octets_to_datetime(d.value)
            if cdt.month is None or 1 <= cdt.month <= 12:
                out["date_time"] = cdt.iso()
        elif len(d.value) == 6:
            out["obis"] = obis_str(d.value)
        if d.value and all(32 <= b < 127 for b in d.value):
            out["text"] = d.value.decode("ascii")
        return out
    if d.type is DataType.DATE_TIME:
        return {"type": name, "value": d.value.hex(), "date_time": octets_to_datetime(d.value).iso()}
    if d.type in (DataType.FLOAT32, DataType.FLOAT64):
        fmt = ">f" if d.type is DataType.FLOAT32 else ">d"
        (f,) = struct.unpack(fmt, d.value)
        exact = str(Decimal(f)) if f == f and f not in (float("inf"), float("-inf")) else str(f)
        return {"type": name, "value": d.value.hex(), "decimal": exact}
    if d.type in (DataType.DATE, DataType.TIME):
        return {"type": name, "value": d.value.hex()}
    return {"type": name, "value": d.value}


def _enum_json(v: IntEnum | int | None) -> Any:
    if v is None:
        return None
    return v.name.lower().replace("_", "-") if isinstance(v, IntEnum) else v


def apdu_to_json(apdu: Apdu) -> dict[str, Any]:
    if isinstance(apdu, GetRequest):
        out: dict[str, Any] = {"apdu": "get-request-normal", "invoke_id": apdu.invoke.invoke_id,
                               "attribute": apdu.attribute.describe()}
        if apdu.access:
            out["access_selection"] = {"selector": apdu.access.selector,
                                       "parameters": data_to_json(apdu.access.parameters)}
        return out
    if isinstance(apdu, GetRequestNext):
        return {"apdu": "get-request-next", "invoke_id": apdu.invoke.invoke_id, "block_number": apdu.block_number}
    if isinstance(apdu, GetResponse):
        return {"apdu": "get-response-normal", "invoke_id": apdu.invoke.invoke_id,
                "data": data_to_json(apdu.data) if apdu.data else None, "error": _enum_json(apdu.error)}
    if isinstance(apdu, GetRequestWithList):
        return {"apdu": "get-request-with-list", "invoke_id": apdu.invoke.invoke_id,
                "attributes": [dict(ref.describe(), access_selector=acc.selector if acc else None)
                               for ref, acc in apdu.attributes]}
    if isinstance(apdu, GetResponseWithList):
        return {"apdu": "get-response-with-list", "invoke_id": apdu.invoke.invoke_id,
                "results": [data_to_json(r) if isinstance(r, Data) else {"error": _enum_json(r)}
                            for r in apdu.results]}
    if isinstance(apdu, GetResponseBlock):
        return {"apdu": "get-response-with-datablock", "invoke_id": apdu.invoke.invoke_id,
                "last_block": apdu.last, "block_number": apdu.block_number,
                "raw_data": apdu.raw.hex() if apdu.raw is not None else None, "error": _enum_json(apdu.error)}
    if isinstance(apdu, SetRequest):
        return {"apdu": "set-request-normal", "invoke_id": apdu.invoke.invoke_id,
                "attribute": apdu.attribute.describe(), "value": data_to_json(apdu.value)}
    if isinstance(apdu, SetResponse):
        return {"apdu": "set-response-normal", "invoke_id": apdu.invoke.invoke_id, "result": _enum_json(apdu.result)}
    if isinstance(apdu, ActionRequest):
        m = apdu.method.describe()
        m["method"] = m.pop("index")
        return {"apdu": "action-request-normal", "invoke_id": apdu.invoke.invoke_id, "method": m,
                "parameter": data_to_json(apdu.parameter) if apdu.parameter else None}
    if isinstance(apdu, ActionResponse):
        return {"apdu": "action-response-normal", "invoke_id": apdu.invoke.invoke_id,
                "result": _enum_json(apdu.result), "data": data_to_json(apdu.data) if apdu.data else None,
                "data_error": _enum_json(apdu.data_error)}
    if isinstance(apdu, ExceptionResponse):
        return {"apdu": "exception-response", "state_error": _enum_json(apdu.state_error),
                "service_error": _enum_json(apdu.service_error), "invocation_counter": apdu.invocation_counter}
    if isinstance(apdu, DataNotification):
        return {"apdu": "data-notification", "long_invoke_id": apdu.long_invoke_id,
                "date_time": octets_to_datetime(apdu.when).iso() if apdu.when else None,
                "body": data_to_json(apdu.body)}
    if isinstance(apdu, CipheredApdu):
        return {"apdu": _enum_json(_enum_or_int(Tag, apdu.tag)), "security_control": apdu.security_control,
                "invocation_counter": apdu.invocation_counter,
                "system_title": apdu.system_title.hex() if apdu.system_title else None,
                "ciphertext": apdu.ciphertext.hex()}
    if isinstance(apdu, AcseApdu):
        return _acse_json(apdu)
    raise TypeError(f"not an APDU: {apdu!r}")


def _acse_json(apdu: AcseApdu) -> dict[str, Any]:
    p = apdu.parsed
    name = {Tag.AARQ: "aarq", Tag.AARE: "aare", Tag.RLRQ: "rlrq", Tag.RLRE: "rlre"}[Tag(apdu.tag)]
    out: dict[str, Any] = {"apdu": name}
    for attr_name in ("ciphered", "authentication", "system_title", "authentication_value", "result",
                      "result_source_diagnostics", "reason"):
        if hasattr(p, attr_name):
            v = getattr(p, attr_name)
            if isinstance(v, IntEnum):
                v = v.name.lower()
            elif isinstance(v, bytes | bytearray):
                v = bytes(v).hex()
            elif v is not None and not isinstance(v, bool | int | str):
                v = str(v)
            out[attr_name] = v
    ui = getattr(p, "user_information", None)
    if ui is not None:
        out["user_information"] = ui.content.__class__.__name__
    return out


def _initiate_json(raw: bytes) -> dict[str, Any]:
    from dlms_cosem.protocol import xdlms

    try:
        ini: Any = (xdlms.InitiateRequest if raw[:1] == b"\x01" else xdlms.InitiateResponse).from_bytes(raw)
    except Exception as exc:  # the library raises assorted exception types
        raise DLMSError(f"bad xDLMS-Initiate: {exc.__class__.__name__}: {exc}") from None
    conf = getattr(ini, "proposed_conformance", None) or getattr(ini, "negotiated_conformance", None)
    granted = sorted(name for name in vars(conf) if getattr(conf, name) is True) if conf is not None else []
    size = getattr(ini, "client_max_receive_pdu_size", None) or getattr(ini, "server_max_receive_pdu_size", None)
    return {"apdu": ini.__class__.__name__, "conformance": granted, "max_receive_pdu_size": size}


def _decrypt_initiate(apdu: AcseApdu, key: bytes) -> dict[str, Any]:
    """With keys, show the ciphered xDLMS-Initiate inside an AARQ (client title in the AARQ) or an
    AARE (meter title in the AARE)."""
    p = apdu.parsed
    ui = getattr(p, "user_information", None)
    content = getattr(ui, "content", None)
    if content is None or not hasattr(content, "ciphered_text"):
        return {}
    if len(key) not in (16, 32):
        raise DLMSError("--key must be EK (16 bytes) or EK||AK (32 bytes) for an AARQ/AARE")
    title = bytes(getattr(p, "system_title", None) or b"")
    if len(title) != 8:
        raise DLMSError("ciphered xDLMS-Initiate without an 8-byte system title in the ACSE APDU")
    ic = int(content.invocation_counter)
    if len(key) == 32:
        plain = decrypt(content.ciphered_text, system_title=title, invocation_counter=ic, ek=key[:16], ak=key[16:])
    else:
        plain = decrypt_unauthenticated(content.ciphered_text, system_title=title, invocation_counter=ic, ek=key)
    return {"invocation_counter": ic, "authenticated": len(key) == 32, "decrypted": _initiate_json(plain)}


def _strip_transport(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Accept a bare APDU, a wrapper frame, or one HDLC frame (an I-frame's LLC header is dropped;
    a frame without information returns no APDU bytes)."""
    if len(data) >= WRAPPER_HEADER and data[0:2] == b"\x00\x01":
        try:
            w = unwrap(data)
        except DLMSError:
            pass
        else:
            return w.apdu, {"transport": "wrapper", "source_wport": w.source, "destination_wport": w.destination}
    if len(data) >= 2 and data[0] == 0x7E and data[-1] == 0x7E:
        from osos.protocols import dlms_hdlc

        frame = dlms_hdlc.parse_frame(data)
        info = frame.information
        meta = {"transport": "hdlc", "frame": frame.kind, "destination": frame.destination,
                "source": frame.source, "segmented": frame.segmented}
        if info[:3] in (dlms_hdlc.LLC_REQUEST, dlms_hdlc.LLC_RESPONSE):
            info = info[3:]
        if frame.kind in ("SNRM", "UA") and info:
            meta["parameters"] = {str(k): v for k, v in dlms_hdlc.parse_negotiation(info).items()}
            info = b""
        if frame.kind == "I":
            meta.update(send_sequence=frame.ns, receive_sequence=frame.nr)
        elif frame.kind == "RR":
            meta["receive_sequence"] = frame.nr
        return info, meta
    return data, {"transport": "none"}


def _maybe_hex(data: bytes) -> bytes:
    """Captured traces are often hex text: accept it when the whole input is hex digits."""
    text = b"".join(data.split())
    if len(text) >= 2 and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text.decode("ascii"))
    return data


def decode_to_json(data: bytes, key: bytes | None) -> dict[str, Any]:
    """`osos decode --protocol dlms`: one APDU (bare, in a wrapper frame or an HDLC frame; binary or
    hex text) as JSON.

    ``key`` for ciphered APDUs: EK (16 bytes: decrypted, tag not checked) or EK || AK (32 bytes:
    decrypted and authenticated). glo-xxx APDUs do not carry the sender's system title: prefix it,
    i.e. give SYSTEM_TITLE(8) || EK or SYSTEM_TITLE || EK || AK (24 or 40 bytes).
    """
    apdu_bytes, meta = _strip_transport(_maybe_hex(bytes(data)))
    if not apdu_bytes and meta["transport"] == "hdlc":
        return {"apdu": None, **meta}
    apdu = decode_apdu(apdu_bytes)
    out = apdu_to_json(apdu)
    out.update(meta)
    if isinstance(apdu, AcseApdu) and key is not None:
        out.update(_decrypt_initiate(apdu, key))
    if isinstance(apdu, CipheredApdu) and key is not None:
        if len(key) not in (16, 24, 32, 40):
            raise DLMSError("--key must be EK or EK||AK (16/32 bytes), optionally after the 8-byte system title")
        st = apdu.system_title
        if len(key) in (24, 40):
            st, key = st or key[:8], key[8:]
        if st is None:
            raise DLMSError("a glo- APDU does not carry the system title: give --key as SYSTEM_TITLE||EK[||AK]")
        if len(key) == 32:
            plain = decipher_apdu(apdu, system_title=st, ek=key[:16], ak=key[16:])
            out["authenticated"] = True
        else:
            plain = decrypt_unauthenticated(apdu.ciphertext, system_title=st,
                                            invocation_counter=apdu.invocation_counter, ek=key)
            out["authenticated"] = False
        out["decrypted"] = apdu_to_json(decode_apdu(plain))
    return out
