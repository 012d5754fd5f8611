"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer) frame decoder.

Sans-I/O: bytes in, dataclasses out. Decodes single-character ACK, short frames (SND_NKE,
REQ_UD2), control frames and long frames (RSP_UD with CI 72h long header, 7Ah short header,
78h no header, 70h application error, 52h secondary-address selection), primary and secondary
addressing. Records go through the shared decoder in ``mbus_records`` (covers HES-40, HES-38).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from osos.protocols.mbus_records import MBusError, Record, bcd_value, decode_records, record_to_json
from osos.protocols.mbus_tables import VifInfo, device_type, manufacturer_code, tables

__all__ = ["MBusError", "MBusApplicationError", "MBusFrame", "MBusHeader", "MBusTelegram",
           "parse_frame", "decode", "decode_to_json", "read_input"]

ACK = 0xE5
_C_NAMES = {0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD", 0x5A: "REQ_UD1", 0x7A: "REQ_UD1",
            0x5B: "REQ_UD2", 0x7B: "REQ_UD2", 0x08: "RSP_UD", 0x18: "RSP_UD", 0x28: "RSP_UD",
            0x38: "RSP_UD"}
# CI 70h error codes, EN 13757-3 table 7 (the wired-M-Bus application error byte)
_APP_ERRORS = {0: "Unspecified error", 1: "Unimplemented CI-Field", 2: "Buffer too long, truncated",
               3: "Too many records", 4: "Premature end of record", 5: "More than 10 DIFEs",
               6: "More than 10 VIFEs", 7: "Reserved", 8: "Application too busy for handling readout",
               9: "Too many readouts (for slaves with limited readouts per time)"}


class MBusApplicationError(MBusError):
    """The meter answered with an application error (CI 70h); ``code`` is its error byte."""

    def __init__(self, reason: str, position: int | None, code: int | None) -> None:
        super().__init__(reason, position)
        self.code = code


@dataclass(frozen=True)
class MBusFrame:
    """Link layer: kind is ack|short|control|long; ``payload`` is the user data after CI."""

    kind: str
    c: int | None = None
    a: int | None = None
    ci: int | None = None
    payload: bytes = b""

    @property
    def function(self) -> str:
        if self.kind == "ack":
            return "ACK"
        return _C_NAMES.get(self.c or 0, f"C=0x{self.c:02X}")

    @property
    def address(self) -> str:
        """Primary address 0..250; 253 = selected by secondary address; 254/255 broadcast."""
        if self.a is None:
            return ""
        if self.a == 253:
            return "secondary (253)"
        if self.a in (254, 255):
            return f"broadcast ({self.a})"
        return f"primary ({self.a})"


@dataclass(frozen=True)
class MBusHeader:
    """Identification of a slave: the 8-byte secondary address plus transport fields."""

    id: str
    manufacturer: str
    version: int
    medium: int
    access_number: int | None = None
    status: int | None = None
    signature: int | None = None
    medium_text: str | None = None  # fixed-structure frames name their 4-bit medium differently

    @property
    def medium_name(self) -> str:
        return self.medium_text if self.medium_text is not None else device_type(self.medium)[0]

    @property
    def secondary_address(self) -> str:
        """16 hex digits as used by `mbus-*-select-secondary`: id, manufacturer, version, medium."""
        m = _manufacturer_value(self.manufacturer)
        return f"{self.id}{m & 0xFF:02X}{m >> 8:02X}{self.version:02X}{self.medium:02X}"

    def to_json(self) -> dict:
        out: dict = {
            "id": self.id, "manufacturer": self.manufacturer, "version": self.version,
            "medium": self.medium_name, "medium_code": self.medium, "media": device_type(self.medium)[1],
            "secondary_address": self.secondary_address,
        }
        if self.access_number is not None:
            out["access_number"] = self.access_number
        if self.status is not None:
            out["status"] = f"{self.status:02X}"
        if self.signature is not None:
            out["signature"] = f"{self.signature:04X}"
        return out


@dataclass(frozen=True)
class MBusTelegram:
    frame: MBusFrame
    header: MBusHeader | None = None
    records: list[Record] = field(default_factory=list)
    more_records_follow: bool = False


def _manufacturer_value(code: str) -> int:
    value = 0
    for ch in code:
        value = (value << 5) | ((ord(ch) - 64) & 0x1F)
    return value


def bcd_id(raw: bytes) -> str:
    """Identification number: 8 BCD digits, least significant byte first (hex shown as-is,
    so wildcards Fh and non-BCD ids survive)."""
    return raw[::-1].hex().upper()


def parse_header(raw: bytes, position: int) -> MBusHeader:
    """The 12-byte long header (CI 72h): ID, M, version, medium, access no, status, signature."""
    if len(raw) < 12:
        raise MBusError(f"variable data header needs 12 bytes, got {len(raw)}", position)
    return MBusHeader(
        id=bcd_id(raw[0:4]), manufacturer=manufacturer_code(int.from_bytes(raw[4:6], "little")),
        version=raw[6], medium=raw[7], access_number=raw[8], status=raw[9],
        signature=int.from_bytes(raw[10:12], "little"),
    )


def parse_frame(data: bytes) -> MBusFrame:
    """Check framing (start/stop bytes, L fields, checksum) and split C, A, CI, user data."""
    if not data:
        raise MBusError("empty input", 0)
    if data[0] == ACK:
        if len(data) != 1:
            raise MBusError("trailing bytes after single-character ACK", 1)
        return MBusFrame("ack")
    if data[0] == 0x10:
        if len(data) != 5:
            raise MBusError(f"short frame must be 5 bytes, got {len(data)}", min(len(data), 5))
        if (data[1] + data[2]) & 0xFF != data[3]:
            raise MBusError("short frame checksum mismatch", 3)
        if data[4] != 0x16:
            raise MBusError("short frame stop byte is not 16h", 4)
        return MBusFrame("short", c=data[1], a=data[2])
    if data[0] != 0x68:
        raise MBusError(f"unknown start byte 0x{data[0]:02X}", 0)
    if len(data) < 4:
        raise MBusError("premature end of frame header", len(data))
    length = data[1]
    if data[2] != length:
        raise MBusError("the two L fields differ", 2)
    if data[3] != 0x68:
        raise MBusError("second start byte is not 68h", 3)
    if length < 3:
        raise MBusError(f"L field {length} is below the minimum of 3", 1)
    if len(data) < length + 6:
        raise MBusError(f"premature end of frame: L={length} needs {length + 6} bytes, got {len(data)}",
                        len(data))
    if len(data) > length + 6:
        raise MBusError(f"{len(data) - length - 6} bytes after the end of the frame", length + 6)
    if sum(data[4 : 4 + length]) & 0xFF != data[4 + length]:
        raise MBusError("checksum mismatch", 4 + length)
    if data[5 + length] != 0x16:
        raise MBusError("stop byte is not 16h", 5 + length)
    kind = "control" if length == 3 else "long"
    return MBusFrame(kind, c=data[4], a=data[5], ci=data[6], payload=bytes(data[7 : 4 + length]))


def decode(data: bytes) -> MBusTelegram:
    """Decode one wired M-Bus frame into header and records. Raises MBusError on bad input."""
    frame = parse_frame(bytes(data))
    if frame.kind in ("ack", "short"):
        return MBusTelegram(frame)
    ci, payload, base = frame.ci, frame.payload, 7
    if ci == 0x70:
        if not payload:
            raise MBusApplicationError("application error frame (CI 70h) without error code", base, None)
        code = payload[0]
        text = _APP_ERRORS.get(code, f"error code {code}")
        raise MBusApplicationError(f"meter reports application error: {text}", base, code)
    if ci == 0x72:
        header = parse_header(payload, base)
        records, more = decode_records(payload[12:], base + 12)
        return MBusTelegram(frame, header, records, more)
    if ci == 0x7A:
        if len(payload) < 4:
            raise MBusError(f"short header needs 4 bytes, got {len(payload)}", base)
        header = None
        records, more = decode_records(payload[4:], base + 4)
        return MBusTelegram(frame, header, records, more)
    if ci == 0x78:
        records, more = decode_records(payload, base)
        return MBusTelegram(frame, None, records, more)
    if ci in (0x52, 0x56):
        if len(payload) != 8:
            raise MBusError(f"secondary address selection needs 8 bytes, got {len(payload)}", base)
        header = MBusHeader(id=bcd_id(payload[0:4]),
                            manufacturer=manufacturer_code(int.from_bytes(payload[4:6], "little")),
                            version=payload[6], medium=payload[7])
        return MBusTelegram(frame, header)
    if ci == 0x73:
        header, records = _fixed_structure(payload, base)
        return MBusTelegram(frame, header, records)
    if ci == 0x77:
        raise MBusError("fixed data structure with most-significant-byte-first order (CI 77h) "
                        "is not supported", 6)
    if ci == 0x76:
        raise MBusError("variable data with most-significant-byte-first order (CI 76h) is not supported", 6)
    raise MBusError(f"unsupported CI field 0x{ci:02X}", 6)


def _fixed_structure(payload: bytes, base: int) -> tuple[MBusHeader, list[Record]]:
    """The 16-byte fixed data structure of older meters (EN 1434-3): id, access number, status,
    two 6-bit unit codes (their top bits form the medium) and two 32-bit counters."""
    if len(payload) != 16:
        raise MBusError(f"fixed data structure needs 16 bytes, got {len(payload)}", base)
    status, type1, type2 = payload[5], payload[6], payload[7]
    medium = ((type1 & 0xC0) >> 6) | ((type2 & 0xC0) >> 4)
    t = tables()
    header = MBusHeader(id=bcd_id(payload[0:4]), manufacturer="", version=0, medium=medium,
                        access_number=payload[4], status=status, medium_text=t.fixed_media[medium])
    binary = bool(status & 0x80)  # else BCD
    stored = 1 if status & 0x40 else 0  # counters hold values stored at a fixed date
    records = []
    for k, (code, raw) in enumerate(((type1 & 0x3F, payload[8:12]), (type2 & 0x3F, payload[12:16]))):
        storage = stored
        if k == 1 and code == 0x3E:  # same unit as counter 1, historic value
            code, storage = type1 & 0x3F, 1
        info = t.fixed.get(code, VifInfo("Reserved", "Reserved", Decimal(1)))
        number: int | None = int.from_bytes(raw, "little", signed=True) if binary else bcd_value(raw)
        value: int | Decimal | str
        if number is None:
            value, data_type = raw[::-1].hex().upper(), "binary"
        else:
            scaled = number * info.factor
            value = int(scaled) if scaled == scaled.to_integral_value() else scaled.normalize()
            data_type = "int" if binary else "bcd"
        records.append(Record(
            index=k, function="instantaneous", storage=storage, tariff=0, subunit=0, dif=0, dife=(),
            vif=None, vife=(), quantity=info.quantity, unit=info.unit, value=value, data_type=data_type,
            raw=bytes(raw), position=base + 8 + 4 * k, notes=(f"fixed unit code 0x{code:02X}",),
        ))
    return header, records


def read_input(data: bytes) -> bytes:
    """Accept raw bytes or hex text (whitespace allowed), as `osos decode` files hold either."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return data
    compact = "".join(text.split())
    if compact and len(compact) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in compact):
        return bytes.fromhex(compact)
    return data


def telegram_to_json(telegram: MBusTelegram) -> dict:
    header: dict = {"frame": telegram.frame.kind, "function": telegram.frame.function}
    if telegram.frame.a is not None:
        header["address"] = telegram.frame.address
    if telegram.frame.ci is not None:
        header["ci"] = f"{telegram.frame.ci:02X}"
    if telegram.header is not None:
        header.update(telegram.header.to_json())
    if telegram.more_records_follow:
        header["more_records_follow"] = True
    return {"header": header, "records": [record_to_json(r) for r in telegram.records]}


def decode_to_json(data: bytes, key: bytes | None = None) -> dict:
    """`osos decode --protocol mbus`: JSON with header and records (the key is not used)."""
    return telegram_to_json(decode(read_input(data)))
