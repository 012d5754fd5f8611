"""OBIS codes (IEC 62056-61 / EN 62056-6-1): parse, format and name them (AMR-2, HES-27, HES-28).

Readouts over IEC 62056-21 use the reduced form ``C.D.E`` (``1.8.0``), optionally with a billing
period ``*F`` (``1.8.1*12``; some meters write ``&F``); DLMS uses the full ``A-B:C.D.E*F`` or the
dotted ``A.B.C.D.E.F``. In value groups C and D the letters C, F, L, P stand for 96, 97, 98, 99
(``C.1.0`` = 96.1.0 meter serial, ``F.F.0`` = 97.97.0 error/status register, ``P.01`` = 99.1 load
profile). Codes compare by their numbers, so ``C.1.0 == 96.1.0``; formatting keeps the spelling
they were written with.

Names (English and Turkish) and units come from ``osos/data/obis.toml``: data, not code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from osos.protocols.errors import DecodeError

__all__ = ["LETTERS", "ObisCode", "ObisError", "UnknownObisCode", "describe", "lookup", "parse_obis"]

_DATA = Path(__file__).resolve().parent.parent / "data" / "obis.toml"

LETTERS: dict[str, int] = {"C": 96, "F": 97, "L": 98, "P": 99}
_LETTER_OF = {v: k for k, v in LETTERS.items()}

_GROUP = r"([0-9]{1,3}|[CFLP])"
_NUM = r"([0-9]{1,3})"
_REDUCED = re.compile(
    rf"(?:{_NUM}-)?(?:{_NUM}:)?{_GROUP}\.{_GROUP}(?:\.{_NUM})?(?:([*&]){_NUM})?"
)
_DOTTED6 = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}\.{_NUM}\.{_NUM}\.{_NUM}")


class ObisError(DecodeError):
    """A malformed OBIS code."""


class UnknownObisCode(ObisError):
    """A well-formed code that ``osos/data/obis.toml`` does not name."""


@dataclass(frozen=True)
class ObisCode:
    """Value groups A..F; None where the written form left a group out.

    ``letters`` records which of C/D were written as letters and ``sep`` the billing-period
    separator, so :attr:`short` reproduces the original spelling; neither takes part in equality.
    """

    a: int | None
    b: int | None
    c: int
    d: int
    e: int | None = None
    f: int | None = None
    letters: tuple[bool, bool] = field(default=(False, False), compare=False)
    sep: str = field(default="*", compare=False)

    def __post_init__(self) -> None:
        for name in "abcdef":
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not 0 <= v <= 255):
                raise ObisError(f"value group {name.upper()} must be 0..255, not {v!r}")
        if self.sep not in ("*", "&"):
            raise ObisError(f"billing-period separator must be '*' or '&', not {self.sep!r}")
        for flag, v, name in zip(self.letters, (self.c, self.d), "CD", strict=True):
            if flag and v not in _LETTER_OF:
                raise ObisError(f"value group {name} = {v} has no letter form")

    @classmethod
    def parse(cls, text: str) -> ObisCode:
        return parse_obis(text)

    def _cd(self) -> str:
        c = _LETTER_OF[self.c] if self.letters[0] else str(self.c)
        d = _LETTER_OF[self.d] if self.letters[1] else str(self.d)
        return f"{c}.{d}"

    @property
    def short(self) -> str:
        """Reduced form as used in IEC 62056-21 readouts: ``C.D.E`` plus ``*F`` when F is a billing period."""
        out = self._cd()
        if self.e is not None:
            out += f".{self.e}"
        if self.f is not None and self.f != 255:
            out += f"{self.sep}{self.f:02d}" if self.f < 100 else f"{self.sep}{self.f}"
        return out

    @property
    def full(self) -> str:
        """``A-B:C.D.E*F`` with the defaults a reduced readout code implies.

        A defaults to 1 (electricity) except for the abstract 96..99 service groups (A = 0);
        B to 0, E to 0, F to 255 (current value). These are conventions, not part of the code.
        """
        a = self.a if self.a is not None else (0 if self.c >= 96 else 1)
        b = self.b if self.b is not None else 0
        e = self.e if self.e is not None else 0
        f = self.f if self.f is not None else 255
        return f"{a}-{b}:{self.c}.{self.d}.{e}*{f}"

    @property
    def key(self) -> tuple[int, int, int]:
        """(C, D, E) with E defaulting to 0: what the names table is keyed by."""
        return (self.c, self.d, self.e if self.e is not None else 0)

    def __str__(self) -> str:
        prefix = ""
        if self.a is not None:
            prefix += f"{self.a}-"
        if self.b is not None:
            prefix += f"{self.b}:"
        return prefix + self.short


def _group(token: str, name: str, text: str) -> tuple[int, bool]:
    if token in LETTERS:
        return LETTERS[token], True
    value = int(token)
    if value > 255:
        raise ObisError(f"value group {name} of {text!r} is above 255", 0)
    return value, False


def parse_obis(text: str) -> ObisCode:
    """Parse ``A-B:C.D.E*F``, reduced ``C.D.E`` / ``C.D`` / ``C.D.E*F`` / ``C.D.E&F`` or dotted ``A.B.C.D.E.F``."""
    if not isinstance(text, str):
        raise ObisError(f"OBIS code must be a string, not {type(text).__name__}", 0)
    s = text.strip()
    m6 = _DOTTED6.fullmatch(s)
    if m6:
        vals = [int(x) for x in m6.groups()]
        for name, v in zip("ABCDEF", vals, strict=True):
            if v > 255:
                raise ObisError(f"value group {name} of {text!r} is above 255", 0)
        return ObisCode(*vals)
    m = _REDUCED.fullmatch(s)
    if not m:
        raise ObisError(f"{text!r} is not an OBIS code (A-B:C.D.E*F or C.D.E)", 0)
    a_s, b_s, c_s, d_s, e_s, sep, f_s = m.groups()
    nums: dict[str, int | None] = {}
    for name, tok in (("A", a_s), ("B", b_s), ("E", e_s), ("F", f_s)):
        nums[name] = None if tok is None else _group(tok, name, text)[0]
    c, c_letter = _group(c_s, "C", text)
    d, d_letter = _group(d_s, "D", text)
    return ObisCode(nums["A"], nums["B"], c, d, nums["E"], nums["F"], (c_letter, d_letter), sep or "*")


def _coerce(code: str | ObisCode) -> ObisCode:
    return code if isinstance(code, ObisCode) else parse_obis(code)


@dataclass(frozen=True)
class ObisInfo:
    """Names and unit of one code from ``obis.toml``."""

    code: str
    en: str
    tr: str
    unit: str | None


@cache
def _table() -> dict[tuple[int, int, int], ObisInfo]:
    raw = tomllib.loads(_DATA.read_text("utf-8"))
    table: dict[tuple[int, int, int], ObisInfo] = {}
    for code, entry in raw["codes"].items():
        key = parse_obis(code).key
        if key in table:
            raise ObisError(f"obis.toml names {code!r} twice (as {table[key].code!r})")
        table[key] = ObisInfo(code, entry["en"], entry["tr"], entry.get("unit") or None)
    return table


def lookup(code: str | ObisCode) -> ObisInfo | None:
    """The table entry for ``code`` (ignoring A, B and the billing period F), or None."""
    return _table().get(_coerce(code).key)


def describe(code: str | ObisCode, lang: str = "en") -> tuple[str, str | None]:
    """(name, unit) of ``code`` in English or Turkish; a billing period F is named in the text.

    Raises :class:`ObisError` for a malformed code and :class:`UnknownObisCode` for one the
    table does not know (use :func:`lookup` to test first).
    """
    if lang not in ("en", "tr"):
        raise ValueError(f"lang must be 'en' or 'tr', not {lang!r}")
    obis = _coerce(code)
    info = _table().get(obis.key)
    if info is None:
        raise UnknownObisCode(f"OBIS code {obis.short} is not in osos/data/obis.toml", 0)
    name = info.en if lang == "en" else info.tr
    if obis.f is not None and obis.f != 255:
        name += f", billing period {obis.f}" if lang == "en" else f", {obis.f} numaralı fatura dönemi"
    return name, info.unit
