"""Modbus energy analyzers as data: register maps, exact decoding of register words, alarm evaluation.

Covers HES-31 (analyzer identity), HES-32 (measurements), HES-33 (alarms) and the Modbus part of HES-40.
A register map is a TOML file under ``osos/data/registermaps/`` copied from the maker's public manual (its
source is cited in the file); adding an analyzer is adding a file. This module is pure: it turns register
words into typed exact values (``Decimal`` or, for enumerations, ``str``) and never touches a socket;
pymodbus does the wire in ``osos.field.modbus_client``.

Exactness: integers are scaled with ``Decimal`` arithmetic; an IEEE-754 float32 becomes the *shortest decimal
string that reads back to the same float32* (``230.1``, not ``230.100006103515625``), so a stored value is
what the analyzer meant to display, and no float arithmetic touches it.

Words are addressed by their 6-digit Modicon reference: ``300001 + address`` for input registers (function
04) and ``400001 + address`` for holding registers (function 03), the numbering the manuals use.
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from osos.protocols.errors import DecodeError

MAPS_DIR = Path(__file__).resolve().parent.parent / "data" / "registermaps"

#: register type -> number of 16-bit words
TYPE_WORDS: dict[str, int] = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "u64": 4, "s64": 4, "float32": 2}
TABLES = ("input", "holding")
TABLE_BASE = {"input": 300001, "holding": 400001}
FUNCTION_CODE = {"input": 4, "holding": 3}
GROUPS = ("identity", "measurement", "setting")
MODBUS_MAX_READ = 125  # Modbus Application Protocol V1.1b3, 6.3/6.4: at most 125 registers per read


class ModbusError(DecodeError):
    """Every error of the Modbus codec and its register maps."""


class ModbusMapError(ModbusError):
    """A register map file that cannot be used; the message names the file and the register."""

    def __init__(self, reason: str, origin: str = "", register: str | None = None) -> None:
        self.origin = origin
        self.register = register
        where = origin or "register map"
        if register is not None:
            where += f", register {register!r}"
        super().__init__(f"{where}: {reason}")


class ModbusDecodeError(ModbusError):
    """Register words that do not make a value (wrong count, out of range, NaN/infinite float)."""


@dataclass(frozen=True)
class Register:
    """One value of the map: where it lives, how its words make a number, what the number means."""

    name: str
    table: str
    address: int
    type: str
    unit: str = ""
    scale: Decimal = Decimal(1)
    word_order: str = "big"  # "big": most significant word first; "little": least significant first
    byte_order: str = "big"  # inside each word
    group: str = "measurement"
    description: str = ""
    enum: Mapping[int, str] | None = None
    single_read: bool = False  # the manual allows reading this register only on its own

    @property
    def count(self) -> int:
        return TYPE_WORDS[self.type]

    @property
    def reference(self) -> int:
        """Modicon reference of the first word (3xxxxx input, 4xxxxx holding)."""
        return TABLE_BASE[self.table] + self.address

    @property
    def end(self) -> int:
        """First address after this register."""
        return self.address + self.count


@dataclass(frozen=True)
class AlarmThresholds:
    """HES-33 limits. ``None`` switches a check off (e.g. low current on a feeder allowed to idle)."""

    voltage_high: Decimal | None = None
    voltage_low: Decimal | None = None
    neutral_voltage_high: Decimal | None = None
    current_high: Decimal | None = None
    current_low: Decimal | None = None
    neutral_current_high: Decimal | None = None
    power_factor_low: Decimal | None = None


@dataclass(frozen=True)
class RegisterMap:
    """A whole analyzer: static identity, the source it was copied from, link limits, registers, alarm limits."""

    name: str
    origin: str
    device: Mapping[str, Any]
    source: Mapping[str, str]
    max_registers: int
    registers: tuple[Register, ...]
    bridge_gaps: bool = False  # the device answers reads that span unlisted addresses
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)
    serial: Mapping[str, Any] = field(default_factory=dict)

    def register(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------- map loading

_REGISTER_KEYS = {"name", "table", "address", "type", "unit", "scale", "word_order", "byte_order", "group",
                  "description", "enum", "single_read"}


def _decimal(value: Any, what: str, origin: str, register: str | None) -> Decimal:
    """Scales and limits are written as strings or integers: a TOML float is already binary and inexact."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ModbusMapError(f"{what} must be an integer or a decimal string, got {value!r}", origin, register)
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise ModbusMapError(f"{what} is not a decimal number: {value!r}", origin, register) from None
    if not result.is_finite():
        raise ModbusMapError(f"{what} must be finite: {value!r}", origin, register)
    return result


def _choice(value: Any, allowed: Iterable[str], what: str, origin: str, register: str | None) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ModbusMapError(f"{what} {value!r} is not one of {', '.join(allowed)}", origin, register)
    return str(value)


def _parse_register(raw: Any, index: int, defaults: Mapping[str, Any], origin: str) -> Register:
    if not isinstance(raw, dict):
        raise ModbusMapError(f"register #{index} is not a table", origin)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ModbusMapError(f"register #{index} has no name", origin)
    unknown = set(raw) - _REGISTER_KEYS
    if unknown:
        raise ModbusMapError(f"unknown keys {sorted(unknown)}", origin, name)
    table = _choice(raw.get("table", defaults.get("table", "input")), TABLES, "table", origin, name)
    address = raw.get("address")
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
        raise ModbusMapError(f"address must be an integer 0..65535, got {address!r}", origin, name)
    rtype = _choice(raw.get("type"), TYPE_WORDS, "type", origin, name)
    if address + TYPE_WORDS[rtype] > 0x10000:
        raise ModbusMapError("register runs past address 65535", origin, name)
    word_order = _choice(raw.get("word_order", defaults.get("word_order", "big")), ("big", "little"),
                         "word_order", origin, name)
    byte_order = _choice(raw.get("byte_order", defaults.get("byte_order", "big")), ("big", "little"),
                         "byte_order", origin, name)
    group = _choice(raw.get("group", "measurement"), GROUPS, "group", origin, name)
    scale = _decimal(raw.get("scale", 1), "scale", origin, name)
    if scale == 0:
        raise ModbusMapError("scale must not be zero", origin, name)
    if rtype == "float32" and scale != 1:
        raise ModbusMapError("a float32 register carries its own unit; scale must be 1", origin, name)
    enum: dict[int, str] | None = None
    if "enum" in raw:
        if not isinstance(raw["enum"], dict) or not raw["enum"] or rtype == "float32":
            raise ModbusMapError("enum must be a non-empty table of integer keys on an integer register", origin,
                                 name)
        enum = {}
        for key, label in raw["enum"].items():
            try:
                enum[int(key)] = str(label)
            except ValueError:
                raise ModbusMapError(f"enum key {key!r} is not an integer", origin, name) from None
    for text_key in ("unit", "description"):
        if not isinstance(raw.get(text_key, ""), str):
            raise ModbusMapError(f"{text_key} must be a string", origin, name)
    single = raw.get("single_read", False)
    if not isinstance(single, bool):
        raise ModbusMapError("single_read must be true or false", origin, name)
    return Register(name=name, table=table, address=address, type=rtype, unit=raw.get("unit", ""), scale=scale,
                    word_order=word_order, byte_order=byte_order, group=group,
                    description=raw.get("description", ""), enum=enum, single_read=single)


def _parse_alarms(raw: Any, origin: str) -> AlarmThresholds:
    if raw is None:
        return AlarmThresholds()
    if not isinstance(raw, dict):
        raise ModbusMapError("[alarms] must be a table", origin)
    known = AlarmThresholds.__dataclass_fields__
    unknown = set(raw) - set(known)
    if unknown:
        raise ModbusMapError(f"unknown alarm limits {sorted(unknown)}", origin)
    return AlarmThresholds(**{k: _decimal(v, f"alarm limit {k}", origin, None) for k, v in raw.items()})


def parse_map(doc: Mapping[str, Any], origin: str, name: str = "") -> RegisterMap:
    """Validate a parsed TOML document: known types, addresses in range, no two registers sharing a word."""
    for section in ("device", "source"):
        if not isinstance(doc.get(section), dict):
            raise ModbusMapError(f"missing [{section}] table", origin)
    source = doc["source"]
    for key in ("url", "title", "version", "date"):
        if not isinstance(source.get(key), str) or not source[key]:
            raise ModbusMapError(f"[source] needs {key} (where this map comes from)", origin)
    link = doc.get("link", {})
    if not isinstance(link, dict):
        raise ModbusMapError("[link] must be a table", origin)
    unknown_link = set(link) - {"max_registers", "bridge_gaps", "table", "word_order", "byte_order"}
    if unknown_link:
        raise ModbusMapError(f"unknown [link] keys {sorted(unknown_link)}", origin)
    max_registers = link.get("max_registers", MODBUS_MAX_READ)
    if isinstance(max_registers, bool) or not isinstance(max_registers, int) or not 1 <= max_registers <= 125:
        raise ModbusMapError(f"link.max_registers must be 1..125, got {max_registers!r}", origin)
    bridge_gaps = link.get("bridge_gaps", False)
    if not isinstance(bridge_gaps, bool):
        raise ModbusMapError("link.bridge_gaps must be true or false", origin)
    raw_regs = doc.get("register")
    if not isinstance(raw_regs, list) or not raw_regs:
        raise ModbusMapError("no [[register]] entries", origin)
    registers = tuple(_parse_register(raw, i, link, origin) for i, raw in enumerate(raw_regs))
    seen: dict[str, Register] = {}
    for reg in registers:
        if reg.name in seen:
            raise ModbusMapError("name used twice", origin, reg.name)
        seen[reg.name] = reg
        if reg.count > max_registers:
            raise ModbusMapError(f"{reg.count} words exceed link.max_registers {max_registers}", origin, reg.name)
    for table in TABLES:
        in_table = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        for before, after in zip(in_table, in_table[1:], strict=False):
            if after.address < before.end:
                raise ModbusMapError(
                    f"overlaps {before.name!r} ({table} {before.address:#06x}..{before.end - 1:#06x})",
                    origin, after.name)
    serial = doc.get("serial", {})
    if not isinstance(serial, dict):
        raise ModbusMapError("[serial] must be a table", origin)
    return RegisterMap(name=name or Path(origin).stem, origin=origin, device=dict(doc["device"]),
                       source=dict(source), max_registers=max_registers, registers=registers, bridge_gaps=bridge_gaps,
                       alarms=_parse_alarms(doc.get("alarms"), origin), serial=dict(serial))


def parse_map_text(text: str, origin: str, name: str = "") -> RegisterMap:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModbusMapError(f"not valid TOML: {exc}", origin) from None
    return parse_map(doc, origin, name)


def load_map_file(path: Path | str) -> RegisterMap:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModbusMapError(f"cannot read: {exc}", str(path)) from None
    return parse_map_text(text, str(path), path.stem)


def available_maps() -> list[str]:
    """Names of the register maps shipped in ``osos/data/registermaps``."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


def load_map(name_or_path: str) -> RegisterMap:
    """A shipped map by name (``eastron-sdm630``) or any map file by path."""
    if name_or_path in available_maps():
        return load_map_file(MAPS_DIR / f"{name_or_path}.toml")
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return load_map_file(path)
    raise ModbusMapError(f"unknown register map; shipped maps: {', '.join(available_maps())}", name_or_path)


# ------------------------------------------------------------------------------------------------- decoding

def _raw_bytes(reg: Register, words: Sequence[int]) -> bytes:
    if len(words) != reg.count:
        raise ModbusDecodeError(f"{reg.name}: {reg.type} needs {reg.count} words, got {len(words)}")
    for i, word in enumerate(words):
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFF:
            raise ModbusDecodeError(f"{reg.name}: word {i} is not a 16-bit value: {word!r}", i * 2)
    ordered = list(words) if reg.word_order == "big" else list(reversed(words))
    out = bytearray()
    for word in ordered:
        pair = word.to_bytes(2, "big")
        out += pair if reg.byte_order == "big" else pair[::-1]
    return bytes(out)  # most significant byte first


def float32_to_decimal(raw: bytes) -> Decimal:
    """The shortest decimal that reads back to exactly this float32 (9 digits always suffice)."""
    (value,) = struct.unpack(">f", raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ModbusDecodeError(f"float32 {raw.hex()} is not a finite number")
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == raw:
            return Decimal(text)
    return Decimal(repr(value))  # pragma: no cover - 9 significant digits always round-trip a float32


def decode_register(reg: Register, words: Sequence[int]) -> Decimal | str:
    """The value of one register from its words, scaled (``Decimal``) or named by its enumeration (``str``)."""
    raw = _raw_bytes(reg, words)
    if reg.type == "float32":
        return float32_to_decimal(raw)
    number = int.from_bytes(raw, "big", signed=reg.type.startswith("s"))
    if reg.enum is not None:
        return reg.enum.get(number, f"unknown ({number})")
    return number * reg.scale


def encode_register(reg: Register, value: Decimal | int | str) -> list[int]:
    """Inverse of :func:`decode_register` (for the simulated analyzer and tests): the words the device holds."""
    if reg.enum is not None and isinstance(value, str):
        codes = [code for code, label in reg.enum.items() if label == value]
        if not codes:
            raise ModbusDecodeError(f"{reg.name}: {value!r} is not one of {sorted(reg.enum.values())}")
        number = codes[0]
        raw = number.to_bytes(reg.count * 2, "big", signed=reg.type.startswith("s"))
    elif reg.type == "float32":
        try:
            raw = struct.pack(">f", float(Decimal(value)))
        except (OverflowError, InvalidOperation):
            raise ModbusDecodeError(f"{reg.name}: {value!r} does not fit a float32") from None
    else:
        scaled = Decimal(value) / reg.scale
        if scaled != scaled.to_integral_value():
            raise ModbusDecodeError(f"{reg.name}: {value} is not a multiple of the scale {reg.scale}")
        try:
            raw = int(scaled).to_bytes(reg.count * 2, "big", signed=reg.type.startswith("s"))
        except OverflowError:
            raise ModbusDecodeError(f"{reg.name}: {value} does not fit {reg.type}") from None
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    if reg.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words if reg.word_order == "big" else list(reversed(words))


def register_words(reg: Register, words: Mapping[int, int]) -> list[int]:
    """The words of ``reg`` out of a reference-keyed word dictionary."""
    try:
        return [words[reg.reference + i] for i in range(reg.count)]
    except KeyError as exc:
        raise ModbusDecodeError(f"{reg.name}: word {exc.args[0]} was not read") from None


def decode_words(regmap: RegisterMap, words: Mapping[int, int]) -> tuple[dict[str, Decimal | str], dict[str, str]]:
    """Decode every register whose words are present; one bad register does not spoil the others.

    Returns ``(values, errors)``: ``errors`` maps a register name to the reason it has no value.
    """
    values: dict[str, Decimal | str] = {}
    errors: dict[str, str] = {}
    for reg in regmap.registers:
        try:
            values[reg.name] = decode_register(reg, register_words(reg, words))
        except ModbusDecodeError as exc:
            errors[reg.name] = exc.reason
    return values, errors


# ------------------------------------------------------------------------------------------ request planning

@dataclass(frozen=True)
class ReadRequest:
    """One read: function 04 (input) or 03 (holding) of ``count`` words from ``address``."""

    table: str
    address: int
    count: int

    @property
    def function_code(self) -> int:
        return FUNCTION_CODE[self.table]

    @property
    def reference(self) -> int:
        return TABLE_BASE[self.table] + self.address


def plan_reads(regmap: RegisterMap, names: Iterable[str] | None = None) -> list[ReadRequest]:
    """As few requests as the map allows: registers that touch are merged while the run fits the device's
    per-request limit (``link.max_registers``, at most 125). Gaps are bridged only when the map says the
    device answers unlisted addresses (``link.bridge_gaps``): many analyzers answer such a read with
    exception 02 (illegal data address)."""
    wanted = set(names) if names is not None else None
    requests: list[ReadRequest] = []
    for table in TABLES:
        regs = sorted((r for r in regmap.registers if r.table == table and (wanted is None or r.name in wanted)),
                      key=lambda r: r.address)
        start = end = -1
        for reg in regs:
            if reg.single_read:
                requests.append(ReadRequest(table, reg.address, reg.count))
                continue
            joins = reg.address == end or (regmap.bridge_gaps and reg.address > end)
            if start >= 0 and joins and reg.end - start <= regmap.max_registers:
                end = reg.end
                continue
            if start >= 0:
                requests.append(ReadRequest(table, start, end - start))
            start, end = reg.address, reg.end
        if start >= 0:
            requests.append(ReadRequest(table, start, end - start))
    return sorted(requests, key=lambda r: (TABLES.index(r.table), r.address))


# ---------------------------------------------------------------------------------------------------- alarms

_PHASES = ("l1", "l2", "l3")


def evaluate_alarms(values: Mapping[str, Decimal | str], limits: AlarmThresholds) -> list[str]:
    """HES-33 alarms from measured values, by the maps' common names.

    Names read: ``voltage_l1_n``.. (phase voltages), ``voltage_n`` (neutral-earth), ``current_l1``..,
    ``current_n``, ``power_factor_total`` (its magnitude: the sign only says lead/lag or direction) and
    ``phase_sequence`` (``"L1-L2-L3"`` is right). A quantity the analyzer does not measure raises nothing.
    Alarm codes: ``voltage_high:L1``, ``voltage_low:L2``, ``neutral_voltage_high``, ``current_high:L3``,
    ``current_low:L1``, ``neutral_current_high``, ``power_factor_low``, ``phase_sequence``.
    """

    def number(key: str) -> Decimal | None:
        value = values.get(key)
        return value if isinstance(value, Decimal) else None

    alarms: list[str] = []

    def per_phase(key: str, name: str, high: Decimal | None, low: Decimal | None) -> None:
        for phase in _PHASES:
            value = number(key.format(phase=phase))
            if value is None:
                continue
            if high is not None and value > high:
                alarms.append(f"{name}_high:{phase.upper()}")
            if low is not None and value < low:
                alarms.append(f"{name}_low:{phase.upper()}")

    per_phase("voltage_{phase}_n", "voltage", limits.voltage_high, limits.voltage_low)
    neutral_v = number("voltage_n")
    if neutral_v is not None and limits.neutral_voltage_high is not None and neutral_v > limits.neutral_voltage_high:
        alarms.append("neutral_voltage_high")
    per_phase("current_{phase}", "current", limits.current_high, limits.current_low)
    neutral_a = number("current_n")
    if neutral_a is not None and limits.neutral_current_high is not None and neutral_a > limits.neutral_current_high:
        alarms.append("neutral_current_high")
    pf = number("power_factor_total")
    if pf is not None and limits.power_factor_low is not None and abs(pf) < limits.power_factor_low:
        alarms.append("power_factor_low")
    sequence = values.get("phase_sequence")
    if isinstance(sequence, str) and sequence != "L1-L2-L3":
        alarms.append("phase_sequence")
    return alarms


# ---------------------------------------------------------------------------------------- captured responses

def decode_response_pdu(pdu: bytes, count: int | None = None) -> list[int]:
    """Register words out of a read-registers response PDU (function code, byte count, data).

    Exception responses (function code | 0x80) become a :class:`ModbusDecodeError` naming the exception code.
    """
    if len(pdu) < 2:
        raise ModbusDecodeError("response PDU too short", len(pdu))
    function = pdu[0]
    if function & 0x80:
        raise ModbusDecodeError(f"exception response to function {function & 0x7F:#04x}: code {pdu[1]:#04x}", 1)
    if function not in (3, 4):
        raise ModbusDecodeError(f"function {function:#04x} is not a register read", 0)
    byte_count = pdu[1]
    if byte_count % 2 or len(pdu) != 2 + byte_count:
        raise ModbusDecodeError(f"byte count {byte_count} does not match {len(pdu) - 2} data bytes", 1)
    if count is not None and byte_count != 2 * count:
        raise ModbusDecodeError(f"asked for {count} registers, got {byte_count // 2}", 1)
    return [int.from_bytes(pdu[i:i + 2], "big") for i in range(2, len(pdu), 2)]


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) as sent: low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def split_frame(data: bytes) -> tuple[str, int, bytes]:
    """``(framing, unit, pdu)`` of one captured frame: Modbus TCP (MBAP header) or RTU (CRC checked)."""
    if len(data) >= 8 and data[2:4] == b"\x00\x00" and int.from_bytes(data[4:6], "big") == len(data) - 6:
        return "tcp", data[6], data[7:]
    if len(data) < 4:
        raise ModbusDecodeError("frame too short for RTU (unit, function, CRC)", len(data))
    if crc16_modbus(data[:-2]) != int.from_bytes(data[-2:], "little"):
        raise ModbusDecodeError("neither an MBAP frame nor an RTU frame with a good CRC", len(data) - 2)
    return "rtu", data[0], data[1:-2]


def decode_frame(data: bytes, regmap: RegisterMap | None = None, table: str = "input",
                 address: int | None = None) -> dict[str, Any]:
    """A captured read response as JSON-ready data; with a map and the request's start address, named values."""
    framing, unit, pdu = split_frame(data)
    words = decode_response_pdu(pdu)
    out: dict[str, Any] = {"framing": framing, "unit": unit, "function": pdu[0], "words": words}
    if table not in TABLES:
        raise ModbusDecodeError(f"table {table!r} is not one of {', '.join(TABLES)}")
    if regmap is not None and address is not None:
        base = TABLE_BASE[table] + address
        by_ref = {base + i: w for i, w in enumerate(words)}
        values, _errors = decode_words(regmap, by_ref)
        out["values"] = {k: str(v) for k, v in values.items()}
    return out


def decode_to_json(data: bytes, key: bytes | None = None) -> dict[str, Any]:
    """``osos decode --protocol modbus``: a read-registers response frame (RTU or TCP) to its words.

    Naming the words needs the map and the request's start address: ``osos modbus decode`` takes those.
    """
    return decode_frame(data)
