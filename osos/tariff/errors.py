"""Errors of the tariff layer (TAX-1..TAX-9).

One exception type for every tariff problem (bad file, bad parameter, bad trip input) so callers
and the CLI can catch it in one place; it subclasses ValueError because every cause is bad data.
"""

from __future__ import annotations


class TariffError(ValueError):
    """A tariff file, tariff parameter or trip input is invalid."""
