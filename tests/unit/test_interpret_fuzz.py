"""Whatever arrives on the uplink, interpret() answers with an Interpretation and never raises: a poison message
must become a logged invalid row, not a worker stuck on an un-acknowledged message (HES-6).

covers HES-5, HES-6
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import event, given, settings
from hypothesis import strategies as st

from osos.headend.interpret import interpret
from osos.protocols import mass

TOPICS = mass.Topics("mass")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
# mostly well-formed headers, so the generated bodies reach the parsers behind the schema
functions = st.sampled_from(("read", "read", "read", *mass.FUNCTIONS)) | st.text(max_size=12)
serials = st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True) | st.text(max_size=8)
raw_texts = st.text(max_size=120) | st.sampled_from(
    [
        "\x02",
        "\x02\x03",
        "\x021.8.0(1*kWh)\r\n!\r\n\x03",
        "\x02P.01(2601010000)(00)(60)(1)(1.5)(kW)\r\n!\r\n\x03X",
        "1.8.0(",
        "0.0.0(1)(2)(3)\r\n" * 3,
        "\u20ac(1)",
        "\x02\u20ac(1)\r\n!\r\n\x03A",
        "1.8.0(1\u0131*kWh)",
    ]
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    body: dict = {
        "readDate": draw(st.text(max_size=25) | st.just("2026-11-21 10:00:00")),
        "timezone": draw(st.text(max_size=8) | st.just("+03:00")),
        "data": {
            "id": draw(st.text(max_size=30) | st.sampled_from(["/LGZ5\\2ZMG", "/LGZ5\u20ac"])),
            "rawData": draw(raw_texts),
        },
        "meter": draw(
            st.fixed_dictionaries({"flag": st.sampled_from(["MKL", "VIK", "lgz"]), "serialNumber": serials})
            | st.dictionaries(st.sampled_from(["flag", "serialNumber"]), st.text(max_size=10), max_size=2)
        ),
        "extra": draw(json_values),
    }
    if draw(st.booleans()):
        body["data"]["protocol"] = draw(st.sampled_from(["dlms", "modbus", "mbus", "zzz"]) | st.text(max_size=6))
        body["data"]["rawHex"] = draw(st.text(alphabet="0123456789abcdefXZ ", max_size=40))
        body["data"]["records"] = draw(json_values)
    msg = {
        "device": {"flag": draw(st.sampled_from(["OSS", "XYZ", "x"])), "serialNumber": draw(serials)},
        "function": draw(functions),
        "referenceId": draw(st.text(max_size=10)),
        draw(st.sampled_from(["response", "response", "request"])): draw(st.just(body) | json_values),
    }
    if draw(st.booleans()):
        msg["messageStatus"] = draw(st.sampled_from(["fail", "success"]))
    return json.dumps(msg).encode()


@settings(max_examples=400, deadline=None)
@given(payload=envelopes(), legacy=st.booleans())
def test_interpret_never_raises_on_envelope_shaped_input(payload: bytes, legacy: bool) -> None:
    topic = TOPICS.legacy_uplink if legacy else "mass/device/OSS/1/to_server"
    it = interpret(payload, topic, TOPICS, NOW)
    event(f"{it.status}: {(it.error or '').split(':')[0]}")
    assert it.status in ("ok", "invalid", "rejected")
    assert it.dedup_key
    # the last-resort guard turns parser bugs into "internal:" errors; the fuzz wants none of those
    assert not (it.error or "").startswith("internal:"), it.error
    if it.status != "ok":
        assert it.error


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_interpret_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    it = interpret(payload, TOPICS.legacy_uplink, TOPICS, NOW)
    assert it.status == "invalid" and it.error and not it.error.startswith("internal:")


def test_characters_that_cannot_come_off_a_meter_line_are_invalid_not_a_crash() -> None:
    """Regression: text outside latin-1 in rawData or the identification line once raised UnicodeEncodeError."""
    for raw, ident in (("\x02\u20ac(1)\r\n!\r\n\x03A", "/LGZ5X"), ("1.8.0(1*kWh)", "/LGZ5\u20ac")):
        msg = {
            "device": {"flag": "OSS", "serialNumber": "1"},
            "function": "read",
            "referenceId": "r",
            "response": {"meter": {"flag": "LGZ", "serialNumber": "2"}, "data": {"id": ident, "rawData": raw}},
        }
        it = interpret(json.dumps(msg).encode(), "mass/device/OSS/1/to_server", TOPICS, NOW)
        assert it.status == "invalid"
        assert it.error is not None and it.error.startswith("format:") and "\u20ac" in it.error
