"""Properties of the IEC 62056-21 codec: build -> parse is the identity, and any bytes (random or
mutated valid frames) either parse or raise IECError -- never another exception.

A bounded slice runs by default; ``--run-slow`` runs the long fuzz.  # covers AMR-1, HES-6
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import reduce

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.protocols import iec62056_21 as iec

PRINTABLE = [chr(c) for c in range(0x20, 0x7F)]


def chars(forbidden: str) -> st.SearchStrategy[str]:
    return st.sampled_from([c for c in PRINTABLE if c not in forbidden])


addresses = st.text(chars("()!/"), max_size=16)
values = st.text(chars("()*!"), max_size=32)
units = st.none() | st.text(chars("()*!"), max_size=16)
data_values = st.builds(iec.DataValue, values, units)
data_lines = st.builds(iec.DataLine, addresses, st.lists(data_values, min_size=1, max_size=4).map(tuple))
letters = st.sampled_from(string.ascii_letters)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


# ------------------------------------------------------------------------------ round trips


@FAST
@given(data_lines)
def test_data_line_round_trip(line: iec.DataLine) -> None:
    assert iec.parse_data_line(iec.format_data_line(line)) == line


@FAST
@given(st.lists(data_lines, max_size=8))
def test_data_block_round_trip(lines: list[iec.DataLine]) -> None:
    frame = iec.build_data_block(lines)
    assert frame[-1] == xor(frame[1:-1])  # independent BCC
    block = iec.parse_data_block(frame)
    assert block.lines == tuple(lines) and block.bcc_ok


@FAST
@given(st.lists(data_lines, min_size=1, max_size=6), st.booleans())
def test_data_message_round_trip(lines: list[iec.DataLine], final: bool) -> None:
    msg = iec.parse_data_message(iec.build_data_message(lines, final))
    assert msg.lines == tuple(lines) and msg.final is final


@FAST
@given(
    st.text(letters, min_size=3, max_size=3),
    chars("/!\\ "),
    st.text(chars("/!\\"), min_size=1, max_size=16),
    st.none() | st.text(chars("/!\\"), min_size=1, max_size=2),
)
def test_identification_round_trip(flag: str, baud_char: str, ident: str, enhanced: str | None) -> None:
    parsed = iec.parse_identification(iec.build_identification(flag, baud_char, ident, enhanced))
    assert (parsed.flag, parsed.baud_char, parsed.ident, parsed.enhanced) == (flag, baud_char, ident, enhanced)


@FAST
@given(
    st.sampled_from(sorted(["P0", "P1", "P2", "W1", "W2", "W5", "R1", "R2", "R5", "R6", "E2", "B0"])),
    st.text(chars(""), max_size=40),
    st.booleans(),
)
def test_command_round_trip(command: str, data: str, final: bool) -> None:
    if command.startswith("B") and not data:
        data = ""
    elif not data:
        data = "()"
    frame = iec.build_command(command, data, final)
    assert frame[-1] == xor(frame[1:-1])
    assert iec.parse_command(frame) == iec.Command(command, data, final)


@FAST
@given(st.text(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "), max_size=32))
def test_sign_on_round_trip(address: str) -> None:
    assert iec.parse_sign_on(iec.sign_on(address)) == address


@FAST
@given(
    st.integers(1, 99),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0)
    ),
    st.sampled_from([1, 5, 15, 30, 60]),
    st.lists(st.tuples(st.sampled_from(["1.5.0", "2.5.0", "5.5.0", "C.5.1"]), st.sampled_from(["kW", "kvar", ""])),
             min_size=1, max_size=4),
    st.data(),
)
def test_load_profile_round_trip(
    profile: int, start: datetime, period: int, channels: list[tuple[str, str]], data: st.DataObject
) -> None:
    rows = data.draw(st.lists(st.tuples(*[st.decimals(0, 9999, places=3).map(str) for _ in channels]), max_size=6))
    lp = iec.parse_load_profile(iec.build_load_profile(profile, start, period, channels, rows))
    (block,) = lp.blocks
    assert (block.profile, block.start, block.period_min, block.channels) == (profile, start, period, tuple(channels))
    expected_times = [start + i * timedelta(minutes=period) for i in range(len(rows))]
    assert [t for t, _ in lp.entries()] == expected_times
    assert [tuple(v.value for v in r) for _, r in lp.entries()] == [tuple(r) for r in rows]


@FAST
@given(st.text(st.sampled_from("1.8:-*()!/ab \x7f\t"), max_size=40))
def test_fast_line_path_agrees_with_the_char_by_char_parser(text: str) -> None:
    def run(fn: Callable[[str, int], object]) -> object:
        try:
            return fn(text, 0)
        except iec.IECError:
            return "error"

    fast = run(iec._split_sets)
    slow = run(iec._split_sets_slow)
    assert fast == slow


@FAST
@given(st.binary(max_size=300))
def test_bcc_equals_a_plain_xor_loop(data: bytes) -> None:
    start = next((i + 1 for i, b in enumerate(data) if b in (1, 2)), 0)
    end = next((i + 1 for i in range(start, len(data)) if data[i] in (3, 4)), len(data))
    assert iec.bcc(data) == xor(data[start:end])


# --------------------------------------------------------------------------------- fuzzing

PARSERS: list[Callable[[bytes], object]] = [
    iec.decode_to_json,
    iec.parse_data_block,
    iec.parse_data_message,
    iec.parse_command,
    iec.parse_identification,
    iec.parse_sign_on,
    iec.parse_ack_option,
    iec.parse_reply,
    iec.parse_load_profile,
]

VALID = [
    b"/?!\r\n/LGZ5\\2ZMG405000b.P07\r\n\x06050\r\n"
    + iec.build_data_block("0.0.0(23660088)\r\n1.8.0(0000004891.722*kWh)\r\n1.6.0(1.2*kW)(21-06-22 10:15)\r\n")
    + iec.break_command(),
    iec.password("00000000"),
    iec.build_data_message(iec.build_load_profile(1, "2106220015", 15, [("1.5.0", "kW")], [("1",), ("2",)])),
]


def _only_iec_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    try:
        parser(data)
    except iec.IECError as exc:
        assert exc.reason
        assert exc.position is None or 0 <= exc.position <= len(data)


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(frame: bytes, ops: list[tuple[int, int, int]]) -> bytes:
        b = bytearray(frame)
        for kind, where, byte in ops:
            if not b:
                break
            i = where % len(b)
            if kind == 0:
                b[i] = byte
            elif kind == 1:
                del b[i]
            elif kind == 2:
                b.insert(i, byte)
            else:
                b[i] ^= 1 << (byte % 8)
        return bytes(b)

    ops = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)
    return st.builds(mutate, st.sampled_from(VALID), ops)


@FAST
@given(st.sampled_from(PARSERS), st.binary(max_size=200))
def test_random_bytes_raise_only_iec_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    _only_iec_errors(parser, data)


@FAST
@given(st.sampled_from(PARSERS), _mutations())
def test_mutated_frames_raise_only_iec_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    _only_iec_errors(parser, data)


@FAST
@given(st.integers(0, 10_000), st.integers(0, 7))
def test_single_bit_flip_in_block_is_always_caught(where: int, bit: int) -> None:
    """XOR parity catches every single-bit error inside the BCC-covered bytes."""
    frame = bytearray(VALID[0])
    start = frame.index(0x02) + 1
    end = frame.index(0x03, start)
    i = start + where % (end - start + 2)  # data, ETX or the BCC itself
    frame[i] ^= 1 << bit
    with pytest.raises(iec.IECError):
        iec.decode_to_json(bytes(frame))


@FAST
@given(st.text(max_size=80))
def test_text_parsers_raise_only_iec_errors(text: str) -> None:
    for parser in (iec.parse_data_line, iec.parse_data_lines, iec.parse_load_profile, iec.parse_lp_timestamp):
        try:
            parser(text)
        except iec.IECError as exc:
            assert exc.reason


@pytest.mark.slow
@LONG
@given(st.sampled_from(PARSERS), st.binary(max_size=400) | _mutations())
def test_long_fuzz(parser: Callable[[bytes], object], data: bytes) -> None:
    _only_iec_errors(parser, data)
