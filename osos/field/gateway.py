"""The gateway/modem agent: MASS over MQTT on one side, meters on serial/TCP links on the other (AMR-8).

It joins with its identification (HES-22, HES-26, HES-48), sends heartbeats, answers server requests
(ack first, then the answer, same referenceId; HES-34 pull), runs directives on its meters (HES-41,
HES-44..46; several meters of any brand behind one gateway, HES-38), pushes periodic reads and alarms on
the emergency topic (HES-24, AMR-6), and keeps every uplink message in a durable outbox until the broker
acknowledged it. The directive interpreter and the outbox know nothing of MQTT; this module is the glue.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from osos.field.buffer import DEFAULT_MAX_MESSAGES, Outbox
from osos.field.directive_library import directives_for
from osos.field.directives import DirectiveError, Interpreter, standard_directives, validate
from osos.field.links import Link, LinkError, LinkSpec
from osos.field.readings import read_response
from osos.field.secrets import InvocationCounters, SecretStore, SecretStoreError
from osos.field.transparent import TransparentPort
from osos.protocols import mass, status_codes

log = logging.getLogger(__name__)
# params a head-end request may not set: the meter's link, its secrets and the gateway's clock (issue 7)
REQUEST_MAY_NOT_SET = frozenset({"address", "password", "auth", "client_sap", "ek", "ak", "key", "server_logical",
                                 "server_physical", "dlms_transport", "primary", "unit", "max_baud", "time", "date",
                                 "now", "meter_id", "system_title", "invocation_counter"})

# failCode values of negative acks (directive run failures use 1..6, see osos.field.directives)
FAIL_UNKNOWN_DIRECTIVE = 10
FAIL_BAD_DIRECTIVE = 11
FAIL_UNKNOWN_METER = 12
FAIL_UNSUPPORTED = 13
FAIL_BAD_REQUEST = 14

#: FF bits the gateway pushes at once when they appear (bit -> (type, level, description)); AMR-6, HES-24, HES-28.
#: Taken from the shared FF table (osos/data/alarms/ff-gf.toml, entries with ``push = true``), so the gateway and
#: the head-end name the same bits the same way.
ALARM_BITS: dict[int, tuple[str, str, str]] = {
    bit: (entry.type, entry.severity, entry.en) for bit, entry in status_codes.table().ff_bits.items() if entry.push
}


FIRST_PUSH_S = 2.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iec_stamp(value: str, tz: Any) -> str:
    """ISO 8601 -> IEC 62056-21 load-profile stamp YYMMDDhhmm in the meter's local time; other text unchanged."""
    if len(value) < 16 or value[4:5] != "-":
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    return when.astimezone(tz).strftime("%y%m%d%H%M")


def _library_key(meter: MeterConfig) -> str:
    """A meter configured without a profile gets its FLAG's library profile when that speaks its protocol
    (AMR-7: identify the meter, then read it the way its brand wants); "" when there is none."""
    if not meter.flag:
        return ""
    from osos.meterlib import profile_for

    found = profile_for(meter.flag, meter.model or None)
    return found.key if found.protocol == meter.protocol and found.key != "generic-iec" else ""


def _line(meter: MeterConfig) -> dict[str, Any]:
    """initBaud and frame for the identification: from the meter's library profile when it has one."""
    if meter.profile:
        from osos.meterlib import profile

        p = profile(meter.profile)
        return {"initBaud": p.init_baud, "frame": p.framing}
    return {"initBaud": 300, "frame": "7E1"}


@dataclass
class MeterConfig:
    """A meter behind the gateway: its link, bus address and identity (empty identity = discover it)."""

    link: str
    flag: str = ""
    serial: str = ""
    brand: str = ""
    model: str = ""
    kind: str = "single-phase"
    # Meter secrets (HES-56, issue 7): no default. ``secret`` names the entry of the gateway's secret store
    # (osos.field.secrets) that holds this meter's password/ek/ak; the gateway fills the fields below from it at
    # start. Set directly only in-process (tests, the simulated fleet), never from a command line or an order.
    secret: str = ""
    password: str = field(default="", repr=False)
    max_baud: int = 19200
    date_format: str = "%y-%m-%d"
    time_format: str = "%H:%M:%S"
    protocol: str = "iec62056-21"  # iec62056-21 | dlms | modbus | mbus (AMR-7, HES-38, HES-40)
    profile: str = ""  # meter library key (osos/data/meters/<profile>.toml): its generated directives apply
    # DLMS security from the gateway's own inventory (never from the library's data files, HES-56):
    auth: str = ""  # overrides the profile's: "none" | "lls" | "hls-gmac"
    client_sap: str = ""  # e.g. "1" for the management client that HLS-GMAC uses
    ek: str = field(default="", repr=False)  # hex, 16 bytes (suite 0)
    ak: str = field(default="", repr=False)  # hex, 16 bytes

    @property
    def spec(self) -> LinkSpec:
        return LinkSpec.parse(self.link)

    @property
    def identity(self) -> dict[str, str]:
        return {"flag": self.flag, "serialNumber": self.serial}

    def params(self) -> dict[str, str]:
        """What the gateway gives every directive run on this meter: its address and line limits, the secrets it
        was configured with (absent when none: a directive that needs one then fails with failCode 8), and
        ``meter_id``, the key of its persisted DLMS invocation counters."""
        out = {"address": self.spec.address, "max_baud": str(self.max_baud)}
        extra = {"auth": self.auth, "client_sap": self.client_sap, "password": self.password, "ek": self.ek,
                 "ak": self.ak, "meter_id": f"{self.flag}{self.serial}" if self.flag and self.serial else ""}
        out.update({k: v for k, v in extra.items() if v})
        return out

    def resolve_secrets(self, store: SecretStore | None) -> None:
        """Fill password/ek/ak from the store entry this meter names (``secret``); a name the store lacks (or no
        store) is a configuration error the gateway refuses to start with (SecretStoreError)."""
        if not self.secret:
            return
        if store is None:
            raise SecretStoreError(f"meter {self.link} names secret {self.secret!r} but the gateway has no secret "
                                   "store")
        entry = store.get(self.secret)
        self.password = entry.get("password", self.password)
        self.ek = entry.get("ek", self.ek)
        self.ak = entry.get("ak", self.ak)


@dataclass
class GatewayConfig:
    flag: str
    serial: str
    data_dir: Path
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    topic_root: str = "mass"
    mqtt_protocol: str = "v5"  # or "v311"
    heartbeat_interval_s: float = 60.0
    read_interval_s: float | None = None  # periodic push reads; None = pull only
    push_directive: str = "short-read"
    max_buffer: int = DEFAULT_MAX_MESSAGES
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    brand: str = "OSOS"
    model: str = "OSOS-GW1"
    firmware: str = "0.1.0"
    manufacture_date: str = "2026-01-01"
    imei: str = "000000000000000"
    device_type: str = "MM"
    communication_type: str = "4G"
    utc_offset_min: int = 180
    signal: int = -67
    publish_window: int = 50
    transparent_base_port: int | None = None  # HES-42: each link also on TCP port base+i (0 = any free port)
    transparent_host: str = "127.0.0.1"
    # the gateway's own broker account (HES-4) and TLS with CA verification (HES-52); the password is passed in
    # memory (CLI: --password-file or OSOS_MQTT_PASSWORD), never on a command line
    broker_username: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    broker_tls: bool = False
    broker_ca: Path | None = None
    broker_cert: Path | None = None
    broker_key: Path | None = None


def gateway_client_id(flag: str, serial: str, topic_root: str) -> str:
    """The gateway's MQTT client id: one identity per topic root, so two deployments (or test runs) on one broker
    never take over each other's session. Provisioning can bind the broker account to it (HES-4)."""
    return f"osos-gw-{flag}{serial}-{zlib.crc32(topic_root.encode()):08x}"


@dataclass
class _Job:
    kind: str  # "request", "push", "identify"
    message: mass.Message | None = None
    meters: list[MeterConfig] = field(default_factory=list)


class Gateway:
    """One gateway agent. ``start()`` returns at once; everything runs on background threads."""

    def __init__(
        self,
        config: GatewayConfig,
        meters: list[MeterConfig],
        *,
        clock: Callable[[], datetime] = _utc_now,
        interpreter: Interpreter | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.config = config
        self.meters = meters
        self.clock = clock
        self.device = mass.Device(config.flag, config.serial)
        self.topics = mass.Topics(config.topic_root)
        self.interpreter = interpreter or Interpreter()
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # meter secrets (issue 7): the store of the data dir, key from OSOS_GATEWAY_KEY; a store that exists but
        # cannot be opened, or a meter naming a secret that is not there, stops the gateway here (SecretStoreError)
        self.secrets = secrets if secrets is not None else SecretStore.open(self.data_dir)
        for meter in meters:
            meter.resolve_secrets(self.secrets)
        if self.interpreter.counters is None:  # HLS-GMAC counters resume after a restart (not from 1)
            self.interpreter.counters = InvocationCounters.open(self.data_dir)
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3", config.max_buffer)
        self.custom_directives: dict[str, dict[str, Any]] = self._load_custom()
        self.ff_seen: dict[str, int] = {}
        self.started_at = time.monotonic()
        self.connected = threading.Event()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._links: dict[str, Link] = {}
        self._link_locks: dict[str, threading.Lock] = {}
        self.transparent: dict[str, TransparentPort] = {}  # link key -> its transparent TCP port
        self._client: Any = None
        self._generation = 0  # bumped on every disconnect so in-flight bookkeeping restarts

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Gateway:
        import paho.mqtt.client as mqtt

        protocol = mqtt.MQTTv5 if self.config.mqtt_protocol == "v5" else mqtt.MQTTv311
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=gateway_client_id(self.config.flag, self.config.serial, self.config.topic_root),
            protocol=protocol,
        )
        if self.config.broker_username:
            client.username_pw_set(self.config.broker_username, self.config.broker_password)
        if self.config.broker_tls or self.config.broker_ca:
            client.tls_set(
                ca_certs=str(self.config.broker_ca) if self.config.broker_ca else None,
                certfile=str(self.config.broker_cert) if self.config.broker_cert else None,
                keyfile=str(self.config.broker_key) if self.config.broker_key else None,
            )
        client.reconnect_delay_set(self.config.reconnect_min_s, self.config.reconnect_max_s)
        client.max_inflight_messages_set(self.config.publish_window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = lambda *args: self._wake.set()  # a PUBACK: let the publisher settle the outbox
        self._client = client
        self._set_will()
        for target, name in ((self._publisher, "pub"), (self._worker, "work"), (self._scheduler, "sched")):
            thread = threading.Thread(target=target, name=f"gw-{self.config.serial}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.config.transparent_base_port is not None:
            for i, key in enumerate(sorted({self._key(m) for m in self.meters})):
                base = self.config.transparent_base_port
                self._open_transparent(key, base + i if base else 0)
        client.connect_async(self.config.broker_host, self.config.broker_port, keepalive=30)
        client.loop_start()
        return self

    def _open_transparent(self, key: str, port: int) -> TransparentPort:
        spec = next(m.spec for m in self.meters if self._key(m) == key)
        bridge = TransparentPort(spec, port, self._lock_for(key), host=self.config.transparent_host,
                                 before_session=lambda: self._drop_key(key)).start()
        self.transparent[key] = bridge
        return bridge

    def stop(self) -> None:
        self._stop.set()
        self._jobs.put(None)
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        for bridge in self.transparent.values():
            bridge.stop()
        for link in self._links.values():
            link.close()
        self._links.clear()
        self.outbox.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ MQTT callbacks (paho's thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("gateway %s: connect refused: %s", self.device.key, reason_code)
            return
        client.subscribe(self.topics.downlink(self.device), qos=1)
        self.connected.set()
        self._wake.set()
        self._jobs.put(_Job("identify"))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        self._generation += 1
        self._wake.set()
        if not self._stop.is_set():
            self._set_will()  # the next session's last gasp gets its own referenceId

    def _set_will(self) -> None:
        """MQTT last will: if the gateway vanishes without a goodbye (power cut, crash, lost link) the broker
        itself publishes a power-loss alarm on the emergency topic (HES-24). Set anew before every connect."""
        alarm = [{"type": "powerLoss", "level": "critical", "incidentCode": 0,
                  "description": "gateway connection lost without a goodbye (MQTT last will)"}]
        message = mass.make("alarm", self.device, response=alarm, status="success")
        self._client.will_set(self.topics.emergency(self.device), mass.encode(message), qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            message = mass.decode(msg.payload)
        except mass.MassError as exc:
            log.warning("gateway %s: dropped bad downlink: %s", self.device.key, exc)
            return
        if message.device != self.device:
            return
        self._accept(message)

    def _accept(self, message: mass.Message) -> None:
        """Ack (or refuse) a request at once, before any slow meter work, then queue the work."""
        ref = message.reference_id
        body = message.body if isinstance(message.body, dict) else {}
        refusal = self._check_request(message.function, body)
        if refusal is not None:
            self._nack(ref, *refusal)
            return
        self.emit("ack", reference_id=ref)
        self._jobs.put(_Job("request", message))

    def _check_request(self, fn: str, body: dict[str, Any]) -> tuple[int, str] | None:
        """(failCode, reason) when the request cannot be carried out, None when it can."""
        if fn in ("identification", "heartbeat"):
            return None
        if fn == "read":
            targets = self._targets(body.get("meter"))
            if targets is None:
                return FAIL_UNKNOWN_METER, f"no meter {body.get('meter')} behind this gateway"
            for meter in targets or [MeterConfig(link="tcp://0.0.0.0:1")]:
                try:
                    self._directive_for(meter, body.get("directive", "readout"))
                except DirectiveError as exc:
                    code = exc.fail_code if exc.fail_code in (FAIL_UNKNOWN_DIRECTIVE, FAIL_UNSUPPORTED) \
                        else FAIL_BAD_DIRECTIVE
                    return code, exc.reason
            return None
        if fn == "directive":
            op = body.get("operation")
            if op == "add":
                try:
                    validate(body.get("directive"))
                except DirectiveError as exc:
                    return FAIL_BAD_DIRECTIVE, exc.reason
                return None
            if op == "remove":
                name = body.get("name")
                if name not in self.custom_directives:
                    return FAIL_UNKNOWN_DIRECTIVE, f"no added directive {name!r} (standard ones stay)"
                return None
            if op == "list":
                return None
            return FAIL_BAD_REQUEST, "directive operation must be add, list or remove"
        if fn == "configuration":
            return self._check_configuration(body)
        return FAIL_UNSUPPORTED, f"function {fn!r} is not supported by this gateway"

    def _targets(self, wanted: Any) -> list[MeterConfig] | None:
        if not isinstance(wanted, dict):
            return list(self.meters)
        found = [m for m in self.meters if m.serial == wanted.get("serialNumber")
                 and (not wanted.get("flag") or m.flag == wanted.get("flag"))]
        return found or None

    # ------------------------------------------------------------------ uplink
    def emit(
        self,
        function: str,
        response: Any = None,
        *,
        reference_id: str | None = None,
        status: str | None = None,
        emergency: bool = False,
    ) -> str:
        """Queue one uplink message durably and return its referenceId."""
        message = mass.make(function, self.device, reference_id=reference_id, response=response, status=status)
        topic = self.topics.emergency(self.device) if emergency else self.topics.uplink(self.device)
        self.outbox.put(topic, mass.encode(message), function, message["referenceId"], urgent=emergency)
        self._wake.set()
        return str(message["referenceId"])

    def _publisher(self) -> None:
        """Send the outbox in order, urgent lane first; drop a message only once its PUBACK arrived."""
        inflight: list[tuple[int, Any]] = []
        last_sent = {True: 0, False: 0}
        generation = self._generation
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if generation != self._generation or not self.connected.is_set():
                # after a reconnect everything not yet acknowledged goes again, from the oldest
                inflight, last_sent, generation = [], {True: 0, False: 0}, self._generation
                continue
            still = []
            for seq, info in inflight:
                if info.is_published():
                    self.outbox.ack(seq)
                else:
                    still.append((seq, info))
            inflight = still
            for urgent in (True, False):
                room = self.config.publish_window - len(inflight)
                if room <= 0:
                    break
                for item in self.outbox.pending(after=last_sent[urgent], limit=room, urgent=urgent):
                    info = self._client.publish(item.topic, item.payload, qos=1, properties=self._properties(item))
                    inflight.append((item.seq, info))
                    last_sent[urgent] = item.seq

    def _properties(self, item: Any) -> Any:
        if self.config.mqtt_protocol != "v5":
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        message = json.loads(item.payload)
        props.UserProperty = mass.user_properties(message)
        return props

    # ------------------------------------------------------------------ work
    def _scheduler(self) -> None:
        next_beat = time.monotonic() + self.config.heartbeat_interval_s
        interval = self.config.read_interval_s
        # the first push read comes soon after start (a modem reads its meters when it powers up), then periodic
        next_read = time.monotonic() + min(interval, FIRST_PUSH_S) if interval else None
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.config.heartbeat_interval_s
                self.emit("heartbeat", self._heartbeat())
            if next_read is not None and interval and now >= next_read:
                next_read = now + interval
                self._jobs.put(_Job("push", meters=list(self.meters)))

    def trigger_push(self, meters: list[MeterConfig] | None = None) -> None:
        """Read now and push (used by the fleet right after it injected an event)."""
        self._jobs.put(_Job("push", meters=list(meters or self.meters)))

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stop.is_set():
                return
            try:
                if job.kind == "identify":
                    self.emit("identification", self.identification())
                elif job.kind == "push":
                    for meter in job.meters:
                        try:
                            directive = self._directive_for(meter, self.config.push_directive)
                        except DirectiveError:
                            continue  # this meter's profile has no such directive
                        if self._identified(meter):
                            self._read_one(meter, directive, None, push=True, packet_class=None, extra={})
                elif job.message is not None:
                    self._handle(job.message)
            except Exception:  # a bug in one job must not kill the agent
                log.exception("gateway %s: job %s failed", self.device.key, job.kind)

    def _handle(self, message: mass.Message) -> None:
        """The answer to an accepted (already acked) request."""
        ref = message.reference_id
        body = message.body if isinstance(message.body, dict) else {}
        fn = message.function
        if fn == "identification":
            self.emit("identification", self.identification(), reference_id=ref)
        elif fn == "heartbeat":
            self.emit("heartbeat", self._heartbeat(), reference_id=ref)
        elif fn == "read":
            self._handle_read(ref, body)
        elif fn == "directive":
            self._handle_directive(ref, body)
        elif fn == "configuration":
            self._handle_configuration(ref, body)

    def _nack(self, ref: str, code: int, reason: str) -> None:
        self.emit("ack", {"failCode": code, "failDescrition": reason}, reference_id=ref, status="fail")

    # ------------------------------------------------------------------ read
    def _directive(self, ref: Any) -> dict[str, Any]:
        if isinstance(ref, dict):
            return validate(ref)
        name = str(ref)
        found = self.custom_directives.get(name) or standard_directives().get(name)
        if found is None:
            raise DirectiveError(f"unknown directive {name!r}", fail_code=FAIL_UNKNOWN_DIRECTIVE)
        return found

    def _directive_for(self, meter: MeterConfig, ref: Any) -> dict[str, Any]:
        """What a directive name means for this meter: an added directive, else the set generated from the
        meter's library profile (AMR-7), else (IEC meters) the shipped standard set."""
        if isinstance(ref, dict) or str(ref) in self.custom_directives:
            return self._directive(ref)
        name = str(ref)
        key = meter.profile or _library_key(meter)
        if key:
            generated = directives_for(key)
            if name in generated:
                return generated[name]
        if meter.protocol == "iec62056-21" and name in standard_directives():
            return standard_directives()[name]
        if meter.profile or meter.protocol != "iec62056-21":
            raise DirectiveError(f"meter {meter.flag}/{meter.serial} ({meter.profile or meter.protocol}) has no "
                                 f"directive {name!r}", fail_code=FAIL_UNSUPPORTED)
        return self._directive(ref)

    def _handle_read(self, ref: str, body: dict[str, Any]) -> None:
        extra = body.get("params") if isinstance(body.get("params"), dict) else {}
        for meter in self._targets(body.get("meter")) or []:
            try:
                directive = self._directive_for(meter, body.get("directive", "readout"))
            except DirectiveError:
                continue  # refused in _accept already; a directive removed in between leaves nothing to do
            if self._identified(meter):
                self._read_one(meter, directive, ref, push=False, packet_class=body.get("packetClass"),
                               extra=extra)

    def _identified(self, meter: MeterConfig) -> bool:
        """A meter known only by its link is identified first (it may have been unreachable at start); until
        then it is left out, since every packet must name its meter."""
        if not (meter.flag and meter.serial):
            self.discover([meter])
        return bool(meter.flag and meter.serial)

    def _read_one(
        self,
        meter: MeterConfig,
        directive: dict[str, Any],
        ref: str | None,
        *,
        push: bool,
        packet_class: str | None,
        extra: dict[str, Any],
    ) -> None:
        # a request's params never reach the meter's link or secrets, nor the clock a time-set writes: those are
        # the gateway's own (issue 7); what is left (e.g. a load-profile range) fills the directive's params
        refused = sorted(k for k in extra if k.lower() in REQUEST_MAY_NOT_SET)
        if refused:
            log.warning("gateway %s: request params %s ignored: set by the gateway only", self.device.key, refused)
        params = {k: str(v) for k, v in extra.items() if k.lower() not in REQUEST_MAY_NOT_SET}
        params.update(meter.params())
        local = self.clock().astimezone(timezone(timedelta(minutes=self.config.utc_offset_min)))
        params.update({"time": local.strftime(meter.time_format), "date": local.strftime(meter.date_format),
                       "now": local.isoformat(timespec="seconds")})
        if meter.protocol == "iec62056-21":  # a range given as ISO 8601 becomes the meter's YYMMDDhhmm (local)
            for key in ("start", "end"):
                params[key] = _iec_stamp(params.get(key, ""), local.tzinfo)
        try:
            with self._lock_for(self._key(meter)):  # a transparent session holds the same lock
                result = self.interpreter.run(directive, self._link(meter), params)
        except DirectiveError as exc:
            self._drop_link(meter)
            self.emit(
                "read",
                {"meter": meter.identity, "failCode": exc.fail_code, "failDescrition": exc.reason,
                 "step": exc.step, "directive": directive["name"]},
                reference_id=ref,
                status="fail",
            )
            return
        except LinkError as exc:
            self._drop_link(meter)
            self.emit(
                "read",
                {"meter": meter.identity, "failCode": 1, "failDescrition": str(exc), "step": -1,
                 "directive": directive["name"]},
                reference_id=ref,
                status="fail",
            )
            return
        response = read_response(meter=meter.identity, directive=directive, result=result,
                                 read_date=self.clock(), packet_class=packet_class, push=push)
        self.emit("read", response, reference_id=ref)
        self._check_alarms(meter, response)

    @staticmethod
    def _key(meter: MeterConfig) -> str:
        return meter.spec.scheme + ":" + meter.spec.target

    def _lock_for(self, key: str) -> threading.Lock:
        return self._link_locks.setdefault(key, threading.Lock())

    def _link(self, meter: MeterConfig) -> Link:
        key = self._key(meter)
        link = self._links.get(key)
        if link is None:
            link = meter.spec.open()
            self._links[key] = link
        return link

    def _drop_key(self, key: str) -> None:
        link = self._links.pop(key, None)
        if link is not None:
            link.close()

    def _drop_link(self, meter: MeterConfig) -> None:
        self._drop_key(self._key(meter))

    def _check_alarms(self, meter: MeterConfig, response: dict[str, Any]) -> None:
        """Alarm push on the emergency topic for FF status bits that newly appeared (AMR-6, HES-24)."""
        values = response.get("values", {})
        ff = next((values[obis] for obis in status_codes.table().ff_obis if values.get(obis)), None)
        if not ff:
            return
        try:
            bits = status_codes.parse_code(ff["value"], status_codes.table().ff_width)
        except (status_codes.StatusCodeError, KeyError, TypeError):
            return
        key = f"{meter.flag}{meter.serial}"
        new = bits & ~self.ff_seen.get(key, 0)
        self.ff_seen[key] = bits
        alarms = []
        for bit, (kind, level, description) in ALARM_BITS.items():
            if new & (1 << bit):
                alarms.append({
                    "type": kind, "level": level, "incidentCode": bit, "description": description,
                    "date": self.clock().strftime("%Y-%m-%d %H:%M:%S"), "meter": meter.identity,
                })
        if alarms:
            self.emit("alarm", alarms, status="success", emergency=True)

    # ------------------------------------------------------------------ directive library (MASS "directive")
    def _custom_path(self) -> Path:
        return self.data_dir / "directives.json"

    def _load_custom(self) -> dict[str, dict[str, Any]]:
        path = self._custom_path()
        if not path.exists():
            return {}
        try:
            docs = json.loads(path.read_text("utf-8"))
            return {d["name"]: validate(d) for d in docs}
        except (ValueError, KeyError, TypeError, DirectiveError) as exc:
            log.warning("gateway: ignoring unreadable %s: %s", path, exc)
            return {}

    def _save_custom(self) -> None:
        tmp = self._custom_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self.custom_directives.values()), indent=1), "utf-8")
        tmp.replace(self._custom_path())

    def _handle_directive(self, ref: str, body: dict[str, Any]) -> None:
        op = body.get("operation")
        if op == "list":
            entries = [
                {"name": name, "description": d.get("description", ""), "packetClass": d.get("packetClass"),
                 "standard": name not in self.custom_directives}
                for name, d in {**standard_directives(), **self.custom_directives}.items()
            ]
            self.emit("directive", {"operation": "list", "directives": entries}, reference_id=ref)
        elif op == "add":
            doc = validate(body.get("directive"))
            self.custom_directives[doc["name"]] = doc
            self._save_custom()
            self.emit("directive", {"operation": "add", "name": doc["name"], "result": "ok"}, reference_id=ref)
        elif op == "remove":
            name = str(body.get("name"))
            self.custom_directives.pop(name, None)
            self._save_custom()
            self.emit("directive", {"operation": "remove", "name": name, "result": "ok"}, reference_id=ref)

    # ------------------------------------------------------------------ transparent ports (HES-42, HES-43)
    def _serial_ports(self) -> list[dict[str, Any]]:
        ports = []
        for i, key in enumerate(sorted({self._key(m) for m in self.meters})):
            scheme, _, target = key.partition(":")
            entry: dict[str, Any] = {"id": i + 1, "name": target, "type": "tcp" if scheme == "tcp" else "serial"}
            entry["protocols"] = sorted({m.protocol for m in self.meters if self._key(m) == key})
            bridge = self.transparent.get(key)
            if bridge is not None:
                entry.update({"transparentPort": bridge.port, "transparentProtocol": bridge.protocol})
            ports.append(entry)
        return ports

    def _check_configuration(self, body: dict[str, Any]) -> tuple[int, str] | None:
        wanted = body.get("serialPorts")
        if not isinstance(wanted, list) or not wanted:
            return FAIL_BAD_REQUEST, "configuration supports serialPorts: [{name|id, transparentPort}]"
        known = self._serial_ports()
        for item in wanted:
            if not isinstance(item, dict) or not any(
                item.get("name") == p["name"] or item.get("id") == p["id"] for p in known
            ):
                return FAIL_BAD_REQUEST, f"unknown serial port {item!r}"
            port = item.get("transparentPort")
            if not isinstance(port, int) or not 0 <= port <= 65535:
                return FAIL_BAD_REQUEST, "transparentPort must be an integer 0..65535 (0 closes it)"
        return None

    def _handle_configuration(self, ref: str, body: dict[str, Any]) -> None:
        """HES-43: move (or close, with 0) the transparent TCP port of a serial port, then report them all."""
        known = self._serial_ports()
        keys = sorted({self._key(m) for m in self.meters})
        for item in body.get("serialPorts", []):
            entry = next(p for p in known if item.get("name") == p["name"] or item.get("id") == p["id"])
            key = keys[entry["id"] - 1]
            old = self.transparent.pop(key, None)
            if old is not None:
                old.stop()
            if item["transparentPort"]:
                try:
                    self._open_transparent(key, item["transparentPort"])
                except OSError as exc:
                    self.emit("configuration", {"failCode": FAIL_BAD_REQUEST, "failDescrition": str(exc),
                                                "serialPorts": self._serial_ports()},
                              reference_id=ref, status="fail")
                    return
        self.emit("configuration", {"serialPorts": self._serial_ports()}, reference_id=ref)

    # ------------------------------------------------------------------ identity
    def _local_now(self) -> datetime:
        return self.clock().astimezone(timezone(timedelta(minutes=self.config.utc_offset_min)))

    def _tz_text(self) -> str:
        m = self.config.utc_offset_min
        sign = "+" if m >= 0 else "-"
        return f"{sign}{abs(m) // 60:02d}:{abs(m) % 60:02d}"

    def _heartbeat(self) -> dict[str, Any]:
        return {
            "signal": self.config.signal,
            "deviceDate": self._local_now().strftime("%Y-%m-%d %H:%M:%S"),
            "cpuTemp": 45,
            "uptime": int(time.monotonic() - self.started_at),
        }

    def identification(self) -> dict[str, Any]:
        """HES-22 modem identity with the meters behind it (HES-26)."""
        c = self.config
        return {
            "brand": c.brand,
            "model": c.model,
            "protocolVersion": "0.2",
            "firmware": c.firmware,
            "manufactureDate": c.manufacture_date,
            "imei": c.imei,
            "deviceType": c.device_type,
            "communicationType": c.communication_type,
            "ip": self._local_ip(),
            "signal": c.signal,
            "deviceDate": self._local_now().strftime("%Y-%m-%d %H:%M:%S"),
            "timezone": self._tz_text(),
            "serialPorts": self._serial_ports(),
            "ioInterfaces": [],
            "mqttPrefix": c.topic_root,
            "meters": [
                {
                    "protocol": m.protocol,
                    "profile": m.profile,
                    "deviceType": "electricity",
                    "flag": m.flag,
                    "serialNumber": m.serial,
                    "brand": m.brand,
                    "model": m.model,
                    "kind": m.kind,
                    "serialPort": m.spec.target,
                    "address": m.spec.address,
                    **_line(m),
                }
                for m in self.meters
                if m.flag and m.serial  # a meter not identified yet is listed once it is
            ],
        }

    def _local_ip(self) -> str:
        try:
            sock = self._client.socket() if self._client is not None else None
            return str(sock.getsockname()[0]) if sock is not None else ""
        except OSError:
            return ""

    # ------------------------------------------------------------------ discovery
    def discover(self, meters: list[MeterConfig] | None = None) -> None:
        """Fill in flag/serial/model of meters configured by link only: one readout each (AMR-7)."""
        directive = standard_directives()["readout"]
        for meter in self.meters if meters is None else meters:
            if meter.flag and meter.serial or meter.protocol != "iec62056-21":
                continue  # only IEC meters announce themselves; others come with their identity configured
            try:
                with self._lock_for(self._key(meter)):
                    result = self.interpreter.run(directive, self._link(meter), meter.params())
            except (DirectiveError, LinkError) as exc:
                log.warning("gateway: cannot identify meter on %s: %s", meter.link, exc)
                self._drop_link(meter)
                continue
            body = read_response(meter={}, directive=directive, result=result, read_date=self.clock())
            values = body.get("values", {})
            meter.flag = meter.flag or result.params.get("flag", "")
            meter.model = meter.model or result.params.get("ident", "")
            serial = values.get("0.0.0") or values.get("C.1.0") or values.get("96.1.0")
            meter.serial = meter.serial or (serial["value"] if serial else "")
