"""The S3 binary tariff image and its CRC (TAX-3, TAX-4, TAX-5).

S3 (Altunkaya 2016, §4.3-4.4) defines what a taximeter stores for each tariff: a 23-byte base record,
tier tables kept apart and referenced by bit flags, and activation parameters. This module packs a
tariff set into that layout and back, losslessly, and guards the whole image with a CRC the meter can
show (S3 Fig. 4.29). Where S3 is silent (byte order, which CRC, how the records are framed for
transfer) the choices are ours and are written down in docs/tariff-binary.md.

Two layers: ``RawImage`` mirrors the bytes one field per field (``pack_image``/``unpack_image``);
``encode``/``decode`` map the tariff model onto it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from osos.protocols.errors import DecodeError
from osos.tariff.calendar import (
    STEPS_PER_DAY,
    Activation,
    MonthDay,
    date_from_days_since_2000,
    days_since_2000,
)
from osos.tariff.errors import TariffError
from osos.tariff.model import Source, TaxiTariff, TaxiTariffSet, Tier, overlay

MAGIC = b"S3TF"
FORMAT_VERSION = 1

# Tier table capacities (S3 §4.3.4: distance flags are a WORD, the others a BYTE).
TIER_KINDS = ("distance", "time", "amount", "speed")
TIER_CAPACITY = {"distance": 16, "time": 8, "amount": 8, "speed": 8}
# S3 §4.3.5: a two-byte tier value below 10000 is a fare (1/10 minor unit), from 10000 up a unit
# distance (m/100 or yd/100) or unit time (s/64) offset by 10000.
TIER_VALUE_OFFSET = 10000
# S3 Tables 4.6-4.14: the optional new monetary step is one byte in units of 0.05 (5 minor units).
STEP_BYTE_UNIT = 5

ACTIVATION_CODES = ("N", "D", "W", "HN", "HD", "HW", "SN", "SD", "SW")

# Options byte of the "initial" record (S3 §4.2.1: tariff code, DST switching, no parameter change
# without the loader device, "and other options").
OPT_DST_AUTO = 0x01
OPT_LOCKED = 0x02  # parameters cannot be changed without the tariff loader device
OPT_ONLY_ONE_ACTIVE = 0x04  # S3 §3.3.3
OPT_YARDS = 0x08  # distances are yards, not metres (S3 Table 4.3: "metre or yard")
_OPT_KNOWN = OPT_DST_AUTO | OPT_LOCKED | OPT_ONLY_ONE_ACTIVE | OPT_YARDS

# Per-tariff OSOS extension after the 23-byte S3 record (S3 has no field for these, but the fare
# depends on them): flags, minimum fare (minor units), explicit cross-over speed (1/100 km/h, 0 = derived).
EXT_MODE_D = 0x01  # D (double) calculation instead of S (single), S3 §2.3.4-2.3.5
EXT_CHARGE_STARTED = 0x02  # a unit is charged as it starts ("or part thereof"), not when completed
_EXT_KNOWN = EXT_MODE_D | EXT_CHARGE_STARTED

_BASE = struct.Struct("<8HcBHBBB")  # 23 bytes, S3 Table 4.5 order
_EXT = struct.Struct("<BHH")  # 5 bytes
# magic, version, tariff code, options, currency (ISO 4217), decimals, year, five counts
_HEAD = struct.Struct("<4sBHB3sBH5B")
_ACT = struct.Struct("<BHH14B")  # 19 bytes
_TIER = {
    "distance": struct.Struct("<BIHHB"),  # 10 bytes: target, limit LONG (m|yd), a, b, step
    "time": struct.Struct("<BHHHB"),  # 8 bytes: target, limit WORD (s), a, b, step
    "amount": struct.Struct("<BIHHB"),  # 10 bytes: target, limit LONG (1/10 minor unit), a, b, step
    "speed": struct.Struct("<BBBHHB"),  # 8 bytes: target, km/h BYTE, dwell s BYTE, a, b, step
}
_CRC = struct.Struct("<H")

assert _BASE.size == 23 and _ACT.size == 19


class TariffBinaryError(TariffError, DecodeError):
    """A tariff image that cannot be built or read; ``position`` is the byte offset when decoding."""


# --- CRC -------------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/IBM-3740 (a.k.a. CRC-16/CCITT-FALSE): poly 0x1021, init 0xFFFF, no reflection, no xorout.

    S3 only says "CRC"; this is the common 16-bit CRC of small 8-bit meters, and 16 bits fit the
    four-digit hexadecimal CRC display of S3 Fig. 4.29. Catalogue check value: "123456789" -> 0x29B1.
    """
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


# --- raw records: one field per stored field -----------------------------------------------------


@dataclass(frozen=True)
class RawBase:
    """The 23-byte tariff record in S3 units (Table 4.3/4.5)."""

    opening_fare: int  # minor units (kuruş)
    opening_distance: int  # m/10 or yd/10
    opening_time: int  # s/16
    unit_distance_fare: int  # 1/10 minor unit
    unit_time_fare: int  # 1/10 minor unit
    unit_extra: int  # 1/10 minor unit
    unit_distance: int  # m/100 or yd/100
    unit_time: int  # s/64
    tariff_no: str  # '1'..'9', 'A'..'Z'
    max_extra: int  # count
    distance_flags: int  # WORD, tier 1 = most significant bit (S3 Fig. 4.14)
    time_flags: int  # BYTE, tier 1 = most significant bit (S3 Fig. 4.15)
    amount_flags: int
    speed_flags: int
    ext_flags: int = 0  # OSOS extension: EXT_MODE_D, EXT_CHARGE_STARTED
    minimum_fare: int = 0  # OSOS extension: minor units
    crossover: int = 0  # OSOS extension: 1/100 km/h, 0 = derived from the fares


@dataclass(frozen=True)
class RawTier:
    """One tier record. ``target`` 0 keeps the tariff number, else its ASCII code (S3 §4.3.5)."""

    target: int
    limit: int  # distance m|yd, time s, amount 1/10 minor unit, speed km/h
    value_distance: int  # < 10000 fare (1/10 minor unit) else 10000 + unit distance (m/100)
    value_time: int  # < 10000 fare (1/10 minor unit) else 10000 + unit time (s/64)
    step: int  # new monetary step in units of 0.05 (5 minor units); 0 = unchanged
    dwell: int = 0  # speed tiers only: seconds above the limit before the tier applies


@dataclass(frozen=True)
class RawActivation:
    """Activation parameters (S3 Table 4.19): kind, dates, seven start/end pairs in 15-min steps."""

    kind: str
    date_from: int  # H kinds: day + 256*month; S kinds: days since 2000-01-01; else 0
    date_to: int
    steps: tuple[int, ...]  # 14 values: Monday start, Monday end, ... Sunday end


@dataclass
class RawImage:
    """A whole tariff set as loaded into one taximeter."""

    tariff_code: int
    options: int
    currency: str = "XXX"
    decimals: int = 2
    year: int = 0
    tariffs: list[tuple[RawBase, list[RawActivation]]] = field(default_factory=list)
    tiers: dict[str, list[RawTier]] = field(default_factory=lambda: {k: [] for k in TIER_KINDS})


def _valid_tariff_no(ch: str) -> bool:
    return len(ch) == 1 and ("1" <= ch <= "9" or "A" <= ch <= "Z")


def pack_image(image: RawImage) -> bytes:
    """RawImage -> bytes with the trailing CRC. Raises TariffBinaryError naming the bad field."""
    if image.options & ~_OPT_KNOWN & 0xFF or not 0 <= image.options <= 0xFF:
        raise TariffBinaryError(f"options byte {image.options:#x} has unknown bits")
    _check_range("tariff_code", image.tariff_code, 0xFFFF)
    _check_range("year", image.year, 0xFFFF)
    _check_range("decimals", image.decimals, 3)
    if len(image.currency) != 3 or not image.currency.isascii() or not image.currency.isalpha():
        raise TariffBinaryError(f"currency {image.currency!r} is not a three-letter ISO 4217 code")
    if not 1 <= len(image.tariffs) <= 35:
        raise TariffBinaryError(f"a tariff set holds 1..35 tariffs, got {len(image.tariffs)}")
    counts = []
    for kind in TIER_KINDS:
        n = len(image.tiers.get(kind, []))
        if n > TIER_CAPACITY[kind]:
            raise TariffBinaryError(f"{n} {kind} tiers: the format holds at most {TIER_CAPACITY[kind]}")
        counts.append(n)
    out = bytearray(_HEAD.pack(MAGIC, FORMAT_VERSION, image.tariff_code, image.options,
                               image.currency.encode("ascii"), image.decimals, image.year, len(image.tariffs), *counts))
    for base, activations in image.tariffs:
        out += _pack_base(base, counts)
        if len(activations) > 255:
            raise TariffBinaryError(f"tariff {base.tariff_no}: more than 255 activations")
        out.append(len(activations))
        for act in activations:
            out += _pack_activation(base.tariff_no, act)
    for kind in TIER_KINDS:
        for i, tier in enumerate(image.tiers.get(kind, []), start=1):
            out += _pack_tier(kind, i, tier)
    out += _CRC.pack(crc16(bytes(out)))
    return bytes(out)


def _check_range(name: str, value: int, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise TariffBinaryError(f"{name} = {value!r} does not fit the format (0..{maximum})")


def _pack_base(base: RawBase, counts: list[int]) -> bytes:
    where = f"tariff {base.tariff_no!r}"
    if not _valid_tariff_no(base.tariff_no):
        raise TariffBinaryError(f"{where}: tariff number must be one of 1-9, A-Z")
    if base.ext_flags & ~_EXT_KNOWN or not 0 <= base.ext_flags <= 0xFF:
        raise TariffBinaryError(f"{where}: extension flags {base.ext_flags:#x} have unknown bits")
    _check_range(f"{where} minimum_fare", base.minimum_fare, 0xFFFF)
    _check_range(f"{where} crossover", base.crossover, 0xFFFF)
    for name in ("opening_fare", "opening_distance", "opening_time", "unit_distance_fare", "unit_time_fare",
                 "unit_extra", "unit_distance", "unit_time", "distance_flags"):
        _check_range(f"{where} {name}", getattr(base, name), 0xFFFF)
    for name in ("max_extra", "time_flags", "amount_flags", "speed_flags"):
        _check_range(f"{where} {name}", getattr(base, name), 0xFF)
    for kind, flags, width, n in zip(
        TIER_KINDS,
        (base.distance_flags, base.time_flags, base.amount_flags, base.speed_flags),
        (16, 8, 8, 8),
        counts,
        strict=True,
    ):
        if flags & ((1 << (width - n)) - 1):
            raise TariffBinaryError(f"{where}: {kind} tier flags {flags:#x} name a tier that is not in the table")
    return _BASE.pack(
        base.opening_fare, base.opening_distance, base.opening_time, base.unit_distance_fare,
        base.unit_time_fare, base.unit_extra, base.unit_distance, base.unit_time,
        base.tariff_no.encode("ascii"), base.max_extra, base.distance_flags, base.time_flags,
        base.amount_flags, base.speed_flags,
    ) + _EXT.pack(base.ext_flags, base.minimum_fare, base.crossover)


def _pack_activation(tariff_no: str, act: RawActivation) -> bytes:
    where = f"tariff {tariff_no!r} activation {act.kind}"
    if act.kind not in ACTIVATION_CODES:
        raise TariffBinaryError(f"{where}: unknown kind")
    if len(act.steps) != 14 or any(not 0 <= s <= 96 for s in act.steps):
        raise TariffBinaryError(f"{where}: needs 14 time steps in 0..96")
    _check_range(f"{where} date_from", act.date_from, 0xFFFF)
    _check_range(f"{where} date_to", act.date_to, 0xFFFF)
    return _ACT.pack(ACTIVATION_CODES.index(act.kind), act.date_from, act.date_to, *act.steps)


def _pack_tier(kind: str, index: int, tier: RawTier) -> bytes:
    where = f"{kind} tier {index}"
    if tier.target and not _valid_tariff_no(chr(tier.target)):
        raise TariffBinaryError(f"{where}: target tariff {tier.target!r} is not 0 or 1-9, A-Z")
    limit_max = {"distance": 0xFFFFFFFF, "time": 0xFFFF, "amount": 0xFFFFFFFF, "speed": 0xFF}[kind]
    _check_range(f"{where} limit", tier.limit, limit_max)
    _check_range(f"{where} value_distance", tier.value_distance, 0xFFFF)
    _check_range(f"{where} value_time", tier.value_time, 0xFFFF)
    _check_range(f"{where} step", tier.step, 0xFF)
    if kind == "speed":
        _check_range(f"{where} dwell", tier.dwell, 0xFF)
        return _TIER[kind].pack(tier.target, tier.limit, tier.dwell, tier.value_distance, tier.value_time, tier.step)
    if tier.dwell:
        raise TariffBinaryError(f"{where}: only speed tiers have a dwell time")
    return _TIER[kind].pack(tier.target, tier.limit, tier.value_distance, tier.value_time, tier.step)


def unpack_image(data: bytes) -> RawImage:
    """bytes -> RawImage. Checks framing, CRC, every count and code; raises TariffBinaryError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TariffBinaryError("tariff image must be bytes")
    data = bytes(data)
    if len(data) < _HEAD.size + _CRC.size:
        raise TariffBinaryError(f"image of {len(data)} bytes is shorter than its header and CRC", 0)
    if data[:4] != MAGIC:
        raise TariffBinaryError("not an S3 tariff image (magic 'S3TF' missing)", 0)
    (want,) = _CRC.unpack_from(data, len(data) - 2)
    got = crc16(data[:-2])
    if want != got:
        raise TariffBinaryError(f"CRC mismatch: stored {want:04X}, computed {got:04X}", len(data) - 2)
    _, version, code, options, currency, decimals, year, n_tariffs, *counts = _HEAD.unpack_from(data, 0)
    if version != FORMAT_VERSION:
        raise TariffBinaryError(f"format version {version} is not supported (only {FORMAT_VERSION})", 4)
    if options & ~_OPT_KNOWN:
        raise TariffBinaryError(f"options byte {options:#x} has unknown bits", 7)
    if not (currency.isascii() and currency.decode("ascii").isalpha()):
        raise TariffBinaryError(f"currency {currency!r} is not a three-letter code", 8)
    if decimals > 3:
        raise TariffBinaryError(f"decimals {decimals} outside 0..3", 11)
    if not 1 <= n_tariffs <= 35:
        raise TariffBinaryError(f"tariff count {n_tariffs} outside 1..35", 14)
    for i, (kind, n) in enumerate(zip(TIER_KINDS, counts, strict=True)):
        if n > TIER_CAPACITY[kind]:
            raise TariffBinaryError(f"{n} {kind} tiers: the format holds at most {TIER_CAPACITY[kind]}", 15 + i)
    body_end = len(data) - 2
    pos = _HEAD.size
    image = RawImage(tariff_code=code, options=options, currency=currency.decode("ascii"), decimals=decimals,
                     year=year)

    def need(size: int) -> None:
        if pos + size > body_end:
            raise TariffBinaryError(f"image ends inside a record (needs {size} more bytes)", pos)

    for _ in range(n_tariffs):
        need(_BASE.size + _EXT.size + 1)
        fields = _BASE.unpack_from(data, pos)
        ext = _EXT.unpack_from(data, pos + _BASE.size)
        tariff_no = fields[8].decode("latin-1")
        if not _valid_tariff_no(tariff_no):
            raise TariffBinaryError(f"tariff number {fields[8]!r} is not 1-9, A-Z", pos + 16)
        if ext[0] & ~_EXT_KNOWN:
            raise TariffBinaryError(f"tariff {tariff_no}: extension flags {ext[0]:#x} unknown", pos + _BASE.size)
        base = RawBase(*fields[:8], tariff_no, *fields[9:], *ext)  # type: ignore[arg-type]
        for j, (flags, width, n) in enumerate(zip(fields[10:], (16, 8, 8, 8), counts, strict=True)):
            if flags & ((1 << (width - n)) - 1):
                raise TariffBinaryError(
                    f"tariff {tariff_no}: {TIER_KINDS[j]} flags {flags:#x} name a tier that is not in the table",
                    pos + 18 + (j + 1 if j else 0),
                )
        pos += _BASE.size + _EXT.size
        n_act = data[pos]
        pos += 1
        activations = []
        for _ in range(n_act):
            need(_ACT.size)
            code_i, d_from, d_to, *steps = _ACT.unpack_from(data, pos)
            if code_i >= len(ACTIVATION_CODES):
                raise TariffBinaryError(f"activation kind code {code_i} unknown", pos)
            if any(s > 96 for s in steps):
                raise TariffBinaryError("activation time step above 96", pos + 5)
            activations.append(RawActivation(ACTIVATION_CODES[code_i], d_from, d_to, tuple(steps)))
            pos += _ACT.size
        image.tariffs.append((base, activations))
    for kind, n in zip(TIER_KINDS, counts, strict=True):
        st = _TIER[kind]
        for _ in range(n):
            need(st.size)
            values = st.unpack_from(data, pos)
            target = values[0]
            if target and not _valid_tariff_no(chr(target)):
                raise TariffBinaryError(f"{kind} tier target {target} is not 0 or 1-9, A-Z", pos)
            if kind == "speed":
                tier = RawTier(target, values[1], values[3], values[4], values[5], dwell=values[2])
            else:
                tier = RawTier(target, values[1], values[2], values[3], values[4])
            image.tiers[kind].append(tier)
            pos += st.size
    if pos != body_end:
        raise TariffBinaryError(f"{body_end - pos} bytes left over after the last record", pos)
    return image


# --- model <-> raw image -----------------------------------------------------------------------
#
# The image holds what the meter charges with: resolved unit fares and units, tiers as "fare or
# unit" slots, activations, and the global options. It does not hold names, sources, examples or
# the km/hourly fares a unit was derived from; ``binary_view`` gives the model as the image holds it.

_TIER_PREFIX = {"distance": "d", "time": "t", "amount": "a", "speed": "s"}
_KEEP = TIER_VALUE_OFFSET  # 10000 + a zero unit: "unchanged" (a zero unit is meaningless), OSOS reading


def _scaled(value: Decimal, scale: int, name: str, maximum: int) -> int:
    """``value * scale`` as an exact integer in 0..maximum, else TariffBinaryError naming ``name``."""
    raw = value * scale
    if raw != raw.to_integral_value():
        raise TariffBinaryError(f"{name} = {value} is not a multiple of 1/{scale}: the S3 format cannot hold it")
    n = int(raw)
    if not 0 <= n <= maximum:
        raise TariffBinaryError(f"{name} = {value} is out of the S3 format's range (max {Decimal(maximum) / scale})")
    return n


def _unscaled(raw: int, scale: int) -> Decimal:
    return Decimal(raw) / Decimal(scale)


def _activation_to_raw(act: Activation, where: str) -> RawActivation:
    steps = [0] * 14
    if act.kind[-1] == "W":
        if (act.start_step, act.end_step) != (0, STEPS_PER_DAY):
            raise TariffBinaryError(f"{where}: weekly activation with a day window cannot be stored")
        assert act.weekdays is not None
        steps = [s for pair in act.weekdays for s in pair]
    elif act.kind == "N":
        if (act.start_step, act.end_step) != (0, STEPS_PER_DAY):
            raise TariffBinaryError(f"{where}: always-active (N) activation with a window cannot be stored")
    else:
        steps[0], steps[1] = act.start_step, act.end_step
    d_from = d_to = 0
    if act.kind[0] == "H":
        assert isinstance(act.from_date, MonthDay) and isinstance(act.to_date, MonthDay)
        d_from = act.from_date.day + 256 * act.from_date.month
        d_to = act.to_date.day + 256 * act.to_date.month
    elif act.kind[0] == "S":
        assert isinstance(act.from_date, date) and isinstance(act.to_date, date)
        d_from, d_to = days_since_2000(act.from_date), days_since_2000(act.to_date)
        if not (0 <= d_from <= 0xFFFF and 0 <= d_to <= 0xFFFF):
            raise TariffBinaryError(f"{where}: dates before 2000-01-01 or after 2179 cannot be stored")
    return RawActivation(act.kind, d_from, d_to, tuple(steps))


def _activation_from_raw(raw: RawActivation, pos: str) -> Activation:
    kind = raw.kind
    try:
        if kind[-1] == "W":
            pairs = tuple((raw.steps[i], raw.steps[i + 1]) for i in range(0, 14, 2))
            kwargs: dict[str, object] = {"weekdays": pairs}
        elif kind == "N":
            kwargs = {}
        else:
            kwargs = {"start_step": raw.steps[0], "end_step": raw.steps[1]}
        if kind[0] == "H":
            kwargs["from_date"] = MonthDay(raw.date_from >> 8, raw.date_from & 0xFF)
            kwargs["to_date"] = MonthDay(raw.date_to >> 8, raw.date_to & 0xFF)
        elif kind[0] == "S":
            kwargs["from_date"] = date_from_days_since_2000(raw.date_from)
            kwargs["to_date"] = date_from_days_since_2000(raw.date_to)
        return Activation(kind, **kwargs)  # type: ignore[arg-type]
    except TariffError as exc:
        raise TariffBinaryError(f"{pos}: {exc}") from None


def _effective(tariff: TaxiTariff, tiers: tuple[Tier, ...], unit: str) -> tuple[object, ...]:
    """What the meter charges with while ``tiers`` (at most one per kind) are active."""
    for tier in sorted(tiers, key=lambda t: TIER_KINDS.index(t.kind)):
        tariff = overlay(tariff, tier, unit)
    return (tariff.no, tariff.unit_distance_fare, tariff.unit_distance, tariff.unit_time_fare, tariff.unit_time_s)


def _combos(tiers: list[Tier]) -> list[tuple[Tier, ...]]:
    """Every set of simultaneously active tiers: at most one per kind (a higher limit replaces a lower)."""
    out: list[tuple[Tier, ...]] = [()]
    for kind in TIER_KINDS:
        of_kind = [t for t in tiers if t.kind == kind]
        out = [c + (t,) for c in out for t in of_kind] + out
    return out


def _tier_to_raw(tier: Tier, users: list[TaxiTariff], ts: TaxiTariffSet, scales: dict[str, int]) -> RawTier:
    """The S3 slots for one tier (S3 §4.3.5): each side holds a fare, a unit or "unchanged".

    A tier that states fares, units or a monetary step is stored as stated. A tier stated as a new
    km/hourly fare is resolved against the tariffs that use it and must come out the same for all.
    """
    where = f"tier {tier.id!r}"
    if tier.km_fare is None and tier.hourly_fare is None:
        v_d, v_t, step = _stated_slots(tier, scales, where)
    else:
        slots = {_resolved_slots(tier, t, ts, scales, where) for t in users}
        if len(slots) != 1:
            raise TariffBinaryError(f"{where} is stated as a km/hourly fare that changes its tariffs in different "
                                    "ways (or no tariff uses it); the S3 format stores one set of tier values")
        v_d, v_t, step = slots.pop()
    target = ord(tier.switch_to) if tier.switch_to else 0
    if tier.kind == "amount":
        limit = _scaled(tier.limit, scales["tenth"], f"{where} limit", 0xFFFFFFFF)
    else:
        limit_max = {"distance": 0xFFFFFFFF, "time": 0xFFFF, "speed": 0xFF}[tier.kind]
        limit = _scaled(tier.limit, 1, f"{where} limit", limit_max)
    return RawTier(target, limit, v_d, v_t, step, dwell=tier.dwell_s)


def _step_byte(step: Decimal, scales: dict[str, int], where: str) -> int:
    step_minor = step * scales["minor"]
    if step_minor % STEP_BYTE_UNIT:
        raise TariffBinaryError(f"{where}: monetary step {step} is not a multiple of the byte's 5 minor units")
    n = _scaled(step_minor / STEP_BYTE_UNIT, 1, f"{where} monetary_step", 0xFF)
    if n == 0:
        raise TariffBinaryError(f"{where}: a zero monetary step cannot be stored")
    return n


def _unit_slot(unit: Decimal | None, scale: int, where: str) -> int:
    if unit is None:
        return _KEEP
    raw = _scaled(unit, scale, where, 0xFFFF - TIER_VALUE_OFFSET)
    if raw == 0:
        raise TariffBinaryError(f"{where}: a zero unit cannot be stored")
    return TIER_VALUE_OFFSET + raw


def _stated_slots(tier: Tier, scales: dict[str, int], where: str) -> tuple[int, int, int]:
    if tier.monetary_step is not None:
        if tier.unit_distance_fare != tier.monetary_step or tier.unit_time_fare != tier.monetary_step:
            raise TariffBinaryError(f"{where}: unit fares differ from its monetary step")
        return (_unit_slot(tier.unit_distance, 100, f"{where} unit_distance"),
                _unit_slot(tier.unit_time_s, 64, f"{where} unit_time_s"), _step_byte(tier.monetary_step, scales, where))
    sides = []
    for fare, unit, scale, name in ((tier.unit_distance_fare, tier.unit_distance, 100, "distance"),
                                    (tier.unit_time_fare, tier.unit_time_s, 64, "time")):
        if fare is not None and unit is not None:
            raise TariffBinaryError(f"{where}: states both the unit {name} fare and the unit {name}; "
                                    "S3 stores one of them")
        if fare is not None:
            sides.append(_scaled(fare, scales["tenth"], f"{where} unit {name} fare", TIER_VALUE_OFFSET - 1))
        else:
            sides.append(_unit_slot(unit, scale, f"{where} unit {name}"))
    return sides[0], sides[1], 0


def _resolved_slots(tier: Tier, tariff: TaxiTariff, ts: TaxiTariffSet, scales: dict[str, int],
                    where: str) -> tuple[int, int, int]:
    eff = overlay(tariff, tier, ts.distance_unit)
    base = (tariff.unit_distance_fare, tariff.unit_distance, tariff.unit_time_fare, tariff.unit_time_s)
    udf, ud, utf, ut = eff.unit_distance_fare, eff.unit_distance, eff.unit_time_fare, eff.unit_time_s
    if udf != base[0] and utf != base[2] and udf == utf and (ud != base[1] or ut != base[3]):
        # a new monetary step: both unit fares become the step, the units are stated (S3 Table 4.7)
        return (_unit_slot(ud, 100, f"{where} unit_distance"), _unit_slot(ut, 64, f"{where} unit_time_s"),
                _step_byte(udf, scales, where))
    return (_slot(udf, ud, base[0], base[1], 100, scales["tenth"], f"{where} distance side"),
            _slot(utf, ut, base[2], base[3], 64, scales["tenth"], f"{where} time side"), 0)


def _slot(fare: Decimal | None, unit: Decimal | None, base_fare: Decimal | None, base_unit: Decimal | None,
          unit_scale: int, tenth: int, where: str) -> int:
    """One two-byte tier value (S3 §4.3.5): a fare below 10000, a unit from 10000 up, 10000 = unchanged."""
    fare_changed = fare is not None and fare != base_fare
    unit_changed = unit is not None and unit != base_unit
    if fare_changed and unit_changed:
        raise TariffBinaryError(f"{where}: changes both the unit fare and the unit; S3 stores one of them")
    if fare_changed:
        assert fare is not None
        return _scaled(fare, tenth, f"{where} unit fare", TIER_VALUE_OFFSET - 1)
    if unit_changed:
        assert unit is not None
        raw = _scaled(unit, unit_scale, f"{where} unit", 0xFFFF - TIER_VALUE_OFFSET)
        if raw == 0:
            raise TariffBinaryError(f"{where}: a zero unit cannot be stored")
        return TIER_VALUE_OFFSET + raw
    return _KEEP


def _scales(decimals: int) -> dict[str, int]:
    return {"minor": 10**decimals, "tenth": 10 ** (decimals + 1)}


def to_raw(ts: TaxiTariffSet, *, locked: bool = False) -> RawImage:
    """The S3 records for a tariff set; TariffBinaryError (a TariffError) names what does not fit."""
    sc = _scales(ts.decimals)
    minor, tenth = sc["minor"], sc["tenth"]
    options = (OPT_DST_AUTO if ts.dst_switch else 0) | (OPT_LOCKED if locked else 0)
    options |= (OPT_ONLY_ONE_ACTIVE if ts.only_one_active else 0) | (OPT_YARDS if ts.distance_unit == "yd" else 0)
    if not 1900 <= ts.year <= 2100:
        raise TariffBinaryError(f"year {ts.year} outside 1900..2100")
    image = RawImage(tariff_code=ts.tariff_code, options=options, currency=ts.currency, decimals=ts.decimals,
                     year=ts.year)
    # tier tables: per kind, in file order
    index: dict[str, tuple[str, int]] = {}
    for tier in ts.tiers:
        table = image.tiers[tier.kind]
        if len(table) >= TIER_CAPACITY[tier.kind]:
            raise TariffBinaryError(f"more than {TIER_CAPACITY[tier.kind]} {tier.kind} tiers")
        users = [t for t in ts.tariffs if tier.id in t.tiers]
        table.append(_tier_to_raw(tier, users, ts, sc))
        index[tier.id] = (tier.kind, len(table))
    for t in ts.tariffs:
        where = f"tariff {t.no}"
        flags = dict.fromkeys(TIER_KINDS, 0)
        for ref in t.tiers:
            kind, i = index[ref]
            width = 16 if kind == "distance" else 8
            flags[kind] |= 1 << (width - i)
        if t.monetary_step is not None and (t.unit_distance_fare != t.monetary_step or
                                            t.unit_time_fare != t.monetary_step):
            raise TariffBinaryError(f"{where}: unit fares differ from its monetary step")
        crossover = 0 if t.crossover_kmh is None else _scaled(t.crossover_kmh, 100, f"{where} crossover_kmh", 0xFFFF)
        if t.crossover_kmh is not None and crossover == 0:
            raise TariffBinaryError(f"{where}: crossover_kmh rounds to zero")
        base = RawBase(
            opening_fare=_scaled(t.opening_fare, minor, f"{where} opening_fare", 0xFFFF),
            opening_distance=_scaled(t.opening_distance, 10, f"{where} opening_distance", 0xFFFF),
            opening_time=_scaled(t.opening_time_s, 16, f"{where} opening_time_s", 0xFFFF),
            unit_distance_fare=_scaled(t.unit_distance_fare, tenth, f"{where} unit_distance_fare", 0xFFFF),
            unit_time_fare=_scaled(t.unit_time_fare, tenth, f"{where} unit_time_fare", 0xFFFF),
            unit_extra=_scaled(t.extra_fare, tenth, f"{where} extra_fare", 0xFFFF),
            unit_distance=_scaled(t.unit_distance, 100, f"{where} unit_distance", 0xFFFF),
            unit_time=_scaled(t.unit_time_s, 64, f"{where} unit_time_s", 0xFFFF),
            tariff_no=t.no,
            max_extra=t.max_extras,
            distance_flags=flags["distance"],
            time_flags=flags["time"],
            amount_flags=flags["amount"],
            speed_flags=flags["speed"],
            ext_flags=(EXT_MODE_D if t.mode == "D" else 0) | (EXT_CHARGE_STARTED if t.charge == "started" else 0),
            minimum_fare=_scaled(t.minimum_fare, minor, f"{where} minimum_fare", 0xFFFF),
            crossover=crossover,
        )
        acts = [_activation_to_raw(a, f"{where} activation") for a in (t.activation, *t.also_active)]
        image.tariffs.append((base, acts))
    # lossless check: every reachable tier combination charges the same after decoding
    decoded = from_raw(image)
    for t in ts.tariffs:
        d = decoded.tariff(t.no)
        mine = [ts.tier(ref) for ref in t.tiers]
        for combo in _combos(mine):
            other = tuple(decoded.tier(f"{_TIER_PREFIX[x.kind]}{index[x.id][1]}") for x in combo)
            if _effective(t, combo, ts.distance_unit) != _effective(d, other, ts.distance_unit):
                ids = ", ".join(x.id for x in combo)
                raise TariffBinaryError(f"tariff {t.no} with tiers [{ids}] would charge differently after "
                                        "encoding: the S3 format cannot hold this combination")
    return image


def from_raw(image: RawImage) -> TaxiTariffSet:
    """The tariff set an image holds (names and sources are not in the image)."""
    sc = _scales(image.decimals)
    minor, tenth = sc["minor"], sc["tenth"]
    unit = "yd" if image.options & OPT_YARDS else "m"
    if not 1900 <= image.year <= 2100:
        raise TariffBinaryError(f"year {image.year} outside 1900..2100", 12)
    tiers: list[Tier] = []
    for kind in TIER_KINDS:
        for i, raw in enumerate(image.tiers[kind], start=1):
            tiers.append(_tier_from_raw(kind, i, raw, minor, tenth))
    tariffs: list[TaxiTariff] = []
    for base, acts in image.tariffs:
        where = f"tariff {base.tariff_no}"
        refs = []
        for kind, flags, width in zip(TIER_KINDS, (base.distance_flags, base.time_flags, base.amount_flags,
                                                   base.speed_flags), (16, 8, 8, 8), strict=True):
            refs += [f"{_TIER_PREFIX[kind]}{i}" for i in range(1, width + 1) if flags & (1 << (width - i))]
        if not acts:
            raise TariffBinaryError(f"{where}: no activation record")
        activations = [_activation_from_raw(a, f"{where} activation") for a in acts]
        if base.unit_distance == 0 or base.unit_time == 0:
            raise TariffBinaryError(f"{where}: zero unit distance or unit time")
        if base.unit_distance_fare == 0 and base.unit_time_fare == 0:
            raise TariffBinaryError(f"{where}: both unit fares are zero")
        tariffs.append(TaxiTariff(
            no=base.tariff_no,
            name=f"Tariff {base.tariff_no}",
            mode="D" if base.ext_flags & EXT_MODE_D else "S",
            charge="started" if base.ext_flags & EXT_CHARGE_STARTED else "completed",
            opening_fare=_unscaled(base.opening_fare, minor),
            opening_distance=_unscaled(base.opening_distance, 10),
            opening_time_s=_unscaled(base.opening_time, 16),
            unit_distance_fare=_unscaled(base.unit_distance_fare, tenth),
            unit_distance=_unscaled(base.unit_distance, 100),
            unit_time_fare=_unscaled(base.unit_time_fare, tenth),
            unit_time_s=_unscaled(base.unit_time, 64),
            extra_fare=_unscaled(base.unit_extra, tenth),
            max_extras=base.max_extra,
            minimum_fare=_unscaled(base.minimum_fare, minor),
            crossover_kmh=_unscaled(base.crossover, 100) if base.crossover else None,
            tiers=tuple(refs),
            activation=activations[0],
            also_active=tuple(activations[1:]),
        ))
    nos = [t.no for t in tariffs]
    if len(set(nos)) != len(nos):
        raise TariffBinaryError("duplicate tariff number in the image")
    return TaxiTariffSet(
        name=f"s3-image-{image.tariff_code}",
        city="",
        country="",
        year=image.year,
        currency=image.currency,
        decimals=image.decimals,
        distance_unit=unit,
        source=Source(url="", title="decoded from an S3 binary tariff image", accessed=""),
        tariffs=tuple(tariffs),
        tiers=tuple(tiers),
        tariff_code=image.tariff_code,
        only_one_active=bool(image.options & OPT_ONLY_ONE_ACTIVE),
        dst_switch=bool(image.options & OPT_DST_AUTO),
    )


def _tier_from_raw(kind: str, index: int, raw: RawTier, minor: int, tenth: int) -> Tier:
    where = f"{kind} tier {index}"
    fields: dict[str, Decimal | None] = {}
    for name_fare, name_unit, value, scale in (("unit_distance_fare", "unit_distance", raw.value_distance, 100),
                                               ("unit_time_fare", "unit_time_s", raw.value_time, 64)):
        if value < TIER_VALUE_OFFSET:
            fields[name_fare] = _unscaled(value, tenth)
        elif value > TIER_VALUE_OFFSET:
            fields[name_unit] = _unscaled(value - TIER_VALUE_OFFSET, scale)
    step = None
    if raw.step:
        if "unit_distance_fare" in fields or "unit_time_fare" in fields:
            raise TariffBinaryError(f"{where}: a new monetary step together with a unit fare")
        step = _unscaled(raw.step * STEP_BYTE_UNIT, minor)
        fields["unit_distance_fare"] = fields["unit_time_fare"] = step
    limit = _unscaled(raw.limit, tenth) if kind == "amount" else Decimal(raw.limit)
    if raw.dwell and kind != "speed":
        raise TariffBinaryError(f"{where}: dwell time on a non-speed tier")
    return Tier(id=f"{_TIER_PREFIX[kind]}{index}", kind=kind, limit=limit, dwell_s=raw.dwell,  # type: ignore[arg-type]
                switch_to=chr(raw.target) if raw.target else None, monetary_step=step, **fields)


def encode(ts: TaxiTariffSet, *, locked: bool = False) -> bytes:
    """Tariff set -> S3 binary image with CRC (TAX-5). TariffBinaryError names any field that does not fit."""
    return pack_image(to_raw(ts, locked=locked))


def decode(data: bytes) -> TaxiTariffSet:
    """S3 binary image -> tariff set. Any malformed input raises TariffBinaryError (never another type)."""
    image = unpack_image(data)
    try:
        return from_raw(image)
    except TariffBinaryError:
        raise
    except TariffError as exc:  # model-level validation of decoded values
        raise TariffBinaryError(str(exc)) from None


def image_crc(data: bytes) -> int:
    """The CRC stored in an image (after checking it), as the meter shows it (S3 Fig. 4.29)."""
    unpack_image(data)
    return int.from_bytes(data[-2:], "little")


def binary_view(ts: TaxiTariffSet) -> TaxiTariffSet:
    """The tariff set exactly as an image holds it: ``decode(encode(ts)) == binary_view(ts)``."""
    return from_raw(to_raw(ts))


def decode_to_json(data: bytes, key: bytes | None = None) -> dict[str, object]:
    """``osos decode --protocol s3-tariff``: the image as plain JSON (TAX-5)."""
    image = unpack_image(data)
    ts = decode(data)
    return {
        "tariff_code": image.tariff_code,
        "crc": f"{int.from_bytes(data[-2:], 'little'):04X}",
        "options": {"dst_switch": ts.dst_switch, "locked": bool(image.options & OPT_LOCKED),
                    "only_one_active": ts.only_one_active, "distance_unit": ts.distance_unit},
        "currency": ts.currency,
        "decimals": ts.decimals,
        "year": ts.year,
        "tariffs": [_tariff_json(t) for t in ts.tariffs],
        "tiers": [_tier_json(t) for t in ts.tiers],
    }


def _num(d: Decimal | None) -> str | None:
    return None if d is None else format(d.normalize(), "f")


def _tariff_json(t: TaxiTariff) -> dict[str, object]:
    return {
        "no": t.no, "mode": t.mode, "charge": t.charge, "opening_fare": _num(t.opening_fare),
        "opening_distance": _num(t.opening_distance), "opening_time_s": _num(t.opening_time_s),
        "unit_distance_fare": _num(t.unit_distance_fare), "unit_distance": _num(t.unit_distance),
        "unit_time_fare": _num(t.unit_time_fare), "unit_time_s": _num(t.unit_time_s),
        "extra_fare": _num(t.extra_fare), "max_extras": t.max_extras, "minimum_fare": _num(t.minimum_fare),
        "crossover_kmh": _num(t.crossover_kmh), "tiers": list(t.tiers),
        "activations": [a.to_dict() for a in (t.activation, *t.also_active)],
    }


def _tier_json(t: Tier) -> dict[str, object]:
    out: dict[str, object] = {"id": t.id, "kind": t.kind, "limit": _num(t.limit), "switch_to": t.switch_to}
    if t.kind == "speed":
        out["dwell_s"] = t.dwell_s
    for name in ("unit_distance_fare", "unit_distance", "unit_time_fare", "unit_time_s", "monetary_step"):
        value = getattr(t, name)
        if value is not None:
            out[name] = _num(value)
    return out
