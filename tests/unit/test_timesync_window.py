"""Drift of a clock read somewhere inside an order's round trip (HES-35): hand-computed cases."""

from __future__ import annotations

from datetime import UTC, datetime

from osos.headend.timesync import window_drift_s

SENT = datetime(2026, 12, 1, 12, 0, 0, 700000, tzinfo=UTC)
RECV = datetime(2026, 12, 1, 12, 0, 5, 300000, tzinfo=UTC)


def at(h: int, m: int, s: int) -> datetime:
    return datetime(2026, 12, 1, h, m, s, tzinfo=UTC)


def test_inside_the_round_trip_is_zero() -> None:
    assert window_drift_s(at(12, 0, 0), SENT, RECV) == 0  # the second the order left (printed without its .7)
    assert window_drift_s(at(12, 0, 5), SENT, RECV) == 0


def test_ahead_counts_from_the_arrival() -> None:
    assert window_drift_s(at(12, 7, 5), SENT, RECV) == 419  # 419.7 s toward zero
    assert window_drift_s(at(12, 0, 6), SENT, RECV) == 0  # 0.7 s


def test_behind_counts_from_the_departure_second() -> None:
    assert window_drift_s(at(11, 53, 0), SENT, RECV) == -420
    assert window_drift_s(at(11, 59, 59), SENT, RECV) == -1
