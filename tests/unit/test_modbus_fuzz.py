"""Robustness of the Modbus codec: bad input only ever raises ModbusError (covers HES-6, HES-40).

A bounded slice runs by default; ``--run-slow`` runs the long version.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.protocols import modbus as M

TYPES = sorted(M.TYPE_WORDS)

registers = st.builds(
    lambda t, wo, bo, scale, enum: M.Register(
        name="r", table="input", address=0, type=t, word_order=wo, byte_order=bo,
        scale=Decimal(1) if t == "float32" else scale, enum=None if t == "float32" else enum),
    st.sampled_from(TYPES), st.sampled_from(["big", "little"]), st.sampled_from(["big", "little"]),
    st.sampled_from([Decimal(1), Decimal("0.1"), Decimal("0.001"), Decimal(10)]),
    st.none() | st.dictionaries(st.integers(-5, 5), st.text(max_size=5), min_size=1, max_size=3),
)
words = st.lists(st.integers(-2, 0x10001) | st.just(0xFFFF) | st.just(0x7FC0), max_size=6)


def _decode_only_modbus_errors(reg: M.Register, ws: list[int]) -> None:
    try:
        value = M.decode_register(reg, ws)
    except M.ModbusError:
        return
    assert isinstance(value, Decimal | str)
    if isinstance(value, Decimal):
        assert value.is_finite()


@settings(max_examples=300, deadline=None)
@given(registers, words)
def test_decoding_random_words_raises_only_modbus_errors(reg: M.Register, ws: list[int]) -> None:
    _decode_only_modbus_errors(reg, ws)


@settings(max_examples=300, deadline=None)
@given(registers, st.data())
def test_encode_then_decode_is_identity_for_integers(reg: M.Register, data: st.DataObject) -> None:
    if reg.type == "float32" or reg.enum is not None:
        return
    bits = 16 * M.TYPE_WORDS[reg.type]
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if reg.type.startswith("s") else (0, 2**bits - 1)
    steps = data.draw(st.integers(low, high))
    value = steps * reg.scale
    assert M.decode_register(reg, M.encode_register(reg, value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.none() | st.integers(0, 130))
def test_response_pdus_raise_only_modbus_errors(pdu: bytes, count: int | None) -> None:
    try:
        got = M.decode_response_pdu(pdu, count)
    except M.ModbusError:
        return
    assert all(0 <= w <= 0xFFFF for w in got)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_captured_frames_raise_only_modbus_errors(frame: bytes) -> None:
    try:
        doc = M.decode_to_json(frame, None)
    except M.ModbusError:
        return
    assert doc["framing"] in ("rtu", "tcp") and all(0 <= w <= 0xFFFF for w in doc["words"])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 247), st.sampled_from([3, 4]), st.lists(st.integers(0, 0xFFFF), max_size=125))
def test_good_rtu_frames_decode_to_their_words(unit: int, function: int, ws: list[int]) -> None:
    body = bytes([unit, function, 2 * len(ws)]) + b"".join(w.to_bytes(2, "big") for w in ws)
    frame = body + M.crc16_modbus(body).to_bytes(2, "little")
    assert M.decode_to_json(frame, None) == {"framing": "rtu", "unit": unit, "function": function, "words": ws}


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-70000, 70000) | st.text(max_size=8)
    | st.sampled_from(TYPES + ["input", "holding", "big", "little", "0.1", "identity"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "table", "address", "type", "scale", "word_order", "enum", "unit", "group",
                         "single_read", "max_registers", "bridge_gaps", "url"]), inner, max_size=6),
    max_leaves=12,
)
SOURCE = {"url": "https://x", "title": "t", "version": "1", "date": "2024"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(toml_values, max_size=4), toml_values, st.booleans())
def test_random_map_documents_raise_only_map_errors(regs: list[object], link: object, with_source: bool) -> None:
    doc: dict[str, object] = {"device": {"model": "x"}, "register": regs, "link": link}
    if with_source:
        doc["source"] = SOURCE
    try:
        m = M.parse_map(doc, "fuzz.toml")
    except M.ModbusMapError as exc:
        assert "fuzz.toml" in str(exc)
        return
    # whatever parses must plan and decode without surprises
    for request in M.plan_reads(m):
        assert 1 <= request.count <= m.max_registers
    values, errors = M.decode_words(m, {})
    assert values == {} and set(errors) == {r.name for r in m.registers}


@pytest.mark.slow
@settings(max_examples=20000, deadline=None)
@given(registers, words)
def test_decoding_random_words_long_run(reg: M.Register, ws: list[int]) -> None:
    _decode_only_modbus_errors(reg, ws)


def test_random_map_text_never_escapes_as_another_error() -> None:
    texts = ("", "[[register]]", "register = 3", "[device]\n[source]\nurl = 1", "\x00", "[link]\nmax_registers = 'a'")
    for text in texts:
        with pytest.raises(M.ModbusMapError):
            M.parse_map_text(text, "t.toml")
