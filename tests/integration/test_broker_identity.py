"""Device identity on the broker (issue 7, "Device identity on the broker"; HES-4, HES-5, HES-52, HES-56).

Against the run's real Mosquitto with dynamic security: every client needs its own account, a device may publish
only on its own uplink/emergency topics and subscribe only to its own downlink, on the plain (mounted) listener as
on the TLS one; a legacy-marked device gets the shared MASS topics; a disabled account cannot connect.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from osos.protocols import mass

pytestmark = pytest.mark.integration


def connect(mqtt_broker, username: str | None, password: str | None, *, tls: bool,  # type: ignore[no-untyped-def]
            ca: bool = True) -> tuple[mqtt.Client, Any]:
    """Connect synchronously; returns (client, CONNACK reason code or the exception raised)."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"t-{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(mqtt_broker.ca) if ca else None)
    done = threading.Event()
    result: list[Any] = []

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        result.append(rc)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect(mqtt_broker.host, mqtt_broker.port_for(tls))
    except (OSError, ssl.SSLError) as exc:
        return client, exc
    client.loop_start()
    done.wait(10)
    return client, (result[0] if result else "no CONNACK")


def ok(rc: Any) -> bool:
    return hasattr(rc, "is_failure") and not rc.is_failure


class HeadendView:
    """What the head-end's account receives: every uplink filter, plain and mounted (the ACL's full view)."""

    def __init__(self, mqtt_broker, root: str) -> None:  # type: ignore[no-untyped-def]
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client = mqtt_broker.headend_client(root, client_id=f"he-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.got.put((m.topic, bytes(m.payload)))
        filters = mqtt_broker.headend_filters(root)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters + ["plain/" + f for f in filters]])
        assert subscribed.wait(10)

    def drain_until(self, payload: bytes, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Everything received up to and including ``payload`` (which must arrive)."""
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.got.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(item)
            if item[1] == payload:
                return seen
        raise AssertionError(f"{payload!r} never reached the head-end; saw {seen}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_anonymous_and_wrong_passwords_are_refused(mqtt_broker, topic_prefix) -> None:
    creds = mqtt_broker.device(topic_prefix, "OSS", "7000000001")
    for tls in (False, True):
        client, rc = connect(mqtt_broker, None, None, tls=tls)
        assert not ok(rc), f"anonymous connect accepted (tls={tls})"
        client.loop_stop()
        client, rc = connect(mqtt_broker, creds.username, creds.password + "x", tls=tls)
        assert not ok(rc), f"wrong password accepted (tls={tls})"
        client.loop_stop()
        client, rc = connect(mqtt_broker, creds.username, creds.password, tls=tls)
        assert ok(rc), rc
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_device_speaks_only_for_itself(mqtt_broker, topic_prefix, tls: bool) -> None:
    topics = mass.Topics(topic_prefix)
    a, b = mass.Device("OSS", "7000000011"), mass.Device("OSS", "7000000012")
    creds_a = mqtt_broker.device(topic_prefix, a.flag, a.serial)
    mqtt_broker.device(topic_prefix, b.flag, b.serial)
    view = HeadendView(mqtt_broker, topic_prefix)
    client, rc = connect(mqtt_broker, creds_a.username, creds_a.password, tls=tls)
    assert ok(rc), rc
    try:
        # publishing as B (uplink and emergency) is dropped by the broker; A's own message afterwards arrives
        client.publish(topics.uplink(b), b"forged-uplink", qos=1).wait_for_publish(5)
        client.publish(topics.emergency(b), b"forged-alarm", qos=1).wait_for_publish(5)
        client.publish(topics.legacy_uplink, b"forged-legacy", qos=1).wait_for_publish(5)
        client.publish(topics.uplink(a), b"own-uplink", qos=1).wait_for_publish(5)
        client.publish(topics.emergency(a), b"own-alarm", qos=1).wait_for_publish(5)
        seen = view.drain_until(b"own-uplink") + view.drain_until(b"own-alarm")
        payloads = [p for _, p in seen]
        assert payloads == [b"own-uplink", b"own-alarm"]
        mark = "plain/" if not tls else ""
        assert [t for t, _ in seen] == [mark + topics.uplink(a), mark + topics.emergency(a)]

        # subscribing to B's downlink is refused; A's own downlink works
        granted: queue.Queue[list[Any]] = queue.Queue()
        received: queue.Queue[bytes] = queue.Queue()
        client.on_subscribe = lambda c, u, mid, codes, props: granted.put(codes)
        client.on_message = lambda c, u, m: received.put(bytes(m.payload))
        client.subscribe(topics.downlink(b), qos=1)
        assert all(code.is_failure for code in granted.get(timeout=5))
        client.subscribe(topics.downlink(a), qos=1)
        assert not any(code.is_failure for code in granted.get(timeout=5))
        for device, payload in ((b, b"for-b"), (a, b"for-a")):
            view.client.publish(mark + topics.downlink(device), payload, qos=1).wait_for_publish(5)
        assert received.get(timeout=5) == b"for-a"
        time.sleep(0.3)
        assert received.empty()
    finally:
        client.disconnect()
        client.loop_stop()
        view.close()


def test_only_a_legacy_device_may_use_the_shared_topics(mqtt_broker, topic_prefix) -> None:
    topics = mass.Topics(topic_prefix)
    legacy = mqtt_broker.device(topic_prefix, "XYZ", "7000000021", legacy=True)
    modern = mqtt_broker.device(topic_prefix, "XYZ", "7000000022")
    view = HeadendView(mqtt_broker, topic_prefix)
    clients = []
    try:
        for creds in (modern, legacy):
            client, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
            assert ok(rc), rc
            clients.append(client)
            client.publish(topics.legacy_uplink, creds.username.encode(), qos=1).wait_for_publish(5)
        # the legacy device's own per-device topic is not its topic either
        clients[1].publish(topics.uplink(mass.Device("XYZ", "7000000021")), b"legacy-per-device",
                           qos=1).wait_for_publish(5)
        clients[0].publish(topics.uplink(mass.Device("XYZ", "7000000022")), b"end", qos=1).wait_for_publish(5)
        seen = view.drain_until(b"end")
        assert [(t, p) for t, p in seen] == [
            (topics.legacy_uplink, b"XYZ7000000021"),
            (topics.uplink(mass.Device("XYZ", "7000000022")), b"end"),
        ]
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        view.close()


def test_a_disabled_account_cannot_connect_and_is_disconnected(mqtt_broker, topic_prefix) -> None:
    creds = mqtt_broker.device(topic_prefix, "OSS", "7000000031")
    client, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
    assert ok(rc), rc
    mqtt_broker.admin.disable(creds.username)
    deadline = time.monotonic() + 5
    while client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.is_connected()  # the broker drops the live session
    client.loop_stop()
    again, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
    again.loop_stop()
    assert not ok(rc)
    mqtt_broker.admin.enable(creds.username)
    back, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
    assert ok(rc), rc
    back.disconnect()
    back.loop_stop()


def test_rotating_a_password_retires_the_old_one(mqtt_broker, topic_prefix) -> None:
    creds = mqtt_broker.device(topic_prefix, "OSS", "7000000041")
    new = mqtt_broker.admin.rotate_password(creds.username)
    assert new != creds.password
    old_client, rc_old = connect(mqtt_broker, creds.username, creds.password, tls=True)
    old_client.loop_stop()
    new_client, rc_new = connect(mqtt_broker, creds.username, new, tls=True)
    new_client.disconnect()
    new_client.loop_stop()
    assert not ok(rc_old) and ok(rc_new)


def test_tls_needs_the_ca(mqtt_broker, topic_prefix) -> None:  # covers HES-52, HES-53
    creds = mqtt_broker.device(topic_prefix, "OSS", "7000000051")
    _client, result = connect(mqtt_broker, creds.username, creds.password, tls=True, ca=False)
    assert isinstance(result, ssl.SSLCertVerificationError), result  # the system trust store does not know it
    client, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
    assert ok(rc), rc
    client.disconnect()
    client.loop_stop()


def test_the_headend_may_subscribe_with_a_share_group_but_devices_may_not_listen(mqtt_broker, topic_prefix) -> None:
    topics = mass.Topics(topic_prefix)
    view_client = mqtt_broker.headend_client(topic_prefix, client_id=f"he-{uuid.uuid4().hex[:8]}")
    granted: queue.Queue[list[Any]] = queue.Queue()
    view_client.on_subscribe = lambda c, u, mid, codes, props: granted.put(codes)
    view_client.loop_start()
    try:
        view_client.subscribe(f"$share/osos/{topics.uplink_filters[1]}", qos=1)
        assert not any(code.is_failure for code in granted.get(timeout=5))
        view_client.subscribe(f"$share/osos/plain/{topics.emergency_filter}", qos=1)
        assert not any(code.is_failure for code in granted.get(timeout=5))
    finally:
        view_client.loop_stop()
        view_client.disconnect()
    creds = mqtt_broker.device(topic_prefix, "OSS", "7000000061")
    client, rc = connect(mqtt_broker, creds.username, creds.password, tls=True)
    assert ok(rc), rc
    got: queue.Queue[list[Any]] = queue.Queue()
    client.on_subscribe = lambda c, u, mid, codes, props: got.put(codes)
    for pattern in (f"{topic_prefix}/#", topics.uplink_filters[1], f"$share/x/{topics.uplink_filters[1]}"):
        client.subscribe(pattern, qos=1)
        assert all(code.is_failure for code in got.get(timeout=5)), pattern
    client.disconnect()
    client.loop_stop()


def test_taking_over_another_devices_session_yields_none_of_its_downlink(mqtt_broker, topic_prefix) -> None:
    """MQTT lets a client with the same client id take over a session (Mosquitto does not compare usernames):
    with receive permissions denied by default, A inheriting B's persisted subscription still gets nothing."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topics = mass.Topics(topic_prefix)
    a, b = mass.Device("OSS", "7000000071"), mass.Device("OSS", "7000000072")
    creds_a = mqtt_broker.device(topic_prefix, a.flag, a.serial)
    creds_b = mqtt_broker.device(topic_prefix, b.flag, b.serial)
    shared_id = f"victim-{uuid.uuid4().hex[:8]}"

    def session(creds) -> tuple[mqtt.Client, queue.Queue[bytes]]:  # type: ignore[no-untyped-def]
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=shared_id)
        client.username_pw_set(creds.username, creds.password)
        got: queue.Queue[bytes] = queue.Queue()
        client.on_message = lambda c, u, m: got.put(bytes(m.payload))
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(mqtt_broker.host, mqtt_broker.plain_port, clean_start=False, properties=props)
        client.loop_start()
        return client, got

    victim, _ = session(creds_b)
    granted: queue.Queue[list[Any]] = queue.Queue()
    victim.on_subscribe = lambda c, u, mid, codes, props: granted.put(codes)
    deadline = time.monotonic() + 5
    while not victim.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.subscribe(topics.downlink(b), qos=1)
    assert not any(code.is_failure for code in granted.get(timeout=5))
    victim.disconnect()
    victim.loop_stop()
    thief, stolen = session(creds_a)  # same client id, A's own account: the broker resumes B's session
    deadline = time.monotonic() + 5
    while not thief.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    view = HeadendView(mqtt_broker, topic_prefix)
    try:
        view.client.publish("plain/" + topics.downlink(b), b"for-b-only", qos=1).wait_for_publish(5)
        view.client.publish("plain/" + topics.downlink(a), b"for-a", qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert [stolen.get_nowait() for _ in range(stolen.qsize())] == []  # A never subscribed to its own either
    finally:
        thief.disconnect()
        thief.loop_stop()
        view.close()


def test_an_account_bound_to_its_client_id_cannot_knock_another_device_off(mqtt_broker, topic_prefix) -> None:
    """Provisioned with ``client_id`` (the demo binds every gateway so), A can use no other client id: it can
    neither take over B's session nor disconnect B by reusing B's id."""
    a_id, b_id = f"gw-a-{uuid.uuid4().hex[:6]}", f"gw-b-{uuid.uuid4().hex[:6]}"
    creds_a = mqtt_broker.device(topic_prefix, "OSS", "7000000081", client_id=a_id)
    creds_b = mqtt_broker.device(topic_prefix, "OSS", "7000000082", client_id=b_id)

    def login(creds, client_id: str) -> tuple[mqtt.Client, Any]:  # type: ignore[no-untyped-def]
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=client_id)
        client.username_pw_set(creds.username, creds.password)
        client.tls_set(ca_certs=str(mqtt_broker.ca))
        done, result = threading.Event(), []
        client.on_connect = lambda c, u, f, rc, p: (result.append(rc), done.set())
        client.on_disconnect = lambda *args: done.set()
        client.connect(mqtt_broker.host, mqtt_broker.tls_port)
        client.loop_start()
        done.wait(10)
        return client, (result[0] if result else None)

    victim, rc = login(creds_b, b_id)
    assert ok(rc), rc
    try:
        thief, rc = login(creds_a, b_id)
        thief.loop_stop()
        assert not ok(rc)  # A may not use B's id ...
        time.sleep(0.3)
        assert victim.is_connected()  # ... and B was not disconnected by the attempt
        own, rc = login(creds_a, a_id)
        assert ok(rc), rc
        own.disconnect()
        own.loop_stop()
    finally:
        victim.disconnect()
        victim.loop_stop()
