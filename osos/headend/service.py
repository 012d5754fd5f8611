"""The head-end process: MQTT uplink -> ingest -> store, and the order dispatcher (HES-1, HES-10, HES-24, HES-34).

Delivery guarantee: the MQTT session is persistent (fixed client id, no clean start) and messages are acknowledged
to the broker manually, only after the database transaction that stored them has committed. A crash before the
commit therefore means redelivery, and the unique dedup key makes redelivery harmless: every packet is stored
exactly once. Emergency-topic messages have their own queue, drained before any bulk batch (HES-24).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine

from osos.config import Settings
from osos.headend import logs, orders, scheduler
from osos.headend.ingest import Incoming, Ingestor, Outcome, write_log
from osos.protocols import mass
from osos.store.db import utcnow

log = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WAIT_S = 0.02
SESSION_EXPIRY_S = 7 * 24 * 3600
#: how often the scheduler thread looks for due schedules (HES-10); cron's resolution is a minute
SCHEDULE_PERIOD_S = 5.0
RETENTION_INTERVAL_S = 3600.0  # how often a head-end purges expired log records (HES-59)


@dataclass
class Stats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    errors: int = 0
    orders_sent: int = 0


def make_client(client_id: str, protocol: str = "v5", clean: bool = False) -> mqtt.Client:
    """A paho client for OSOS: MQTT 5 by default, 3.1.1 when the broker only speaks that (the JSON header is
    authoritative, so nothing is lost without v5 properties)."""
    proto = mqtt.MQTTv5 if protocol == "v5" else mqtt.MQTTv311
    kwargs: dict[str, Any] = {
        "callback_api_version": CallbackAPIVersion.VERSION2,
        "client_id": client_id,
        "protocol": proto,
    }
    if proto == mqtt.MQTTv311:
        kwargs["clean_session"] = clean
    return mqtt.Client(**kwargs)


def connect_properties(protocol: str, session_expiry_s: int) -> Properties | None:
    if protocol != "v5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = 1000
    return props


class HeadEnd:
    """Ingest worker and dispatcher in one process. Run N of them against one broker with ``share_group`` set."""

    def __init__(self, settings: Settings, engine: Engine, *, protocol: str = "v5") -> None:
        self.settings = settings
        self.engine = engine
        self.topics = mass.Topics(settings.topic_root, device_tls=settings.device_tls)
        self.ingestor = Ingestor(engine, self.topics, future_skew_s=settings.future_skew_s,
                                 time_sync_threshold_s=settings.time_sync_threshold_s)
        self.protocol = protocol
        self.stats = Stats()
        self.retention_interval_s = RETENTION_INTERVAL_S
        self.retry_policies = orders.parse_retry_policies(settings.order_retries)
        self.ingestor.retry_policies = self.retry_policies
        self._bulk: queue.Queue[Incoming] = queue.Queue()
        self._urgent: queue.Queue[Incoming] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self.client = make_client(settings.headend_id, protocol)
        self.client.manual_ack_set(True)
        if settings.mqtt_username:  # its own broker account: role osos-headend (osos.headend.provisioning)
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        if settings.mqtt_tls or settings.mqtt_ca:  # HES-52: certificate and host name always verified
            self.client.tls_set(
                ca_certs=str(settings.mqtt_ca) if settings.mqtt_ca else None,
                certfile=str(settings.mqtt_cert) if settings.mqtt_cert else None,
                keyfile=str(settings.mqtt_key) if settings.mqtt_key else None,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 10)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self, wait_connected_s: float = 10.0) -> None:
        props = connect_properties(self.protocol, SESSION_EXPIRY_S)
        kwargs: dict[str, Any] = {"keepalive": 30}
        if self.protocol == "v5":
            kwargs["clean_start"] = False
            kwargs["properties"] = props
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, **kwargs)
        self.client.loop_start()
        for target, name in ((self._ingest_loop, "osos-ingest"), (self._dispatch_loop, "osos-dispatch"),
                             (self._schedule_loop, "osos-schedule")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._start_retention()
        if wait_connected_s and not self._connected.wait(wait_connected_s):
            log.warning(
                "not connected to the broker at %s:%s yet; retrying in the background",
                self.settings.mqtt_host,
                self.settings.mqtt_port,
            )

    # -- log retention (HES-59): apart from ingest and dispatch ------------------------------------------------
    def _start_retention(self) -> None:
        t = threading.Thread(target=self._retention_loop, name="osos-retention", daemon=True)
        t.start()
        self._threads.append(t)

    def _retention_loop(self) -> None:
        """Purge expired log records at start and then every ``retention_interval_s``; N workers purging the
        same rows is harmless (a delete of what is gone deletes nothing)."""
        while not self._stop.is_set():
            try:
                with self.engine.begin() as conn:
                    deleted = logs.purge(conn, utcnow())
                if any(deleted.values()):
                    log.info("log retention: deleted %s", {k: v for k, v in deleted.items() if v})
            except Exception:  # the next round tries again; ingest never waits for this
                log.exception("log retention failed")
            self._stop.wait(self.retention_interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wake_dispatcher(self) -> None:
        """Called by the API in the same process after creating an order, so it leaves at once."""
        self._wake.set()

    # -- MQTT callbacks (paho's network thread: keep them short) -------------------------------------------------
    def _filters(self) -> list[str]:
        share = f"$share/{self.settings.share_group}/" if self.settings.share_group else ""
        return [share + f for f in (*self.topics.uplink_filters, *self.topics.emergency_filters)]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe([(f, 1) for f in self._filters()])
        self._connected.set()
        log.info("head-end connected to %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Incoming keeps only hash, size and the first 4 KiB of a payload over mass.MAX_PAYLOAD (HES-6)
        item = Incoming(topic=msg.topic, payload=bytes(msg.payload), received_at=utcnow(), token=(msg.mid, msg.qos))
        self.stats.received += 1
        if self.topics.is_emergency(msg.topic):
            self._urgent.put(item)
        else:
            self._bulk.put(item)

    # -- ingest -----------------------------------------------------------------------------------------------
    def _next_batch(self) -> list[Incoming]:
        try:
            return [self._urgent.get_nowait()]
        except queue.Empty:
            pass
        try:
            first = self._bulk.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(batch) < BATCH_MAX and self._urgent.empty():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._bulk.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _ingest_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                outcomes = self.ingestor.process(batch)
            except Exception:  # never let one batch kill the worker; the messages stay un-acked and come again
                log.exception("ingest failed for a batch of %d", len(batch))
                continue
            self._settle(outcomes)

    def _settle(self, outcomes: list[Outcome]) -> None:
        for out in outcomes:
            if out.status == "stored":
                self.stats.stored += 1
            elif out.status == "duplicate":
                self.stats.duplicates += 1
            elif out.status in ("invalid", "rejected"):
                self.stats.invalid += 1
            else:
                self.stats.errors += 1
            for topic, reply in out.replies:
                self.publish(topic, reply)
            if out.settled and out.token is not None:
                mid, qos = out.token
                if qos > 0:
                    self.client.ack(mid, qos)
        if any(o.status == "stored" for o in outcomes):
            self._wake.set()

    def publish(self, topic: str, message: dict[str, Any], qos: int = 1) -> None:
        props = None
        if self.protocol == "v5":
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = mass.user_properties(message)
        self.client.publish(topic, mass.encode(message), qos=qos, properties=props)

    # -- dispatcher -------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        last_expiry = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if not self._connected.is_set():
                continue
            try:
                while self._dispatch_one():
                    pass
                if time.monotonic() - last_expiry > 1.0:
                    last_expiry = time.monotonic()
                    with self.engine.begin() as conn:
                        late = orders.expire(conn, policies=self.retry_policies)
                        if late:
                            write_log(conn, "orders", "warning", f"orders timed out or expired: {late}")
            except Exception:
                log.exception("dispatcher error")
                time.sleep(1)

    # -- scheduler (HES-10) ------------------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        """Run due schedules; safe beside other head-end processes (each run is claimed in the database, see
        osos.headend.scheduler). Independent of the broker connection: it only queues orders."""
        while not self._stop.is_set():
            try:
                if scheduler.run_due(self.engine, tz=self.settings.timezone):
                    self._wake.set()
            except Exception:
                log.exception("scheduler error")
            self._stop.wait(SCHEDULE_PERIOD_S)

    def _dispatch_one(self) -> bool:
        with self.engine.begin() as conn:
            order = orders.claim_next(conn, timeout_s=self.settings.order_timeout_s,
                                      offline_after_s=self.settings.modem_offline_s)
            if order is None:
                return False
            refusal = self._refusal(order)
            if refusal is not None:  # checked again at dispatch: the session may have changed since creation
                orders.fail(conn, order["id"], refusal)
                write_log(conn, "orders", "warning", f"order {order['id']} not sent: {refusal}")
                log.warning("order %s not sent: %s", order["id"], refusal)
                return True
        device = mass.Device(order["modem_flag"], order["modem_serial"])
        request = orders.directive_request(order["kind"], order.get("request") or {})
        if order["meter_serial"]:  # without a meter, the modem reads every meter behind it
            request["meter"] = {"flag": order["meter_flag"], "serialNumber": order["meter_serial"]}
        message = mass.make("read", device, reference_id=order["reference_id"], request=request)
        topic = self.topics.downlink_for(device, order["modem_transport"], legacy=order["topic_style"] == "legacy")
        self.publish(topic, message)
        self.stats.orders_sent += 1
        log.info("order %s sent to %s on %s", order["id"], device.key, topic)
        return True

    def _refusal(self, order: dict[str, Any]) -> str | None:
        """Why a claimed order must not go out: a TLS-only kind for a modem whose last session was not TLS
        (HES-54), or a request its kind does not permit (written to the table by other means than the API)."""
        transport = order.get("modem_transport")
        if order["kind"] in orders.TLS_KINDS and transport != "tls":
            return orders.tls_refusal(order["kind"], transport)
        try:
            orders.directive_request(order["kind"], order.get("request") or {})
        except orders.OrderError as exc:
            return str(exc)
        return None
