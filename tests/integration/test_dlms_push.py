"""Data notifications pushed by the simulated meter to a listener over TCP (covers HES-11 pushed
alarms, HES-34 push, HES-40)."""

from __future__ import annotations

import datetime as dt
import queue
import socket
import time
from collections.abc import Callable

from osos.field import dlms_client as C
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import send_push
from osos.protocols import dlms as D

TR = dt.timezone(dt.timedelta(hours=3))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)
EK = bytes(range(16))
AK = bytes(range(16, 32))


def _wait_for(cond: Callable[[], bool]) -> bool:
    """Handlers run in their own threads: wait (bounded) until ``cond`` holds."""
    for _ in range(500):
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _send_raw(listener: C.NotificationListener, apdu: bytes) -> None:
    with socket.create_connection((listener.host, listener.port), timeout=5) as sock:
        sock.sendall(D.wrap(apdu, 1, 102))


def _meter() -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=b"Lls-test-pw-7", ek=EK, ak=AK))


def test_plain_push_reaches_the_listener() -> None:
    meter = _meter()
    got: queue.Queue[C.Notification] = queue.Queue()
    with C.NotificationListener(got.put) as listener:
        meter.disconnector.action(1, D.i8(0), None)  # type: ignore[arg-type]  # relay opens locally
        send_push(meter, listener.host, listener.port, reason="relay")
        n = got.get(timeout=5)
    ldn, reason, when, energy, relay, event = n.body.items
    assert ldn.value == b"OSS0000000012345"
    assert reason.value == "relay"
    assert D.data_datetime(when) == NOW.astimezone(TR) == n.when
    assert energy.value == meter.registers()[0]
    assert relay.value is False
    assert event.value == 59  # remote disconnection event code from the data file
    assert n.source_wport == 1 and not n.authenticated


def test_ciphered_push_is_authenticated_and_replays_dropped() -> None:
    meter = _meter()
    got: queue.Queue[C.Notification] = queue.Queue()
    with C.NotificationListener(got.put, keys={meter.system_title: (EK, AK)}) as listener:
        send_push(meter, listener.host, listener.port, reason="alarm", ciphered=True)
        first = got.get(timeout=5)
        assert first.authenticated and first.system_title == meter.system_title
        assert first.body.items[1].value == "alarm"
        captured = meter.push_apdu("captured", ciphered=True)
        _send_raw(listener, captured)
        assert got.get(timeout=5).body.items[1].value == "captured"
        _send_raw(listener, captured)  # an attacker replays the captured frame: dropped
        assert _wait_for(lambda: listener.rejected == 1)
        send_push(meter, listener.host, listener.port, reason="later", ciphered=True)
        assert got.get(timeout=5).body.items[1].value == "later"
        assert captured[0] == D.Tag.GENERAL_GLO_CIPHER
    assert listener.rejected == 1


def test_ciphered_push_with_unknown_key_is_rejected() -> None:
    meter = _meter()
    got: queue.Queue[C.Notification] = queue.Queue()
    with C.NotificationListener(got.put, keys={meter.system_title: (bytes(16), AK)}) as listener:
        send_push(meter, listener.host, listener.port, ciphered=True)
        assert _wait_for(lambda: listener.rejected == 1)
        send_push(meter, listener.host, listener.port)  # a plain one still goes through after it
        assert got.get(timeout=5).authenticated is False
    assert listener.rejected == 1


def test_alarm_push_on_remote_disconnect() -> None:
    from osos.field.meters.dlms_server import AlarmPush, WrapperServer

    meter = _meter()
    got: queue.Queue[C.Notification] = queue.Queue()
    with C.NotificationListener(got.put, keys={meter.system_title: (EK, AK)}) as listener, WrapperServer(meter) as srv:
        alarms = AlarmPush(meter, listener.host, listener.port, ciphered=True)
        with C.DlmsClient(C.WrapperTransport(srv.host, srv.port, 32),
                          C.Security("lls", password=b"Lls-test-pw-7")) as c:
            c.disconnect()
        n = got.get(timeout=5)
        alarms.close()
    assert n.authenticated
    ldn, reason, _, _, relay, event = n.body.items
    assert (reason.value, relay.value, event.value) == ("remote_disconnection", False, 59)
    assert alarms.sent == 1 and alarms.failed == 0
