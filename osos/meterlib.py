"""The meter library (AMR-7): one profile per brand/type, read from ``osos/data/meters/*.toml``.

A profile says how to reach a meter (protocol, speeds, framing, addressing, authentication level), what a short
read takes (IEC register addresses, DLMS OBIS + interface class, or Modbus register names), its load profiles,
whether it has a relay, and its quirks. The gateway builds its standard directives from it
(``osos.field.directive_library``) and the head-end uses it to choose what to send. Pure: it only reads the
package's data files. Secrets are never here: a profile says which authentication a meter needs (``auth``); the
password or keys themselves live only in the gateway's secret store (``osos.field.secrets``), per meter.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

PROTOCOLS = ("iec62056-21", "dlms", "modbus", "mbus")
AUTH_LEVELS = ("none", "p1", "lls", "hls-gmac")
FRAMINGS = ("7E1", "8N1", "8E1", "7E2", "8N2")
GENERIC_IEC = "generic-iec"


class MeterLibraryError(ValueError):
    """A profile file with a missing or bad key (the message names the file and the key), or an unknown key."""


@dataclass(frozen=True)
class CosemRef:
    """One COSEM object a directive reads: OBIS code and interface class (attribute 2 is the value)."""

    obis: str
    class_id: int

    @property
    def attributes(self) -> tuple[int, ...]:
        """Register/extended register (class 3/4) also need attribute 3, the scaler and unit."""
        return (2, 3) if self.class_id in (3, 4) else (2,)


@dataclass(frozen=True)
class LoadProfile:
    name: str  # IEC: "P.01"; DLMS: the profile generic's OBIS
    period_min: int | None = None


@dataclass(frozen=True)
class MeterProfile:
    key: str
    name: str
    flag: str
    protocol: str
    source: str
    models: tuple[str, ...]
    init_baud: int
    max_baud: int
    framing: str
    auth: str
    short_read: tuple[str, ...] = ()  # IEC addresses or Modbus register names
    short_read_objects: tuple[CosemRef, ...] = ()  # DLMS
    load_profiles: tuple[LoadProfile, ...] = ()
    relay: CosemRef | None = None
    clock: tuple[str, ...] | CosemRef | None = None
    address: str = ""
    quirks: tuple[str, ...] = ()
    illustrative: tuple[str, ...] = ()
    dlms: dict[str, Any] = field(default_factory=dict)
    modbus: dict[str, Any] = field(default_factory=dict)
    mbus: dict[str, Any] = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return int(self.framing[0])

    @property
    def parity(self) -> str:
        return self.framing[1]

    @property
    def stop(self) -> int:
        return int(self.framing[2])


def _need(data: dict[str, Any], key: str, kind: type, origin: str) -> Any:
    if key not in data:
        raise MeterLibraryError(f"{origin}: missing key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MeterLibraryError(f"{origin}: key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _cosem(raw: Any, origin: str, key: str) -> CosemRef:
    if not isinstance(raw, dict) or not isinstance(raw.get("obis"), str):
        raise MeterLibraryError(f"{origin}: {key} entries need an obis string, got {raw!r}")
    parts = raw["obis"].split(".")
    if len(parts) != 6 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise MeterLibraryError(f"{origin}: {key}: OBIS {raw['obis']!r} is not A.B.C.D.E.F")
    class_id = raw.get("class", 1)
    if not isinstance(class_id, int) or not 1 <= class_id <= 0xFFFF:
        raise MeterLibraryError(f"{origin}: {key}: class {class_id!r} is not an interface class")
    return CosemRef(raw["obis"], class_id)


def parse_profile(key: str, data: dict[str, Any], origin: str = "") -> MeterProfile:
    """Check and convert one profile document; errors name ``origin`` (the file) and the key."""
    origin = origin or f"{key}.toml"
    secrets = sorted({"password", "ek", "ak", "key"} & set(data))
    if secrets:  # HES-56: a data file shipped to every installation holds no meter secret
        raise MeterLibraryError(f"{origin}: key {secrets[0]!r} not allowed: meter secrets live in the gateway's "
                                "secret store, per meter")
    protocol = _need(data, "protocol", str, origin)
    if protocol not in PROTOCOLS:
        raise MeterLibraryError(f"{origin}: key 'protocol' must be one of {PROTOCOLS}, got {protocol!r}")
    flag = _need(data, "flag", str, origin)
    if flag and (len(flag) != 3 or not flag.isalpha() or not flag.isupper()):
        raise MeterLibraryError(f"{origin}: key 'flag' must be three capital letters (or empty), got {flag!r}")
    framing = _need(data, "framing", str, origin)
    if framing not in FRAMINGS:
        raise MeterLibraryError(f"{origin}: key 'framing' must be one of {FRAMINGS}, got {framing!r}")
    auth = _need(data, "auth", str, origin)
    if auth not in AUTH_LEVELS:
        raise MeterLibraryError(f"{origin}: key 'auth' must be one of {AUTH_LEVELS}, got {auth!r}")
    init_baud, max_baud = _need(data, "init_baud", int, origin), _need(data, "max_baud", int, origin)
    if not 300 <= init_baud <= max_baud:
        raise MeterLibraryError(f"{origin}: keys 'init_baud'/'max_baud' must satisfy 300 <= init <= max")
    short = _need(data, "short_read", list, origin)
    profiles = data.get("load_profiles", [])
    relay = data.get("relay", False)
    clock = data.get("clock")
    fields: dict[str, Any] = {}
    if protocol == "dlms":
        fields["short_read_objects"] = tuple(_cosem(r, origin, "short_read") for r in short)
        fields["load_profiles"] = tuple(
            LoadProfile(_cosem(p, origin, "load_profiles").obis, p.get("period_min")) for p in profiles)
        fields["relay"] = _cosem({"class": 70, **relay}, origin, "relay") if relay else None
        fields["clock"] = _cosem({"class": 8, **clock}, origin, "clock") if clock else None
        dlms = _need(data, "dlms", dict, origin)
        if dlms.get("transport") not in ("wrapper", "hdlc"):
            raise MeterLibraryError(f"{origin}: key 'dlms.transport' must be 'wrapper' or 'hdlc'")
        if not isinstance(dlms.get("client_sap"), int):
            raise MeterLibraryError(f"{origin}: key 'dlms.client_sap' must be an integer")
        fields["dlms"] = dict(dlms)
    else:
        if not all(isinstance(r, str) for r in short):
            raise MeterLibraryError(f"{origin}: key 'short_read' must list register names")
        fields["short_read"] = tuple(short)
        fields["load_profiles"] = tuple(LoadProfile(str(p)) for p in profiles)
        if relay:
            raise MeterLibraryError(f"{origin}: key 'relay': only DLMS profiles describe a relay object")
        fields["clock"] = tuple(clock) if clock else None
    if protocol == "modbus":
        modbus = _need(data, "modbus", dict, origin)
        if not isinstance(modbus.get("map"), str):
            raise MeterLibraryError(f"{origin}: key 'modbus.map' must name a register map")
        fields["modbus"] = dict(modbus)
    if protocol == "mbus":
        fields["mbus"] = dict(_need(data, "mbus", dict, origin))
    return MeterProfile(
        key=key,
        name=_need(data, "name", str, origin),
        flag=flag,
        protocol=protocol,
        source=_need(data, "source", str, origin),
        models=tuple(str(m) for m in data.get("models", [])),
        init_baud=init_baud,
        max_baud=max_baud,
        framing=framing,
        auth=auth,
        address=str(data.get("address", "")),
        quirks=tuple(str(q) for q in data.get("quirks", [])),
        illustrative=tuple(str(q) for q in data.get("illustrative", [])),
        **fields,
    )


@cache
def load_library() -> dict[str, MeterProfile]:
    """Every shipped profile, keyed by file stem."""
    folder = resources.files("osos.data").joinpath("meters")
    out: dict[str, MeterProfile] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        key = entry.name[: -len(".toml")]
        origin = f"osos/data/meters/{entry.name}"
        try:
            data = tomllib.loads(entry.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise MeterLibraryError(f"{origin}: not valid TOML: {exc}") from None
        profile = parse_profile(key, data, origin)
        if profile.protocol == "iec62056-21" and "kinds" in data:  # simulated S1 brands: models per kind
            profile = replace(profile, models=tuple(str(k["model"]) for k in data["kinds"].values()))
        out[key] = profile
    return out


def profile(key: str) -> MeterProfile:
    """The profile stored as ``osos/data/meters/<key>.toml``."""
    library = load_library()
    if key not in library:
        raise MeterLibraryError(f"no meter profile {key!r}; known: {', '.join(sorted(library))}")
    return library[key]


def profile_for(flag: str, model: str | None = None) -> MeterProfile:
    """The profile for a meter's FLAG code (and model, when a maker has several). A flag the library does not
    know gets the generic IEC 62056-21 profile under that flag (every meter speaks mode C on its optical port)."""
    flag = flag.upper()
    found = [p for p in load_library().values() if p.flag == flag]
    if model:
        exact = [p for p in found if any(model.upper().startswith(m.upper()) for m in p.models)]
        found = exact or found
    if found:
        return found[0]
    return replace(profile(GENERIC_IEC), flag=flag)
