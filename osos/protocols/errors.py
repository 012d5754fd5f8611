"""The one error family every codec raises, so callers can catch bad input in one place."""

from __future__ import annotations


class DecodeError(ValueError):
    """Malformed or unauthenticated input. ``position`` is the byte offset where it was noticed."""

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position
        where = f" at byte {position}" if position is not None else ""
        super().__init__(f"{reason}{where}")
