"""Brand profiles of the simulated IEC meters (the ``[kinds]`` part of ``osos/data/meters/*.toml``, the meter
library shared with ``osos.meterlib``) and how a brand prints each OBIS register.

A new brand is a TOML file, not code (AMR-7). The profile fixes the flag code, the highest baud rate, the
register set per meter kind (AMR-2, AMR-3) and the number formats (leading zeros, 3 decimals). It holds no
password: each simulated meter has its own (``SimMeter.password``), as a real meter would.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from osos.field.meters.model import KINDS, MeterModel

#: IEC 62056-21 baud-rate characters of mode C (Z in the identification and in the ACK option)
BAUD_CHARS = {300: "0", 600: "1", 1200: "2", 2400: "3", 4800: "4", 9600: "5", 19200: "6"}

ENERGY_REGISTERS = {f"{q}.8.{t}" for q in (1, 2) for t in range(5)}
REACTIVE_REGISTERS = {"5.8.0", "6.8.0", "7.8.0", "8.8.0"}
KNOWN_REGISTERS = (
    {"0.0.0", "C.1.0", "0.9.1", "0.9.2", "1.6.0", "F.F.0", "96.70", "96.71"}
    | {f"C.7.{i}" for i in range(4)}
    | ENERGY_REGISTERS
    | REACTIVE_REGISTERS
)


class BrandError(ValueError):
    """A brand profile file that is missing fields or names registers the simulator cannot produce."""


@dataclass(frozen=True)
class BrandProfile:
    key: str
    name: str
    flag: str
    max_baud: int
    date_format: str
    time_format: str
    stamp_format: str
    energy_int_digits: int
    demand_int_digits: int
    models: dict[str, str]
    registers: dict[str, tuple[str, ...]]
    source: str = ""

    @property
    def baud_char(self) -> str:
        return BAUD_CHARS[self.max_baud]

    def ident(self, kind: str) -> str:
        """The identification text after ``/``: flag, baud character, model (no CR LF)."""
        return f"{self.flag}{self.baud_char}{self.models[kind]}"

    # ------------------------------------------------------------------ register printing (AMR-2)
    def _energy(self, wh: int) -> str:
        return f"{wh // 1000:0{self.energy_int_digits}d}.{wh % 1000:03d}"

    def _stamp(self, meter: MeterModel, t: object) -> str:
        if t is None:
            return ""
        return meter.local(t).strftime(self.stamp_format)  # type: ignore[arg-type]

    def render(self, meter: MeterModel, obis: str) -> list[tuple[str, str | None]]:
        """The value groups of one data line as (value, unit) pairs, exactly as the meter prints them."""
        if obis in ("0.0.0", "C.1.0"):
            return [(meter.serial, None)]
        if obis == "0.9.1":
            return [(meter.meter_time().strftime(self.time_format), None)]
        if obis == "0.9.2":
            return [(meter.meter_time().strftime(self.date_format), None)]
        if obis in ENERGY_REGISTERS:
            direction, _, tariff = obis.split(".")
            wh = meter.import_wh(int(tariff)) if direction == "1" else meter.export_wh(int(tariff))
            return [(self._energy(wh), "kWh")]
        if obis in REACTIVE_REGISTERS:
            return [(self._energy(meter.reactive_varh(obis)), "kvarh")]
        if obis == "1.6.0":
            w = meter.max_demand_w
            kw = f"{w // 1000:0{self.demand_int_digits}d}.{w % 1000:03d}"
            return [(kw, "kW"), (self._stamp(meter, meter.max_demand_at), None)]
        if obis == "F.F.0":
            return [(f"{meter.ff_code():016X}", None)]
        if obis.startswith("C.7."):
            index = int(obis.rsplit(".", 1)[1])
            phase = "3P" if index == 0 else f"L{index}"
            if phase == "3P" and meter.kind == "single-phase":
                phase = "L1"
            return [(f"{meter.outage_count.get(phase, 0):04d}", None)]
        if obis == "96.70":
            return [(self._stamp(meter, meter.top_cover_first_open), None)]
        if obis == "96.71":
            if not meter.terminal_cover_months:
                return [("", None), ("0000", None)]
            first, count = meter.terminal_cover_months[next(reversed(meter.terminal_cover_months))]
            return [(self._stamp(meter, first), None), (f"{count:04d}", None)]
        raise BrandError(f"register {obis} is not simulated")

    def readout(self, meter: MeterModel) -> list[tuple[str, list[tuple[str, str | None]]]]:
        """All data lines of the mode C readout, in the brand's order."""
        return [(obis, self.render(meter, obis)) for obis in self.registers[meter.kind]]


def _parse(key: str, data: dict) -> BrandProfile:
    try:
        kinds = data["kinds"]
        profile = BrandProfile(
            key=key,
            name=str(data["name"]),
            flag=str(data["flag"]),
            max_baud=int(data["max_baud"]),
            date_format=str(data["date_format"]),
            time_format=str(data["time_format"]),
            stamp_format=str(data["stamp_format"]),
            energy_int_digits=int(data["energy_int_digits"]),
            demand_int_digits=int(data["demand_int_digits"]),
            models={kind: str(kinds[kind]["model"]) for kind in KINDS},
            registers={kind: tuple(kinds[kind]["registers"]) for kind in KINDS},
            source=str(data.get("source", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BrandError(f"brand {key}: missing or bad field {exc}") from None
    if len(profile.flag) != 3 or not profile.flag.isalpha():
        raise BrandError(f"brand {key}: flag must be three letters, got {profile.flag!r}")
    if profile.max_baud not in BAUD_CHARS:
        raise BrandError(f"brand {key}: max_baud {profile.max_baud} is not a mode C rate")
    for kind, regs in profile.registers.items():
        unknown = set(regs) - KNOWN_REGISTERS
        if unknown:
            raise BrandError(f"brand {key} ({kind}): registers not simulated: {sorted(unknown)}")
    return profile


@cache
def load_brands() -> dict[str, BrandProfile]:
    """All simulated brand profiles, keyed by file stem (``elektromed``, ``makel``, ``viko``)."""
    folder = resources.files("osos.data").joinpath("meters")
    brands = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            key = entry.name[: -len(".toml")]
            data = tomllib.loads(entry.read_text("utf-8"))
            if "kinds" in data:  # only profiles with simulator tables are simulated brands
                brands[key] = _parse(key, data)
    return brands


def brand(key: str) -> BrandProfile:
    brands = load_brands()
    if key not in brands:
        raise BrandError(f"unknown brand {key!r}; known: {', '.join(brands)}")
    return brands[key]

