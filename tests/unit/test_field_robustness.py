"""Whatever arrives on a link, the simulated meter and the interpreter fail only in their own way."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from osos.field import directives as d
from osos.field.meters.brands import brand
from osos.field.meters.iec import IecPortSession, SimMeter
from osos.field.meters.model import MeterModel
from osos.protocols import iec62056_21 as iec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASSWORD = "Fz-12ab!"  # the simulated meter's own password, configured explicitly (no built-in default)

# byte soup biased towards the protocol's own characters, so the fuzz reaches the deeper states
PROTOCOL_BYTES = st.lists(
    st.one_of(
        st.sampled_from([b"/?!\r\n", b"\x06051\r\n", b"\x06050\r\n", b"\x01", b"\x02", b"\x03", b"\x15",
                         iec.password(PASSWORD), iec.read_request("1.8.0"), iec.break_command(),
                         iec.load_profile_request(1, "", "")]),
        st.binary(max_size=40),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(PROTOCOL_BYTES)
def test_meter_session_never_raises(chunks: list[bytes]) -> None:
    meter = SimMeter(MeterModel("1", "kombi", T0), brand("elektromed"), password=PASSWORD)
    session = IecPortSession([meter], clock=lambda: T0)
    for chunk in chunks:
        for baud, out in session.feed(chunk):
            assert baud in (300, 600, 1200, 2400, 4800, 9600) and isinstance(out, bytes)
    assert session.state in ("idle", "ident_sent", "programming")


class ReplayLink:
    def __init__(self, data: bytes) -> None:
        self.data, self.bytes_in, self.bytes_out = data, 0, 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def configure(self, baud: int, bits: int = 7, parity: str = "E", stop: int = 1) -> None: ...

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        out, self.data = self.data[:max_bytes], self.data[max_bytes:]
        self.bytes_in += len(out)
        return out


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(sorted(d.standard_directives())))
def test_interpreter_fails_only_with_directive_error(answer: bytes, name: str) -> None:
    directive = d.standard_directives()[name]
    fast = {**directive, "steps": [
        {**step, "timeout_ms": 1} if step["op"] == "expect" else step for step in directive["steps"]
    ]}
    try:
        result = d.Interpreter(sleep=lambda s: None).run(fast, ReplayLink(answer), {"password": "x", "time": "t",
                                                                                      "date": "d"})
    except d.DirectiveError as exc:
        assert exc.fail_code in (d.FAIL_LINK, d.FAIL_TIMEOUT, d.FAIL_MISMATCH, d.FAIL_CAPTURE, d.FAIL_INVALID,
                                 d.FAIL_BCC)
    else:
        assert result.steps_run == len(fast["steps"])
