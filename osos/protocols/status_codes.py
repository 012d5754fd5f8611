"""FF status code and GF geographic code of Turkish IEC 62056-21 meters, decoded from a data table (HES-11,
HES-28).

The bit meanings are not public in an official form; ``osos/data/alarms/ff-gf.toml`` transcribes the unverified
reading of shared/REQUIREMENTS.md (appendix) and says so. Keeping them as data means a corrected table changes
what the gateway pushes and what the head-end raises without touching code. Pure: the only I/O is loading that
packaged file, once.

FF (OBIS ``F.F.0``, also sent as ``F.F``): 64 bits written in hexadecimal, bit 0 the least significant, a set bit
raises the condition. GF (OBIS ``F.F.1``): bit fields (EDAŞ, substation, transformer, feeder, phase, branch,
maximum current), read from hexadecimal the same way.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from osos.protocols.errors import DecodeError

DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "alarms" / "ff-gf.toml"
SEVERITIES = ("critical", "warning", "info")


class StatusCodeError(DecodeError):
    """An FF/GF value that is not a hexadecimal number of the allowed width, or a broken data table."""


@dataclass(frozen=True)
class FFBit:
    bit: int
    name: str
    type: str  # normalized alarm type (osos/data/alarms/types.toml)
    severity: str  # critical | warning | info
    push: bool  # the gateway pushes it at once on the emergency topic (HES-24)
    en: str
    tr: str


@dataclass(frozen=True)
class GFField:
    name: str
    first: int
    last: int
    en: str
    tr: str

    @property
    def mask(self) -> int:
        return (1 << (self.last - self.first + 1)) - 1


@dataclass(frozen=True)
class Table:
    ff_obis: tuple[str, ...]
    ff_width: int
    ff_bits: dict[int, FFBit]
    gf_obis: tuple[str, ...]
    gf_width: int
    gf_fields: tuple[GFField, ...]
    source: str
    verified: bool


def _parse(doc: dict[str, Any], origin: str) -> Table:
    try:
        ff, gf = doc["ff"], doc["gf"]
        width = int(ff["width"])
        bits: dict[int, FFBit] = {}
        for raw in ff["bits"]:
            entry = FFBit(int(raw["bit"]), str(raw["name"]), str(raw["type"]), str(raw["severity"]),
                          bool(raw.get("push", False)), str(raw["en"]), str(raw["tr"]))
            if not 0 <= entry.bit < width or entry.bit in bits:
                raise StatusCodeError(f"{origin}: FF bit {entry.bit} out of range or listed twice")
            if entry.severity not in SEVERITIES:
                raise StatusCodeError(f"{origin}: FF bit {entry.bit}: unknown severity {entry.severity!r}")
            bits[entry.bit] = entry
        fields = tuple(GFField(str(f["name"]), int(f["first"]), int(f["last"]), str(f["en"]), str(f["tr"]))
                       for f in gf["fields"])
        gf_width = int(gf["width"])
        used = 0
        for f in fields:
            if not 0 <= f.first <= f.last < gf_width:
                raise StatusCodeError(f"{origin}: GF field {f.name} outside bits 0..{gf_width - 1}")
            span = f.mask << f.first
            if used & span:
                raise StatusCodeError(f"{origin}: GF field {f.name} overlaps another")
            used |= span
        return Table(tuple(ff["obis"]), width, bits, tuple(gf["obis"]), gf_width, fields,
                     str(ff.get("source", "")), bool(ff.get("verified", False)))
    except StatusCodeError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise StatusCodeError(f"{origin}: malformed FF/GF table: {exc!r}") from exc


@cache
def table() -> Table:
    """The packaged table, loaded once."""
    with DATA_FILE.open("rb") as fh:
        return _parse(tomllib.load(fh), str(DATA_FILE))


def parse_code(value: str | int, width: int) -> int:
    """An FF/GF register value as an integer: hexadecimal text as meters send it (``0000000000000040``), or an
    int. Refuses anything wider than ``width`` bits rather than silently dropping bits."""
    if isinstance(value, bool):
        raise StatusCodeError(f"not a status code: {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise StatusCodeError(f"not a hexadecimal status code: {value!r}")
        number = int(text, 16)
    if number < 0 or number >> width:
        raise StatusCodeError(f"status code {value!r} is wider than {width} bits")
    return number


@dataclass(frozen=True)
class FFStatus:
    value: int
    flags: tuple[FFBit, ...]  # named bits that are set, in bit order
    unknown_bits: tuple[int, ...]  # set bits the table does not name (reserved 56..63, or a gap in the table)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.flags]


def set_bits(value: int) -> list[int]:
    return [bit for bit in range(value.bit_length()) if value >> bit & 1]


def decode_ff(value: str | int) -> FFStatus:
    """FF status into its named flags (HES-28)."""
    tab = table()
    number = parse_code(value, tab.ff_width)
    flags, unknown = [], []
    for bit in set_bits(number):
        entry = tab.ff_bits.get(bit)
        if entry is None:
            unknown.append(bit)
        else:
            flags.append(entry)
    return FFStatus(number, tuple(flags), tuple(unknown))


def decode_gf(value: str | int) -> dict[str, int]:
    """GF geographic code into its named fields (HES-28), e.g. ``{"edas_id": 3, "substation_id": 120, ...}``."""
    tab = table()
    number = parse_code(value, tab.gf_width)
    return {f.name: number >> f.first & f.mask for f in tab.gf_fields}


def ff_bit(bit: int) -> FFBit | None:
    return table().ff_bits.get(bit)


def is_ff(obis: str) -> bool:
    return obis in table().ff_obis


def is_gf(obis: str) -> bool:
    return obis in table().gf_obis
