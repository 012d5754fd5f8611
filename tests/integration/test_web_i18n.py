"""Both UI languages are complete (HES-15): same keys, same placeholders, every template string translated.

(No services needed; kept with the other web tests.)
"""

from __future__ import annotations

import re
import string
from importlib import resources

import pytest

from osos.auth import ROLES
from osos.headend.orders import ORDER_KINDS, STATUSES
from osos.web.i18n import LANGUAGES, catalog, pick_language, translate

TEMPLATES = resources.files("osos.web.ui").joinpath("templates")


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def template_keys() -> set[str]:
    keys: set[str] = set()
    for entry in TEMPLATES.iterdir():
        if entry.name.endswith(".html"):
            keys |= set(re.findall(r"""\bt\('([a-z0-9_.-]+)'[,)]""", entry.read_text(encoding="utf-8")))
    return keys


def test_catalogs_have_the_same_keys_and_placeholders() -> None:
    en, tr = catalog("en"), catalog("tr")
    assert set(en) == set(tr)
    for key in en:
        assert en[key].strip() and tr[key].strip(), key
        assert placeholders(en[key]) == placeholders(tr[key]), key


def test_every_template_string_exists_in_both_languages() -> None:
    keys = template_keys()
    assert len(keys) > 60  # the scan found the templates' strings
    dynamic = {f"role.{r}" for r in ROLES} | {f"status.{s}" for s in STATUSES} | {f"orderkind.{k}" for k in ORDER_KINDS}
    dynamic |= {f"error.{code}" for code in (400, 401, 403, 404, 500)} | {"meter.encoding_utf-8", "meter.encoding_hex"}
    dynamic |= {"login.failed", "login.expired", "login.throttled"}
    dynamic |= {f"order.{s}" for s in ("pending", "running", "succeeded", "failed")}
    for lang in LANGUAGES:
        missing = (keys | dynamic) - set(catalog(lang))
        assert not missing, (lang, sorted(missing))


def test_turkish_is_turkish() -> None:
    en, tr = catalog("en"), catalog("tr")
    same = [k for k in en if en[k] == tr[k] and k not in ("nav.modems",)]
    assert len(same) <= 3, same  # only words spelled alike in both (e.g. "Modem")
    assert tr["nav.meters"] == "Sayaçlar" and tr["meter.read_now"] == "Şimdi oku"
    assert translate("tr", "meter.title", serial="MKL12345678") == "Sayaç MKL12345678"


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("tr", "en-US,en;q=0.9", "tr"),
        (None, "tr-TR,tr;q=0.9,en;q=0.8", "tr"),
        (None, "de-DE,de;q=0.9,tr;q=0.5,en;q=0.4", "tr"),
        (None, "en;q=0.2,tr;q=0.8", "tr"),
        (None, "fr", "en"),
        ("xx", None, "en"),
        (None, "tr;q=abc,en", "en"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert pick_language(cookie, header) == expected


def test_missing_key_falls_back_visibly() -> None:
    assert translate("tr", "no.such.key") == "no.such.key"
    assert translate("zz", "nav.meters") == "Meters"
