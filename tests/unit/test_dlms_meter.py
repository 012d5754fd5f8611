"""The simulated meter without sockets: association, block transfer state, energy model, special
days (covers HES-37, HES-40, AMR-2, AMR-4)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osos.field.meters.dlms_energy import EnergyModel
from osos.field.meters.dlms_meter import MeterProfile, MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_session import MeterSession
from osos.protocols import dlms as D
from osos.tariff.dlms_calendar import ActivityCalendar

NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
# Green Book LLS example AARQ: password "12345678", proposed conformance 007E1F, max PDU 0x04B0
GB_AARQ_LLS = bytes.fromhex(
    "6036A1090607608574050801018A0207808B0760857405080201AC0A80083132333435363738"
    "BE10040E01000000065F1F0400007E1F04B0"
)
CLOCK = D.AttributeRef(8, D.obis_bytes("0.0.1.0.0.255"), 2)
PROFILE = D.AttributeRef(7, D.obis_bytes("1.0.99.1.0.255"), 2)


def _meter(password: bytes = b"12345678") -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=password, ek=bytes(16), ak=bytes(16)))


def ask(s: MeterSession, apdu: D.Apdu) -> D.Apdu:
    reply = s.handle(D.encode_apdu(apdu))
    assert reply is not None
    return D.decode_apdu(reply)


def _associated() -> tuple[SimulatedDlmsMeter, MeterSession]:
    m = _meter()
    s = m.new_session(32)
    aare = D.decode_apdu(s.handle(GB_AARQ_LLS) or b"")
    assert isinstance(aare, D.AcseApdu) and aare.parsed.result == 0
    return m, s


def test_green_book_lls_aarq_is_accepted() -> None:
    m = _meter()
    reply = m.new_session(32).handle(GB_AARQ_LLS)
    out = D.decode_to_json(reply or b"", None)
    assert out["apdu"] == "aare" and out["result"] == "accepted"
    assert out["user_information"] == "InitiateResponse"


def test_green_book_lls_aarq_with_another_password_is_rejected() -> None:
    reply = _meter(b"87654321").new_session(32).handle(GB_AARQ_LLS)
    out = D.decode_to_json(reply or b"", None)
    assert out["result"] == "rejected_permanent"
    assert out["result_source_diagnostics"] == "authentication_failed"


def test_lls_aarq_on_the_hls_client_address_is_rejected() -> None:
    out = D.decode_to_json(_meter().new_session(1).handle(GB_AARQ_LLS) or b"", None)
    assert out["result"] == "rejected_permanent"


def test_get_clock_returns_meter_local_time() -> None:
    _, s = _associated()
    reply = ask(s, D.GetRequest(CLOCK))
    assert isinstance(reply, D.GetResponse) and reply.data is not None
    assert D.data_datetime(reply.data) == NOW.astimezone(dt.timezone(dt.timedelta(hours=3)))


def test_unknown_object_and_attribute() -> None:
    _, s = _associated()
    unknown = D.GetRequest(D.AttributeRef(3, D.obis_bytes("1.0.2.8.0.255"), 2))
    assert ask(s, unknown).error == D.DataAccessResult.OBJECT_UNDEFINED
    bad_attr = D.GetRequest(D.AttributeRef(8, CLOCK.obis, 42))
    assert ask(s, bad_attr).error == D.DataAccessResult.OBJECT_UNDEFINED


def test_block_transfer_state_machine() -> None:
    _, s = _associated()
    first = ask(s, D.GetRequest(PROFILE))
    assert isinstance(first, D.GetResponseBlock) and first.block_number == 1 and not first.last
    wrong = ask(s, D.GetRequestNext(5))
    assert isinstance(wrong, D.GetResponseBlock) and wrong.last
    assert wrong.error == D.DataAccessResult.DATA_BLOCK_NUMBER_INVALID
    after = ask(s, D.GetRequestNext(1))
    assert after.error == D.DataAccessResult.NO_LONG_GET_IN_PROGRESS
    # a full pass reassembles to the whole buffer
    raw = bytearray()
    reply = ask(s, D.GetRequest(PROFILE))
    while isinstance(reply, D.GetResponseBlock) and reply.raw is not None:
        raw += reply.raw
        if reply.last:
            break
        reply = ask(s, D.GetRequestNext(reply.block_number))
    assert len(D.decode_data_exact(bytes(raw)).items) == 7 * 24 + 1


def test_special_days_insert_and_delete() -> None:
    m, s = _associated()
    sd = D.AttributeRef(11, D.obis_bytes("0.0.11.0.0.255"), 1)
    # a special day naming a day profile the calendar does not have is refused (it could not be run)
    bad = D.struct_(D.u16(7), D.octets(bytes([0xFF, 0xFF, 10, 29, 0xFF])), D.u8(2))
    refused = ask(s, D.ActionRequest(sd, bad))
    assert isinstance(refused, D.ActionResponse) and refused.result == D.ActionResult.TYPE_UNMATCHED
    entry = D.struct_(D.u16(7), D.octets(bytes([0xFF, 0xFF, 10, 29, 0xFF])), D.u8(1))
    ok = ask(s, D.ActionRequest(sd, entry))
    assert ok == D.ActionResponse(D.ActionResult.SUCCESS, invoke=ok.invoke)
    table = m.objects[(11, sd.obis)].get(2, None)
    assert table.items == (entry,)
    delete = D.AttributeRef(11, sd.obis, 2)
    ask(s, D.ActionRequest(delete, D.u16(7)))
    assert m.objects[(11, sd.obis)].get(2, None).items == ()


PROFILE_DATA = MeterProfile.load()
TZ = dt.timezone(dt.timedelta(hours=3))


def _calendar(actions: list[list[object]], special: list[dict[str, object]] | None = None) -> ActivityCalendar:
    return ActivityCalendar.from_toml({
        "seasons": [{"name": "all", "start": "01-01", "week": "w"}],
        "weeks": [{"name": "w", "days": [1, 1, 1, 1, 1, 1, 1]}],
        "days": [{"id": 1, "actions": actions}, {"id": 2, "actions": [["00:00", 4]]}],
        "special_days": special or [],
    })


DEFAULT_BANDS = [["00:00", 3], ["06:00", 1], ["17:00", 2], ["22:00", 3]]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60 * 24 * 400), st.integers(0, 60 * 24 * 30))
def test_energy_model_invariants(minutes: int, later: int) -> None:
    """AMR-2: total = T1+T2+T3+T4 at every instant; registers never go backwards."""
    epoch = dt.datetime(2026, 1, 1, tzinfo=TZ)
    model = EnergyModel(PROFILE_DATA, epoch, _calendar(DEFAULT_BANDS))
    t1 = epoch + dt.timedelta(minutes=minutes)
    a = model.registers(t1)
    b = model.registers(t1 + dt.timedelta(minutes=later))
    assert a[0] == sum(a[1:]) and b[0] == sum(b[1:])
    assert all(y >= x for x, y in zip(a, b, strict=True))


def test_energy_model_full_day_matches_the_table() -> None:
    epoch = dt.datetime(2026, 1, 1, tzinfo=TZ)
    model = EnergyModel(PROFILE_DATA, epoch, _calendar(DEFAULT_BANDS))
    day = model.registers(epoch + dt.timedelta(days=1))
    start = model.registers(epoch)
    assert day[0] - start[0] == sum(PROFILE_DATA.consumption_wh) * 10
    # T2 (peak 17-22) gets exactly hours 17..21 of the table
    assert day[2] - start[2] == sum(PROFILE_DATA.consumption_wh[17:22]) * 10


def test_meter_needs_aware_clock() -> None:
    with pytest.raises(ValueError, match="aware"):
        SimulatedDlmsMeter(lambda: dt.datetime(2026, 1, 1), MeterSecrets())


def test_energy_model_splits_an_hour_at_a_half_hour_switch() -> None:
    epoch = dt.datetime(2026, 1, 1, tzinfo=TZ)
    model = EnergyModel(PROFILE_DATA, epoch, _calendar([["00:00", 3], ["06:00", 1], ["17:30", 2], ["22:00", 3]]))
    before = model.registers(epoch + dt.timedelta(hours=17))
    after = model.registers(epoch + dt.timedelta(hours=18))
    e17 = PROFILE_DATA.consumption_wh[17] * 10  # 520 Wh in 0.1 Wh units
    assert after[1] - before[1] == e17 * 30 // 60  # 17:00-17:30 on T1
    assert after[2] - before[2] == e17 - e17 * 30 // 60  # 17:30-18:00 on T2, exact total
    mid = model.registers(epoch + dt.timedelta(hours=17, minutes=45))
    assert mid[1] - before[1] == e17 * 1800 // 3600 and mid[2] - before[2] == e17 * 900 // 3600


def test_special_day_and_calendar_change_move_energy_between_registers() -> None:
    epoch = dt.datetime(2026, 1, 1, tzinfo=TZ)
    holiday = _calendar(DEFAULT_BANDS, [{"date": "2026-01-02", "day": 2}])  # 2 Jan all T4
    model = EnergyModel(PROFILE_DATA, epoch, holiday)
    d1 = model.registers(epoch + dt.timedelta(days=1))
    d2 = model.registers(epoch + dt.timedelta(days=2))
    assert d2[4] - d1[4] == sum(PROFILE_DATA.consumption_wh) * 10
    assert d2[1:4] == d1[1:4]
    # from 3 Jan 12:00 a flat T1 calendar is activated: the afternoon goes to T1, the morning did not
    model.change_calendar(epoch + dt.timedelta(days=2, hours=12), _calendar([["00:00", 1]]))
    d3 = model.registers(epoch + dt.timedelta(days=3))
    assert d3[2] == d2[2]  # no peak energy after the switch
    assert d3[3] - d2[3] == sum(PROFILE_DATA.consumption_wh[0:6]) * 10
    assert d3[1] - d2[1] == sum(PROFILE_DATA.consumption_wh[6:24]) * 10
    assert model.registers(epoch + dt.timedelta(days=2)) == d2  # the past is unchanged
