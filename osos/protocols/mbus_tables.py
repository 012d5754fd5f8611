"""VIF/VIFE and device-type tables of EN 13757-3, loaded once from ``osos/data/mbus/vif.toml``.

Kept as data so a missing code is a one-line TOML fix, not a code change (covers HES-40).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class VifInfo:
    """What one VIF code means: quantity name, normalized unit, multiplier, and data kind."""

    quantity: str
    unit: str
    factor: Decimal
    kind: str = "number"  # "number" | "date" | "datetime"


@dataclass(frozen=True)
class Tables:
    primary: dict[int, VifInfo]
    fd: dict[int, VifInfo]
    fb: dict[int, VifInfo]
    combinable: dict[int, str]
    device_types: dict[int, tuple[str, str]]
    fixed: dict[int, VifInfo]
    fixed_media: dict[int, str]


def _expand(entries: list[dict]) -> dict[int, VifInfo]:
    out: dict[int, VifInfo] = {}
    for entry in entries:
        count = int(entry["count"])
        factors = entry.get("factors")
        units = str(entry["unit"]).split("|")
        for n in range(count):
            if factors is not None:
                factor = Decimal(factors[n])
            elif "exp0" in entry:
                factor = Decimal(1).scaleb(int(entry["exp0"]) + n)
            else:
                factor = Decimal(1)
            unit = units[n] if len(units) == count else units[0]
            out[int(entry["code"]) + n] = VifInfo(
                entry["quantity"], unit, factor, entry.get("kind", "number")
            )
    return out


@cache
def tables() -> Tables:
    """Parse the TOML once per process."""
    path = Path(__file__).resolve().parent.parent / "data" / "mbus" / "vif.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return Tables(
        primary=_expand(raw["primary"]),
        fd=_expand(raw["fd"]),
        fb=_expand(raw["fb"]),
        combinable={int(k, 16): v for k, v in raw["combinable"].items()},
        device_types={int(k, 16): (v[0], v[1]) for k, v in raw["device_types"].items()},
        fixed=_expand(raw["fixed"]),
        fixed_media={int(k, 16): v for k, v in raw["fixed_media"].items()},
    )


def device_type(code: int) -> tuple[str, str]:
    """(long name, short OMS media label) of a device-type/medium byte."""
    return tables().device_types.get(code, (f"Reserved (0x{code:02X})", "reserved"))


def manufacturer_code(value: int) -> str:
    """Three-letter FLAG code from the 16-bit M field (EN 13757-3 / EN 62056-21 letters)."""
    return "".join(chr(((value >> shift) & 0x1F) + 64) for shift in (10, 5, 0))
