"""The simulated DLMS meter driven by the OSOS client over a real TCP socket with the IEC 62056-47
wrapper (covers HES-11, HES-35, HES-37, HES-40, AMR-2, AMR-4, AMR-5).

Expected energies are recomputed here hour by hour from the meter's data file, independently of
the meter's own day-based arithmetic.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from importlib import resources

import pytest

from osos.field import dlms_client as C
from osos.field.meters.dlms_meter import ClientPolicy, MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import WrapperServer
from osos.protocols import dlms as D

TR = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)  # 2026-11-22 00:30 in Istanbul
PASSWORD = b"Lls-test-pw-7"
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
PROFILE = "1.0.99.1.0.255"
EVENT_LOG = "0.0.99.98.0.255"

DATA = tomllib.loads(resources.files("osos.data").joinpath("dlms/simulated_meter.toml").read_text("utf-8"))


def expected_registers(local: dt.datetime) -> list[int]:
    """[total, T1..T4] in 0.1 Wh: walk every hour since the history start (7 days before the
    meter's start, at local midnight)."""
    e = DATA["energy"]
    epoch = dt.datetime(2026, 11, 15, tzinfo=TR)
    vals = list(e["initial"])
    t = epoch
    while t + dt.timedelta(hours=1) <= local:
        vals[e["tariff_by_hour"][t.hour]] += e["consumption_wh"][t.hour] * 10
        t += dt.timedelta(hours=1)
    if t < local:
        secs = int((local - t).total_seconds())
        vals[e["tariff_by_hour"][t.hour]] += e["consumption_wh"][t.hour] * 10 * secs // 3600
    vals[0] = sum(vals[1:])
    return vals


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class CountingTransport:
    """A real wrapper transport that also counts the APDUs it carried."""

    def __init__(self, inner: C.WrapperTransport) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    def send(self, apdu: bytes) -> None:
        self.sent.append(apdu)
        self.inner.send(apdu)

    def receive(self) -> bytes:
        return self.inner.receive()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def meter(clock: Clock) -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(clock, MeterSecrets(password=PASSWORD, ek=EK, ak=AK),
                              challenge=lambda n: bytes(range(1, n + 1)))


@pytest.fixture
def server(meter: SimulatedDlmsMeter) -> Iterator[WrapperServer]:
    with WrapperServer(meter) as srv:
        yield srv


def lls(server: WrapperServer, **kw: object) -> C.DlmsClient:
    return C.DlmsClient(C.WrapperTransport(server.host, server.port, 32), C.Security("lls", password=PASSWORD), **kw)


def hls(server: WrapperServer, ic: int = 1, ek: bytes = EK, **kw: object) -> C.DlmsClient:
    return C.DlmsClient(C.WrapperTransport(server.host, server.port, 1),
                        C.Security("hls-gmac", ek=ek, ak=AK, system_title=b"OSOHES01", invocation_counter=ic), **kw)


def test_lls_reads_clock_identity_and_registers(server: WrapperServer) -> None:
    with lls(server) as c:
        assert c.read_clock() == NOW.astimezone(TR)
        assert c.read_clock().utcoffset() == dt.timedelta(hours=3)
        assert c.read_data("0.0.42.0.0.255").value == b"OSS0000000012345"
        assert c.read_data("0.0.96.1.0.255").value == b"00012345"
        want = expected_registers(NOW.astimezone(TR))
        regs = [c.read_register(f"1.0.1.8.{t}.255") for t in range(5)]
    assert [u for _, u in regs] == ["Wh"] * 5
    assert [v for v, _ in regs] == [Decimal(w).scaleb(-1) for w in want]
    assert regs[0][0] == sum(v for v, _ in regs[1:])  # AMR-2: total = T1+T2+T3+T4


def test_get_with_list_reads_several_attributes_at_once(server: WrapperServer) -> None:
    t = CountingTransport(C.WrapperTransport(server.host, server.port, 32))
    with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
        before = len(t.sent)
        results = c.get_list([(8, "0.0.1.0.0.255", 2)] + [(3, f"1.0.1.8.{i}.255", 2) for i in range(5)]
                             + [(3, "1.0.2.8.0.255", 2)])
        assert len(t.sent) == before + 1  # one request for seven attributes (HES-36)
        big = c.get_list([(7, PROFILE, 2), (8, "0.0.1.0.0.255", 2)])  # too long: comes in blocks
    assert D.data_datetime(results[0]) == NOW.astimezone(TR)
    assert [r.value for r in results[1:6]] == expected_registers(NOW.astimezone(TR))
    assert results[6] == D.DataAccessResult.OBJECT_UNDEFINED
    assert len(big[0].items) == 7 * 24 + 1 and D.data_datetime(big[1]) == NOW.astimezone(TR)


def test_wrong_password_and_unknown_client_are_rejected(server: WrapperServer) -> None:
    bad = C.DlmsClient(C.WrapperTransport(server.host, server.port, 32), C.Security("lls", password=b"nope"))
    with pytest.raises(C.AssociationRejected, match="authentication_failed"):
        bad.associate()
    bad.close()
    stranger = C.DlmsClient(C.WrapperTransport(server.host, server.port, 77), C.Security("none"))
    with pytest.raises(C.AssociationRejected):
        stranger.associate()
    stranger.close()


def test_public_client_reads_but_cannot_write(server: WrapperServer) -> None:
    with C.DlmsClient(C.WrapperTransport(server.host, server.port, C.PUBLIC_CLIENT)) as c:
        assert c.read_clock() == NOW.astimezone(TR)
        with pytest.raises(C.AccessDenied, match="read_write_denied"):
            c.set_clock(NOW)
        with pytest.raises(C.AccessDenied, match="read_write_denied"):
            c.disconnect()
        with pytest.raises(C.AccessDenied, match="object_undefined"):
            c.get(3, "1.0.2.8.0.255", 2)


def test_set_clock_moves_time_and_logs_both_times(server: WrapperServer, clock: Clock) -> None:
    target = dt.datetime(2026, 11, 22, 0, 40, 0, tzinfo=TR)  # +10 minutes
    with lls(server) as c:
        c.set_clock(target)
        assert c.read_clock() == target
        clock.now += dt.timedelta(minutes=5)
        assert c.read_clock() == target + dt.timedelta(minutes=5)
        events = c.read_profile(EVENT_LOG)
    codes = [code for _, code in events]
    assert codes[-2:] == [DATA["events"]["clock_adjusted_old"], DATA["events"]["clock_adjusted_new"]]
    assert events[-2][0] == NOW.astimezone(TR)
    assert events[-1][0] == target


def test_load_profile_whole_buffer_uses_block_transfer(server: WrapperServer) -> None:
    t = CountingTransport(C.WrapperTransport(server.host, server.port, 32))
    with C.DlmsClient(t, C.Security("lls", password=PASSWORD)) as c:
        cols = c.read_capture_objects(PROFILE)
        assert cols == [(8, "0-0:1.0.0.255", 2), (1, "0-0:96.10.1.255", 2), (3, "1-0:1.8.0.255", 2)]
        assert c.get(7, PROFILE, 4).value == 3600  # AMR-5: 60-minute period
        sent_before = len(t.sent)
        rows = c.read_profile(PROFILE)
        nexts = [a for a in t.sent[sent_before:] if a[:2] == bytes([0xC0, 0x02])]
        events = c.read_profile(EVENT_LOG)
    # history from 2026-11-15 01:00 to the last whole hour, 2026-11-22 00:00 local, every hour...
    hourly = [r for r in rows if r[0].minute == 0]
    assert [r[0] for r in hourly] == [dt.datetime(2026, 11, 15, 1, tzinfo=TR) + dt.timedelta(hours=h)
                                      for h in range(7 * 24)]
    assert all(status == 0 for _, status, _ in hourly)
    # ...plus one entry at the moment of the power cut the event log reports (AMR-5), status bit 7
    cuts = [when for when, code in events if code == DATA["events"]["power_down"]]
    assert len(cuts) == 1
    assert [r for r in rows if r[0].minute != 0] == [(cuts[0], 0x80, expected_registers(cuts[0])[0])]
    assert len(rows) == 7 * 24 + 1
    assert len(nexts) >= 3  # 169 rows do not fit a 1024-byte APDU: several GetRequestNext
    for when, _, energy in hourly[::17]:
        assert energy == expected_registers(when)[0]


def test_load_profile_range_returns_only_rows_in_range(server: WrapperServer) -> None:
    start = dt.datetime(2026, 11, 21, 9, 30, tzinfo=TR)
    end = dt.datetime(2026, 11, 21, 13, 0, tzinfo=TR)
    with lls(server) as c:
        rows = c.read_profile(PROFILE, start, end)
        utc_rows = c.read_profile(PROFILE, start.astimezone(dt.UTC), end.astimezone(dt.UTC))
        empty = c.read_profile(PROFILE, dt.datetime(2020, 1, 1, tzinfo=TR), dt.datetime(2020, 1, 2, tzinfo=TR))
    assert [r[0] for r in rows] == [dt.datetime(2026, 11, 21, h, tzinfo=TR) for h in (10, 11, 12, 13)]
    assert [r[2] for r in rows] == [expected_registers(r[0])[0] for r in rows]
    # consumption between two rows is the hourly table value (AMR-5 interval energy)
    assert rows[1][2] - rows[0][2] == DATA["energy"]["consumption_wh"][10] * 10
    assert utc_rows == rows
    assert empty == []


def test_range_around_a_power_cut_includes_its_entry(server: WrapperServer) -> None:
    with lls(server) as c:
        cut = next(w for w, code in c.read_profile(EVENT_LOG) if code == DATA["events"]["power_down"])
        start = cut.replace(minute=0)
        rows = c.read_profile(PROFILE, start, start + dt.timedelta(hours=1))
    assert [(r[0], r[1]) for r in rows] == [(start, 0), (cut, 0x80), (start + dt.timedelta(hours=1), 0)]


def test_load_profile_entry_selection(server: WrapperServer) -> None:
    sel = D.AccessSelection(2, D.struct_(D.u32(2), D.u32(4), D.u16(1), D.u16(1)))
    with lls(server) as c:
        data = c.get(7, PROFILE, 2, sel)
    clocks = [D.data_datetime(row.items[0]) for row in data.items]
    assert clocks == [dt.datetime(2026, 11, 15, h, tzinfo=TR) for h in (2, 3, 4)]
    assert all(len(row.items) == 1 for row in data.items)


def test_disconnect_and_reconnect(server: WrapperServer, meter: SimulatedDlmsMeter) -> None:
    with lls(server) as c:
        assert c.disconnect_state() == (True, 1)
        c.disconnect()
        assert c.disconnect_state() == (False, 0)
        c.reconnect()
        assert c.disconnect_state() == (True, 1)
        codes = [code for _, code in c.read_profile(EVENT_LOG)]
    assert codes[-2:] == [DATA["events"]["remote_disconnection"], DATA["events"]["remote_reconnection"]]


def test_reconnect_in_mode_2_waits_for_the_customer(clock: Clock) -> None:
    meter = SimulatedDlmsMeter(clock, MeterSecrets(password=PASSWORD), disconnect_mode=2)
    with WrapperServer(meter) as srv, lls(srv) as c:
        c.disconnect()
        c.reconnect()
        assert c.disconnect_state() == (False, 2)  # ready_for_reconnection
        meter.disconnector.manual_reconnect()
        assert c.disconnect_state() == (True, 1)


def test_hls_gmac_association_and_ciphered_reads(server: WrapperServer) -> None:
    t = CountingTransport(C.WrapperTransport(server.host, server.port, 1))
    with C.DlmsClient(t, C.Security("hls-gmac", ek=EK, ak=AK, system_title=b"OSOHES01")) as c:
        assert c.read_clock() == NOW.astimezone(TR)
        assert len(c.read_profile(PROFILE)) == 7 * 24 + 1  # block transfer inside ciphered APDUs
        c.disconnect()
        assert c.disconnect_state() == (False, 0)
    # after the AARQ everything on the wire was ciphered (glo-xxx requests)
    assert t.sent[0][0] == 0x60
    assert all(a[0] in (0xC8, 0xC9, 0xCB, 0x62) for a in t.sent[1:])


def test_hls_checks_the_meter_identity(server: WrapperServer, meter: SimulatedDlmsMeter) -> None:
    ok = C.DlmsClient(C.WrapperTransport(server.host, server.port, 1),
                      C.Security("hls-gmac", ek=EK, ak=AK, meter_title=meter.system_title))
    ok.associate()
    assert ok.meter_title == b"OSS" + (12345).to_bytes(5, "big")  # flag + serial from the data file
    ok.close()
    other = C.DlmsClient(C.WrapperTransport(server.host, server.port, 1),
                         C.Security("hls-gmac", ek=EK, ak=AK, meter_title=b"OSS\x00\x00\x00\x00\x09",
                                       invocation_counter=100))
    with pytest.raises(C.DlmsClientError, match="not the expected"):
        other.associate()
    other.close()


def test_hls_with_wrong_key_fails(server: WrapperServer) -> None:
    c = hls(server, ek=bytes(16))
    with pytest.raises(C.AssociationRejected, match="authentication_failed"):
        c.associate()
    c.close()


def test_stale_invocation_counter_recovered_by_reading_the_meter_counter(server: WrapperServer) -> None:
    with hls(server, ic=500) as c:
        c.read_clock()
        used = c.sec.invocation_counter
    # a second head-end instance restarts from 1: the meter refuses the AARQ...
    stale = hls(server, ic=1)
    with pytest.raises(C.AssociationRejected):
        stale.associate()
    stale.close()

    # ...so it reads the expected counter through the public client and retries
    def reader() -> int:
        return C.read_invocation_counter(C.WrapperTransport(server.host, server.port, C.PUBLIC_CLIENT))

    assert reader() == used
    with hls(server, ic=1, counter_reader=reader) as c2:
        assert c2.read_clock() == NOW.astimezone(TR)
        assert c2.sec.invocation_counter > used


def test_meter_counter_ahead_during_a_session_is_followed(server: WrapperServer) -> None:
    a = hls(server, ic=10)
    a.associate()
    with hls(server, ic=1000) as b:  # same system title: pushes the meter's counter to ~1000
        b.read_clock()
    # a's next request uses a stale counter: the meter answers invocation-counter-error with the
    # counter it expects, the client jumps there and the request goes through
    assert a.read_clock() == NOW.astimezone(TR)
    assert a.sec.invocation_counter > 1000
    a.close()


def test_calendar_write_then_read_back(server: WrapperServer) -> None:
    from osos.tariff.dlms_calendar import ActivityCalendar

    cal = ActivityCalendar.from_toml({
        "seasons": [{"name": "all", "start": "01-01", "week": "std"}],
        "weeks": [{"name": "std", "days": [1, 1, 1, 1, 1, 2, 2]}],
        "days": [{"id": 1, "actions": [["00:00", 3], ["06:00", 1], ["17:00", 2], ["22:00", 3]]},
                 {"id": 2, "actions": [["00:00", 4]]}],
        "special_days": [{"date": "*-10-29", "day": 2}, {"date": "2026-05-19", "day": 2}],
    })
    with lls(server) as c:
        before = c.read_calendar()
        c.write_calendar(cal)
        after = c.read_calendar()
    assert before.selector_at(dt.datetime(2026, 11, 21, 18, 0)) == 2  # the meter's default bands
    assert after.seasons == cal.seasons and after.weeks == cal.weeks and after.days == cal.days
    assert after.special_days == cal.special_days
    assert after.selector_at(dt.datetime(2026, 10, 29, 12, 0)) == 4  # Republic Day: holiday tariff


def test_garbage_gets_an_exception_response_and_the_link_survives(server: WrapperServer) -> None:
    t = C.WrapperTransport(server.host, server.port, 32)
    t.send(b"\xc0\x01")
    reply = D.decode_apdu(t.receive())
    assert isinstance(reply, D.ExceptionResponse)
    c = C.DlmsClient(t, C.Security("lls", password=PASSWORD))
    c.associate()
    assert c.read_clock() == NOW.astimezone(TR)
    c.close()


def test_requests_before_association_are_refused(server: WrapperServer) -> None:
    t = C.WrapperTransport(server.host, server.port, 32)
    t.send(D.encode_apdu(D.GetRequest(D.AttributeRef(8, D.obis_bytes("0.0.1.0.0.255"), 2))))
    reply = D.decode_apdu(t.receive())
    assert reply == D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED, D.ServiceError.OPERATION_NOT_POSSIBLE)
    t.close()


def test_client_policy_can_forbid_writes(clock: Clock) -> None:
    meter = SimulatedDlmsMeter(clock, MeterSecrets(password=PASSWORD),
                               clients={32: ClientPolicy("lls", write=False)})
    with WrapperServer(meter) as srv, lls(srv) as c:
        with pytest.raises(C.AccessDenied):
            c.disconnect()
        assert c.disconnect_state() == (True, 1)


def _flat_calendar(selector: int) -> object:
    from osos.tariff.dlms_calendar import ActivityCalendar

    return ActivityCalendar.from_toml({
        "seasons": [{"name": "all", "start": "01-01", "week": "w"}],
        "weeks": [{"name": "w", "days": [1, 1, 1, 1, 1, 1, 1]}],
        "days": [{"id": 1, "actions": [["00:00", selector]]}],
    })


def test_registers_follow_a_newly_written_calendar(server: WrapperServer, clock: Clock) -> None:
    """HES-37 remote tariff programming, end to end: after a flat-T4 calendar is activated, the
    next hours' energy goes to T4 only (AMR-4)."""
    with lls(server) as c:
        before = [c.read_register(f"1.0.1.8.{t}.255")[0] for t in range(5)]
        c.write_calendar(_flat_calendar(4))
        clock.now += dt.timedelta(hours=2)  # 00:30 -> 02:30 local
        after = [c.read_register(f"1.0.1.8.{t}.255")[0] for t in range(5)]
    wh = DATA["energy"]["consumption_wh"]
    used = Decimal(wh[0] // 2 + wh[1] + wh[2] // 2)  # 00:30-01:00, 01:00-02:00, 02:00-02:30
    assert after[4] - before[4] == used
    assert after[1:4] == before[1:4]
    assert after[0] - before[0] == used


def test_passive_calendar_activates_at_its_activation_time(server: WrapperServer, clock: Clock) -> None:
    from osos.protocols import dlms_calendar_axdr as cc

    with lls(server) as c:
        values = _flat_calendar(1).to_dlms()  # type: ignore[attr-defined]
        for idx, data in cc.calendar_to_data(values).items():
            c.set(20, "0.0.13.0.0.255", idx + cc.PASSIVE_OFFSET, data)
        due = dt.datetime(2026, 11, 22, 1, 0, tzinfo=TR)
        c.set(20, "0.0.13.0.0.255", 10, D.octets(D.datetime_to_octets(due)))
        assert c.read_calendar().selector_at(dt.datetime(2026, 11, 22, 12, 0)) == 1  # still the old bands
        t3_before = c.read_register("1.0.1.8.3.255")[0]
        clock.now += dt.timedelta(hours=3)  # 03:30 local: the switch happened at 01:00
        assert c.read_calendar().selector_at(dt.datetime(2026, 11, 22, 18, 0)) == 1  # flat T1 now active
        t3_after = c.read_register("1.0.1.8.3.255")[0]
        assert c.get(20, "0.0.13.0.0.255", 10).value[:2] == b"\xff\xff"  # activation time consumed
    wh = DATA["energy"]["consumption_wh"]
    assert t3_after - t3_before == Decimal(wh[0] // 2)  # only 00:30-01:00 was still night tariff


def test_kombi_meter_reactive_registers_and_15_minute_profile(clock: Clock) -> None:
    """AMR-2/AMR-3 kombi: reactive quadrants 5.8.0-8.8.0; AMR-5: load profile 2 every 15 minutes."""
    meter = SimulatedDlmsMeter(clock, MeterSecrets(password=PASSWORD), kind="kombi")
    k = DATA["kombi"]
    with WrapperServer(meter) as srv, lls(srv) as c:
        active = expected_registers(NOW.astimezone(TR))
        used = active[0] - sum(DATA["energy"]["initial"][1:])
        q = [c.read_register(f"1.0.{n}.8.0.255") for n in (5, 6, 7, 8)]
        assert [u for _, u in q] == ["varh"] * 4
        assert [v for v, _ in q] == [Decimal(q0 + used * pct // 100).scaleb(-1)
                                     for q0, pct in zip(k["reactive_initial"], k["reactive_percent"], strict=True)]
        assert c.get(7, "1.0.99.2.0.255", 4).value == 900
        start = dt.datetime(2026, 11, 21, 10, 0, tzinfo=TR)
        rows = c.read_profile("1.0.99.2.0.255", start, start + dt.timedelta(hours=1))
        whole = c.read_profile("1.0.99.2.0.255")
    # 7 days of quarters from 2026-11-15 00:15 to 2026-11-22 00:30, plus the power-cut entry
    assert len(whole) == 7 * 96 + 2 + 1
    assert whole[-1][0] == dt.datetime(2026, 11, 22, 0, 30, tzinfo=TR)
    assert [r[0] for r in rows] == [start + dt.timedelta(minutes=15 * i) for i in range(5)]
    for when, status, p, q1, q4 in rows:
        e = expected_registers(when)[0]
        assert (status, p) == (0, e)
        spent = e - sum(DATA["energy"]["initial"][1:])
        assert (q1, q4) == (k["reactive_initial"][0] + spent * 30 // 100, k["reactive_initial"][3] + spent * 5 // 100)
    # a quarter of hour 10 is a quarter of that hour's consumption (linear accrual), in 0.1 Wh
    assert rows[1][2] - rows[0][2] == DATA["energy"]["consumption_wh"][10] * 10 // 4


def test_single_phase_meter_has_no_reactive_objects(clock: Clock) -> None:
    meter = SimulatedDlmsMeter(clock, MeterSecrets(password=PASSWORD), kind="mono")
    with WrapperServer(meter) as srv, lls(srv) as c:
        with pytest.raises(C.AccessDenied, match="object_undefined"):
            c.read_register("1.0.5.8.0.255")
        with pytest.raises(C.AccessDenied, match="object_undefined"):
            c.get(7, "1.0.99.2.0.255", 2)
