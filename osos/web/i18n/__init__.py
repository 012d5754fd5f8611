"""UI strings in English and Turkish from the start (HES-15).

Catalogs are TOML files next to this module (``en.toml``, ``tr.toml``); tables give dotted keys
(``[nav] modems = "..."`` is ``nav.modems``); texts may hold ``{name}`` placeholders. Every key exists in both
languages (a unit test enforces it); a key missing at run time falls back to English and then to the key itself,
so a forgotten translation shows up as visible text instead of a crash.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import cache
from importlib import resources

LANGUAGES = ("en", "tr")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES = {"en": "English", "tr": "Türkçe"}


@cache
def catalog(lang: str) -> dict[str, str]:
    """The key -> text table of one language (read once)."""
    if lang not in LANGUAGES:
        raise KeyError(f"unsupported language {lang!r}")
    text = resources.files(__package__).joinpath(f"{lang}.toml").read_text(encoding="utf-8")
    return dict(_flatten(tomllib.loads(text)))


def _flatten(table: dict[str, object], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in table.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", str(value)))
    return out


def has_key(lang: str, key: str) -> bool:
    return key in catalog(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)


def translate(lang: str, key: str, **values: object) -> str:
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = catalog(lang).get(key) or catalog(DEFAULT_LANGUAGE).get(key) or key
    if values:
        try:
            return text.format_map(values)
        except (KeyError, IndexError, ValueError):
            return text
    return text


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` bound to one language, for templates."""

    def t(key: str, **values: object) -> str:
        return translate(lang, key, **values)

    return t


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The language cookie wins; else the first supported tag in Accept-Language (by q); else English."""
    if cookie in LANGUAGES:
        return cookie  # type: ignore[return-value]
    if accept_language:
        ranked: list[tuple[float, int, str]] = []
        for index, part in enumerate(accept_language.split(",")):
            tag, _, params = part.strip().partition(";")
            quality = 1.0
            params = params.strip()
            if params.startswith("q="):
                try:
                    quality = float(params[2:])
                except ValueError:
                    quality = 0.0
            ranked.append((-quality, index, tag.strip().lower().split("-")[0]))
        for _, _, tag in sorted(ranked):
            if tag in LANGUAGES:
                return tag
    return DEFAULT_LANGUAGE
