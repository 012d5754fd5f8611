"""libmbus corpus: every test frame decodes to libmbus's expected records (covers HES-40).

Expected values come from libmbus's own decoder output shipped with the frames (``NAME.norm.xml``:
function, storage number, tariff, device/sub-unit, normalized unit, quantity, value). libmbus
prints values as C doubles with ``%f``; we decode exactly (int/Decimal) and compare after rounding
to the same 6 decimals. Error frames must raise MBusError with a position.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from osos.protocols.mbus import MBusError, decode, parse_frame, read_input

# Vendored from rscada/libmbus (BSD-3; LICENSE and SOURCE_COMMIT beside the frames), so every clone runs it.
CORPUS = Path(__file__).resolve().parents[1] / "data" / "libmbus"
FRAMES = sorted((CORPUS / "test-frames").glob("*.hex"))
ERRORS = sorted((CORPUS / "error-frames").glob("*.hex"))
if not FRAMES or not ERRORS:  # part of the repository: missing frames are a broken checkout, never a skip
    raise RuntimeError(f"libmbus frames missing under {CORPUS}")

# Documented exceptions: frame -> reason. Kept short; see docs/mbus.md.
EXCEPTIONS: dict[str, str] = {}
# (frame, record index) -> reason. BCD fields holding hex digits A-F (not a BCD number): libmbus
# sums the nibbles into an invented number, we keep the digits as hex text instead.
RECORD_EXCEPTIONS: dict[tuple[str, int], str] = {
    ("ELS_Elster-F96-Plus", 4): "BCD field DDDDEBBD holds non-decimal digits",
    ("ELS_Elster-F96-Plus", 5): "BCD field DDEBBD holds non-decimal digits",
    ("abb_f95", 2): "BCD field DDEBB4DD holds non-decimal digits",
    ("abb_f95", 3): "BCD field EBB4DD holds non-decimal digits",
}


def mbus_frame_ci(path: Path) -> int | None:
    return parse_frame(read_input(path.read_bytes())).ci


def _load(path: Path) -> ET.Element:
    # the files declare ISO-8859-1 but hold UTF-8 ("°C"): decode as UTF-8 ourselves
    return ET.fromstring(path.read_bytes().decode("utf-8").split("?>", 1)[1])


def _expected(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    stem = path.name[: -len(".hex")]
    norm = _load(path.with_name(stem + ".norm.xml"))
    plain = _load(path.with_name(stem + ".xml")).findall("DataRecord")
    slave = {child.tag: (child.text or "") for child in norm.find("SlaveInformation")}
    records = []
    for k, rec in enumerate(norm.findall("DataRecord")):
        fields = {child.tag: (child.text or "") for child in rec}
        if not fields:  # libmbus could not normalize (reserved VIF): use its raw record instead
            fields = {child.tag: (child.text or "") for child in plain[k]}
            fields["raw"] = "1"
        records.append(fields)
    return slave, records


_FUNCTION = {"instantaneous": "Instantaneous value", "maximum": "Maximum value",
             "minimum": "Minimum value", "error": "Value during error state",
             "manufacturer": "Manufacturer specific", "more_records": "More records follow"}


def _six(value: Decimal | int) -> str:
    return str(Decimal(value).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def _value_matches(ours, record, expected: str) -> bool:
    if record.data_type in ("manufacturer", "binary"):
        return expected.replace(" ", "") == ours
    if record.data_type in ("date", "datetime"):
        if ours is None:  # IV bit set: libmbus prints a zeroed struct tm
            return expected.startswith("1900-01-00")
        return expected.rstrip("Z") == ours
    if record.data_type in ("text", "none"):
        return expected == (ours or "")
    if ours is None:
        return False
    exp = Decimal(expected)
    # doubles: allow the last printed digit to differ for values beyond double precision
    tolerance = max(Decimal("0.000001"), abs(exp) * Decimal("1e-15"))
    return abs(Decimal(ours) - exp) <= tolerance or _six(ours) == expected


# libmbus's fixed-structure unit strings -> (our normalized unit, factor), written from EN 1434-3
_FIXED_UNITS = {"Wh": ("Wh", Decimal(1)), "kWh": ("Wh", Decimal(1000)), "MWh": ("Wh", Decimal(10**6)),
                "ml": ("m^3", Decimal("1e-6")), "l": ("m^3", Decimal("0.001")), "m^3": ("m^3", Decimal(1)),
                "W": ("W", Decimal(1)), "kW": ("W", Decimal(1000))}


def compare_fixed(path: Path) -> list[str]:
    """Fixed data structure (CI 73h): libmbus prints raw counters with their unit names."""
    root = _load(path.with_name(path.name[: -len(".hex")] + ".xml"))
    slave = {child.tag: (child.text or "") for child in root.find("SlaveInformation")}
    telegram = decode(read_input(path.read_bytes()))
    h = telegram.header
    diffs = []
    if h is None:
        return ["no header decoded"]
    for tag, ours in (("Id", h.id.lstrip("0")), ("Medium", h.medium_name),
                      ("AccessNumber", str(h.access_number)), ("Status", f"{h.status:02X}")):
        if slave[tag] != ours:
            diffs.append(f"header {tag}: ours {ours!r} libmbus {slave[tag]!r}")
    unit1 = None
    for record, exp in zip(telegram.records, root.findall("DataRecord"), strict=True):
        fields = {child.tag: (child.text or "") for child in exp}
        unit = fields["Unit"]
        if unit == "reserved but historic":  # 3Eh: counter 1's unit, stored value
            unit = unit1
        unit1 = unit
        prefix, _, base = unit.rpartition(" ")
        our_unit, factor = _FIXED_UNITS[base]
        expected = Decimal(fields["Value"]) * factor * (Decimal(prefix) if prefix else 1)
        if (record.unit, record.value) != (our_unit, expected):
            diffs.append(f"record {record.index}: ours {record.value} {record.unit} libmbus {fields}")
        stored = fields["Function"] == "Stored value" or fields["Unit"] == "reserved but historic"
        if record.storage != int(stored):
            diffs.append(f"record {record.index}: storage {record.storage}, libmbus {fields['Function']}")
    return diffs


def compare(path: Path) -> list[str]:
    """All differences between our decode and libmbus's normalized XML for one frame."""
    if mbus_frame_ci(path) == 0x73:
        return compare_fixed(path)
    slave, expected = _expected(path)
    telegram = decode(read_input(path.read_bytes()))
    diffs: list[str] = []
    h = telegram.header
    if h is None:
        return ["no header decoded"]
    for tag, ours in (("Id", h.id.lstrip("0") or "0"), ("Manufacturer", h.manufacturer),
                      ("Version", str(h.version)), ("Medium", h.medium_name),
                      ("AccessNumber", str(h.access_number)), ("Status", f"{h.status:02X}"),
                      ("Signature", f"{h.signature:04X}")):
        if tag in slave and slave[tag] != ours:
            diffs.append(f"header {tag}: ours {ours!r} libmbus {slave[tag]!r}")
    if len(telegram.records) != len(expected):
        diffs.append(f"record count: ours {len(telegram.records)} libmbus {len(expected)}")
    for record, exp in zip(telegram.records, expected, strict=False):
        where = f"record {record.index}"
        if (path.name[: -len(".hex")], record.index) in RECORD_EXCEPTIONS:
            continue
        if _FUNCTION[record.function] != exp["Function"]:
            diffs.append(f"{where} function: ours {record.function} libmbus {exp['Function']}")
        if record.function in ("manufacturer", "more_records"):
            if not _value_matches(record.value, record, exp.get("Value", "")):
                diffs.append(f"{where} value: ours {record.value} libmbus {exp.get('Value')}")
            continue
        if int(exp["StorageNumber"]) != record.storage:
            diffs.append(f"{where} storage: ours {record.storage} libmbus {exp['StorageNumber']}")
        if int(exp.get("Tariff", "0")) != record.tariff:
            diffs.append(f"{where} tariff: ours {record.tariff} libmbus {exp.get('Tariff')}")
        if int(exp.get("Device", "0")) != record.subunit:
            diffs.append(f"{where} subunit: ours {record.subunit} libmbus {exp.get('Device')}")
        if "raw" in exp:  # only libmbus's unnormalized record: value is the raw number
            if str(record.value) != exp["Value"]:
                diffs.append(f"{where} value: ours {record.value} libmbus raw {exp['Value']}")
            continue
        if exp["Unit"] != record.unit:
            diffs.append(f"{where} unit: ours {record.unit!r} libmbus {exp['Unit']!r}")
        if exp["Quantity"] != record.quantity:
            diffs.append(f"{where} quantity: ours {record.quantity!r} libmbus {exp['Quantity']!r}")
        if not _value_matches(record.value, record, exp["Value"]):
            diffs.append(f"{where} value: ours {record.value!r} ({record.data_type}) libmbus {exp['Value']!r}")
    return diffs


@pytest.mark.parametrize("path", FRAMES, ids=[p.stem for p in FRAMES])
def test_frame_matches_libmbus(path: Path) -> None:
    # covers HES-40: wired M-Bus records and values as libmbus decodes them
    if path.stem in EXCEPTIONS:
        with pytest.raises(MBusError):
            decode(read_input(path.read_bytes()))
        return
    assert compare(path) == []


@pytest.mark.parametrize("path", ERRORS, ids=[p.stem for p in ERRORS])
def test_error_frame_rejected(path: Path) -> None:
    # covers HES-6: malformed input is refused with a reason and a byte position
    with pytest.raises(MBusError) as info:
        decode(read_input(path.read_bytes()))
    assert info.value.reason
    assert info.value.position is not None and info.value.position >= 0
