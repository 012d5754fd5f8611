"""Tariff library: find, list and load tariff files by NAME or PATH (TAX-9 "tariff editor/loader").

Files live in ``osos/data/tariffs/*.toml``; the top-level ``kind`` says who parses them:
``"taxi"`` -> ``osos.tariff.model.parse_taxi_tariff_set``; ``"energy"`` / ``"water"`` ->
``osos.tariff.energy.load_energy_tariff`` / ``load_water_tariff`` (given the parsed document and the
name). This is the one module of ``osos.tariff`` that reads files; everything it returns is pure data.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osos.tariff.errors import TariffError
from osos.tariff.model import TaxiTariffSet, parse_taxi_tariff_set

TARIFF_DIR = Path(__file__).resolve().parent.parent / "data" / "tariffs"
_OTHER_KINDS = {"energy": "load_energy_tariff", "water": "load_water_tariff"}


@dataclass(frozen=True)
class TariffInfo:
    """One line of ``osos tariff list``."""

    name: str
    kind: str
    city: str
    year: str
    currency: str
    source: str
    path: Path
    error: str = ""


def find_tariff(name_or_path: str | Path) -> Path:
    """A path that exists, or the library file ``<name>.toml``; TariffError naming what exists."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if not p.suffix:
        candidate = TARIFF_DIR / f"{p.name}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(f.stem for f in TARIFF_DIR.glob("*.toml"))) or "none"
    raise TariffError(f"no tariff file or library tariff {str(name_or_path)!r} (library: {known})")


def read_document(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors become TariffError with tomllib's line/column message."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(f"{path.name}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise TariffError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TariffError(f"{path.name}: not UTF-8 text") from None


def parse_document(doc: dict[str, Any], name: str) -> Any:
    """Dispatch a parsed document by its ``kind``."""
    kind = doc.get("kind")
    if kind == "taxi":
        return parse_taxi_tariff_set(doc, name=name)
    if kind in _OTHER_KINDS:
        try:
            energy = importlib.import_module("osos.tariff.energy")
        except ModuleNotFoundError:
            raise TariffError(f"{name}: {kind} tariffs need osos.tariff.energy, which is not installed") from None
        return getattr(energy, _OTHER_KINDS[kind])(doc, name)
    raise TariffError(f"{name}: top-level kind must be \"taxi\", \"energy\" or \"water\", got {kind!r}")


def load_tariff(name_or_path: str | Path) -> Any:
    """Load and validate one tariff file by library name or path."""
    path = find_tariff(name_or_path)
    return parse_document(read_document(path), path.stem)


def load_taxi_tariff(name_or_path: str | Path) -> TaxiTariffSet:
    """Like ``load_tariff`` but insists on a taximeter tariff."""
    result = load_tariff(name_or_path)
    if not isinstance(result, TaxiTariffSet):
        raise TariffError(f"{name_or_path}: not a taximeter tariff (kind = \"taxi\")")
    return result


def list_tariffs(directory: Path | None = None) -> list[TariffInfo]:
    """Every tariff file of the library with its headline fields; unreadable files carry ``error``."""
    out = []
    for path in sorted((directory or TARIFF_DIR).glob("*.toml")):
        try:
            doc = read_document(path)
        except TariffError as exc:
            out.append(TariffInfo(path.stem, "?", "", "", "", "", path, str(exc)))
            continue
        src = doc.get("source")
        url = src.get("url", "") if isinstance(src, dict) else str(src or "")
        out.append(TariffInfo(
            name=str(doc.get("name", path.stem)),
            kind=str(doc.get("kind", "?")),
            city=str(doc.get("city", "")),
            year=str(doc.get("year", "")),
            currency=str(doc.get("currency", "")),
            source=url,
            path=path,
        ))
    return out
