"""Fuzzing the DLMS decoder and the simulated meter's request handling (covers HES-6, HES-40).

A bounded run by default; `--run-slow` runs the long one. Properties: any input either decodes or
raises DLMSError (never another exception); A-XDR values survive encode/decode unchanged; the meter
answers any bytes without raising.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.protocols import dlms as D
from osos.protocols import dlms_hdlc as H

EK = bytes(range(16))
AK = bytes(range(16, 32))

SEEDS = [
    bytes.fromhex("C0010000080000010000FF0200"),
    bytes.fromhex("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B"),
    D.encode_apdu(D.GetResponse(D.array([D.struct_(D.octets(bytes(12)), D.u32(7))] * 3))),
    D.encode_apdu(D.GetResponseBlock(False, 1, b"\x01\x02")),
    D.encode_apdu(D.ActionResponse(D.ActionResult.SUCCESS, D.octets(bytes(17)))),
    D.encode_apdu(D.DataNotification(D.struct_(D.u8(1), D.visible("x")), 3, bytes(12))),
    D.wrap(bytes.fromhex("C0010000080000010000FF0200"), 16, 1),
    H.i_frame((1, 1), (16, 1), 0, 0, H.LLC_REQUEST + bytes.fromhex("C0010000080000010000FF0200")).to_bytes(),
    H.u_frame((1, 1), (16, 1), H.SNRM, H.negotiation(128, 128)).to_bytes(),
    bytes.fromhex("6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738BE10040E01000000065F"
                  "1F0400005E1D0400"),
    bytes.fromhex("DB084D4D4D0000BC614E1E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B"),
]


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        b = bytearray(seed)
        for pos, val in edits:
            b[pos % len(b)] = val
        return bytes(b[: max(1, len(b) - cut)])

    return st.builds(mutate, st.sampled_from(SEEDS),
                     st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
                     st.integers(0, 6))


def _check_decoder(data: bytes) -> None:
    for key in (None, EK, EK + AK):
        try:
            out = D.decode_to_json(data, key)
        except D.DLMSError:
            continue
        assert isinstance(out, dict) and "apdu" in out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), _mutations()))
def test_decoder_raises_only_dlms_error(data: bytes) -> None:
    _check_decoder(data)


@pytest.mark.slow
@settings(max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), _mutations()))
def test_decoder_raises_only_dlms_error_long(data: bytes) -> None:
    _check_decoder(data)


def _data() -> st.SearchStrategy[D.Data]:
    scalars = st.one_of(
        st.just(D.null()),
        st.booleans().map(D.boolean),
        st.integers(0, 2**32 - 1).map(D.u32),
        st.integers(-(2**31), 2**31 - 1).map(D.i32),
        st.integers(0, 255).map(D.u8),
        st.integers(-128, 127).map(D.i8),
        st.integers(0, 65535).map(D.u16),
        st.integers(-32768, 32767).map(D.i16),
        st.integers(0, 255).map(D.enum),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: D.Data(D.DataType.LONG64, v)),
        st.binary(max_size=300).map(D.octets),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(D.visible),
        st.text(max_size=20).map(lambda s: D.Data(D.DataType.UTF8_STRING, s)),
        st.text(alphabet="01", max_size=40).map(lambda s: D.Data(D.DataType.BIT_STRING, s)),
        st.binary(min_size=12, max_size=12).map(lambda b: D.Data(D.DataType.DATE_TIME, b)),
        st.binary(min_size=4, max_size=4).map(lambda b: D.Data(D.DataType.FLOAT32, b)),
    )
    nested = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=5).map(D.array),
                                                          st.lists(kids, max_size=5).map(lambda x: D.struct_(*x))),
                          max_leaves=30)
    long_array = st.builds(lambda n, x: D.array([x] * n), st.integers(120, 140), scalars)  # 2-byte length
    return st.one_of(nested, long_array)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_data())
def test_axdr_round_trip(d: D.Data) -> None:
    raw = D.encode_data(d)
    assert D.decode_data_exact(raw) == d
    assert D.decode_to_json(D.encode_apdu(D.GetResponse(d)), None)["data"] == D.data_to_json(d)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), _mutations()))
def test_meter_session_answers_any_bytes(data: bytes) -> None:
    meter = SimulatedDlmsMeter(lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                               MeterSecrets(password=b"12345678", ek=EK, ak=AK))
    for sap in (16, 32, 1):
        reply = meter.new_session(sap).handle(data)
        assert reply is None or isinstance(reply, bytes)
        if reply:
            D.decode_apdu(reply)  # whatever the meter says is itself well formed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_meter_answers_well_formed_requests_with_random_values(data: st.DataObject) -> None:
    """Valid APDUs aimed at real objects with random attribute ids, selectors and values: the meter
    answers each with a well-formed APDU (an error result is fine, an exception is not)."""
    meter = SimulatedDlmsMeter(lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                               MeterSecrets(password=b"12345678", ek=EK, ak=AK))
    session = meter.new_session(32)
    from dlms_cosem import enumerations as E
    from dlms_cosem.protocol import acse, xdlms
    from dlms_cosem.protocol.xdlms.conformance import Conformance

    aarq = acse.ApplicationAssociationRequest(
        user_information=acse.UserInformation(content=xdlms.InitiateRequest(
            proposed_conformance=Conformance(get=True, set=True, action=True, selective_access=True,
                                             block_transfer_with_get_or_read=True))),
        authentication=E.AuthenticationMechanism.LLS, authentication_value=b"12345678")
    assert session.handle(bytes(aarq.to_bytes()))[0] == 0x61
    key = data.draw(st.sampled_from(sorted(meter.objects, key=lambda k: (k[0], k[1]))))
    index = data.draw(st.integers(0, 12))
    value = data.draw(_data())
    kind = data.draw(st.sampled_from(["get", "set", "action"]))
    ref = D.AttributeRef(key[0], key[1], index)
    if kind == "get":
        access = data.draw(st.one_of(st.none(), st.builds(D.AccessSelection, st.integers(0, 3), st.just(value))))
        apdu = D.GetRequest(ref, access)
    elif kind == "set":
        apdu = D.SetRequest(ref, value)
    else:
        apdu = D.ActionRequest(ref, data.draw(st.one_of(st.none(), st.just(value))))
    reply = session.handle(D.encode_apdu(apdu))
    assert reply is not None
    decoded = D.decode_apdu(reply)
    assert not isinstance(decoded, D.ExceptionResponse)
