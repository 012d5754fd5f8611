"""Fuzz: random bytes and mutated corpus frames never raise anything but MBusError/WMBusError.

Mutations re-seal the checksum (wired) so they reach the record decoder instead of stopping at
the framing check. A bounded run goes with every test run; --run-slow runs the long one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.protocols import mbus, wmbus
from osos.protocols.mbus_records import MBusError, decode_records

CORPUS = Path(__file__).resolve().parents[1] / "data" / "libmbus" / "test-frames"  # vendored (BSD-3)
FRAMES = [mbus.read_input(p.read_bytes()) for p in sorted(CORPUS.glob("*.hex"))]
assert FRAMES, f"vendored libmbus frames missing under {CORPUS}"
OMS = bytes.fromhex("2E4493157856341233037A2A0000002F2F0C1427048502046D32371F1502FD1700002F2F2F2F2F2F2F2F2F2F2F2F2F")
KEY = bytes.fromhex("0102030405060708090A0B0C0D0E0F11")

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reseal(frame: bytes) -> bytes:
    """Fix L fields, checksum and stop byte of a (mutated) long frame so parsing goes deeper."""
    if len(frame) < 9 or frame[0] != 0x68:
        return frame
    body = frame[4:-2]
    if len(body) > 255:
        body = body[:255]
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


mutations = st.tuples(
    st.sampled_from(FRAMES),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 40),
)


def _mutate(frame: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(frame)
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut and cut < len(data):
        del data[len(data) - cut - 2 : len(data) - 2]
    return _reseal(bytes(data))


def _only_ours(fn, *args) -> None:
    try:
        fn(*args)
    except MBusError as exc:
        assert exc.reason and (exc.position is None or exc.position >= 0)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_mbus(data: bytes) -> None:
    _only_ours(mbus.decode, data)
    _only_ours(decode_records, data)


@FAST
@given(mutations)
def test_mutated_corpus_frames(case) -> None:
    _only_ours(mbus.decode, _mutate(*case))


@FAST
@given(st.binary(min_size=0, max_size=300), st.sampled_from([None, KEY]))
def test_random_bytes_wmbus(data: bytes, key) -> None:
    _only_ours(wmbus.decode, data, key)


@FAST
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), min_size=1, max_size=5))
def test_mutated_wmbus(edits) -> None:
    data = bytearray(OMS)
    for pos, value in edits:
        data[pos % len(data)] = value
    _only_ours(wmbus.decode, bytes(data), KEY)
    _only_ours(wmbus.decode, bytes(data), None)


@pytest.mark.slow
@LONG
@given(mutations)
def test_mutated_corpus_frames_long(case) -> None:
    _only_ours(mbus.decode, _mutate(*case))


@pytest.mark.slow
@LONG
@given(st.binary(max_size=600), st.sampled_from([None, KEY]))
def test_random_bytes_long(data: bytes, key) -> None:
    _only_ours(mbus.decode, data)
    _only_ours(wmbus.decode, data, key)
