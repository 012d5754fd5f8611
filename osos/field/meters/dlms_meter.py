"""A simulated DLMS/COSEM meter (server side): the object model and the association logic.

Why: neither dlms-cosem nor gurux-dlms offers a usable meter simulator, and the head-end needs one
to test remote reading, clock sync, programming and disconnect end to end (HES-11, HES-35,
HES-37, HES-40, AMR-4, AMR-5). This module is the object model and the meter's state; the
association logic is ``dlms_session``, the energy arithmetic ``dlms_energy``, the network fronts
(wrapper TCP, HDLC) ``dlms_server``; the codec is ``osos.protocols.dlms``.

Objects (OBIS, class): clock 0.0.1.0.0.255 (8); energy 1.0.1.8.0-4.255 (3); logical device name
0.0.42.0.0.255 and serial 0.0.96.1.0.255 (1); disconnect control 0.0.96.3.10.255 (70); load
profile 1 1.0.99.1.0.255 (7, 60 min, range and entry selective access); standard event log
0.0.99.98.0.255 (7); current association 0.0.40.0.0.255 (15); invocation counter 0.0.43.1.0.255
(1); activity calendar 0.0.13.0.0.255 (20) and special days 0.0.11.0.0.255 (11).

Time comes from an injected ``clock`` (aware UTC datetimes) so tests are deterministic.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from osos.field.meters.dlms_energy import EnergyModel
from osos.protocols import dlms as D

if TYPE_CHECKING:
    from osos.field.meters.dlms_session import MeterSession

CLOCK_OBIS = D.obis_bytes("0.0.1.0.0.255")
LDN_OBIS = D.obis_bytes("0.0.42.0.0.255")
SERIAL_OBIS = D.obis_bytes("0.0.96.1.0.255")
DISCONNECT_OBIS = D.obis_bytes("0.0.96.3.10.255")
LOAD_PROFILE_OBIS = D.obis_bytes("1.0.99.1.0.255")
EVENT_LOG_OBIS = D.obis_bytes("0.0.99.98.0.255")
EVENT_CODE_OBIS = D.obis_bytes("0.0.96.11.0.255")
STATUS_OBIS = D.obis_bytes("0.0.96.10.1.255")
ASSOCIATION_OBIS = D.obis_bytes("0.0.40.0.0.255")
INVOCATION_COUNTER_OBIS = D.obis_bytes("0.0.43.1.0.255")
ACTIVITY_CALENDAR_OBIS = D.obis_bytes("0.0.13.0.0.255")
SPECIAL_DAYS_OBIS = D.obis_bytes("0.0.11.0.0.255")
ENERGY_OBIS = [D.obis_bytes(f"1.0.1.8.{t}.255") for t in range(5)]
REACTIVE_OBIS = [D.obis_bytes(f"1.0.{q}.8.0.255") for q in (5, 6, 7, 8)]  # Q1..Q4 (kombi meters)
LOAD_PROFILE_2_OBIS = D.obis_bytes("1.0.99.2.0.255")

CLASS_DATA, CLASS_REGISTER, CLASS_PROFILE, CLASS_CLOCK = 1, 3, 7, 8
CLASS_SPECIAL_DAYS, CLASS_ASSOCIATION_LN, CLASS_ACTIVITY_CALENDAR, CLASS_DISCONNECT = 11, 15, 20, 70

HOUR = dt.timedelta(hours=1)
STATUS_POWER_DOWN = 0x80  # load profile status bit 7 (IDIS AMR profile status)
NO_TIME = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff"  # date-time, every field unspecified


class AccessError(Exception):
    """Raised by an object to answer with a data-access-result instead of data."""

    def __init__(self, result: D.DataAccessResult) -> None:
        super().__init__(result.name)
        self.result = result


@dataclass
class MeterProfile:
    """The static description of the meter, read from ``osos/data/dlms/simulated_meter.toml``."""

    flag: str
    serial: str
    logical_device_name: str
    utc_offset_minutes: int
    history_days: int
    profile_capacity: int
    server_max_pdu: int
    scaler: int
    unit: int
    initial: list[int]
    tariff_by_hour: list[int]
    consumption_wh: list[int]
    events: dict[str, int]
    reactive_initial: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    reactive_percent: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    profile2_period_s: int = 900
    profile2_capacity: int = 34560

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> MeterProfile:
        if path is None:
            text = resources.files("osos.data").joinpath("dlms/simulated_meter.toml").read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        raw = tomllib.loads(text)
        m, e = raw["meter"], raw["energy"]
        prof = cls(
            flag=m["flag"], serial=m["serial"], logical_device_name=m["logical_device_name"],
            utc_offset_minutes=int(m["utc_offset_minutes"]), history_days=int(m["history_days"]),
            profile_capacity=int(m["profile_capacity"]), server_max_pdu=int(m["server_max_pdu"]),
            scaler=int(e["scaler"]), unit=int(e["unit"]), initial=[int(v) for v in e["initial"]],
            tariff_by_hour=[int(v) for v in e["tariff_by_hour"]],
            consumption_wh=[int(v) for v in e["consumption_wh"]],
            events={k: int(v) for k, v in raw["events"].items()},
        )
        k = raw.get("kombi")
        if k is not None:
            prof.reactive_initial = [int(v) for v in k["reactive_initial"]]
            prof.reactive_percent = [int(v) for v in k["reactive_percent"]]
            prof.profile2_period_s = int(k["profile2_period_s"])
            prof.profile2_capacity = int(k["profile2_capacity"])
            if len(prof.reactive_initial) != 4 or len(prof.reactive_percent) != 4 \
                    or 3600 % prof.profile2_period_s:
                raise ValueError("kombi: 4 quadrants, and a period that divides the hour")
        if len(prof.tariff_by_hour) != 24 or len(prof.consumption_wh) != 24 or len(prof.initial) != 5:
            raise ValueError("tariff_by_hour and consumption_wh need 24 entries, initial needs 5")
        if any(t not in (1, 2, 3, 4) for t in prof.tariff_by_hour):
            raise ValueError("tariff_by_hour entries are 1..4")
        return prof


@dataclass(frozen=True)
class ClientPolicy:
    """What one client SAP may do: its authentication mechanism and whether it may write."""

    mechanism: str  # "none", "lls" or "hls-gmac"
    write: bool = False


@dataclass(frozen=True)
class MeterSecrets:
    """Keys and password, given at construction (never stored in the data file, HES-56)."""

    password: bytes | None = None  # LLS
    ek: bytes | None = None  # global unicast encryption key (suite 0: 16 bytes)
    ak: bytes | None = None  # authentication key


DEFAULT_CLIENTS = {
    16: ClientPolicy("none", write=False),  # public client: read only, no security
    32: ClientPolicy("lls", write=True),  # reading/programming client with a password
    1: ClientPolicy("hls-gmac", write=True),  # management client: HLS-GMAC, ciphered APDUs
}


@dataclass
class ProfileRow:
    when: dt.datetime  # meter local time (aware)
    values: list[D.Data]


class CosemObject:
    """Base: attribute 1 is always the logical name."""

    class_id = 0
    version = 0
    attributes: tuple[int, ...] = (1,)
    methods: tuple[int, ...] = ()

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes) -> None:
        self.meter = meter
        self.obis = obis

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 1:
            return D.octets(self.obis)
        raise AccessError(D.DataAccessResult.OBJECT_UNDEFINED)

    def set(self, attr: int, value: D.Data) -> None:
        raise AccessError(D.DataAccessResult.READ_WRITE_DENIED)

    def action(self, method: int, param: D.Data | None, session: MeterSession) -> D.Data | None:
        raise AccessError(D.DataAccessResult.OBJECT_UNDEFINED)


class DataObject(CosemObject):
    class_id = CLASS_DATA
    attributes = (1, 2)

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, value: Callable[[], D.Data]) -> None:
        super().__init__(meter, obis)
        self.value = value

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        return self.value() if attr == 2 else super().get(attr, access)


class EnergyRegister(CosemObject):
    class_id = CLASS_REGISTER
    attributes = (1, 2, 3)

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, tariff: int) -> None:
        super().__init__(meter, obis)
        self.tariff = tariff

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 2:
            return D.u32(self.meter.registers()[self.tariff])
        if attr == 3:
            return D.struct_(D.i8(self.meter.profile.scaler), D.enum(self.meter.profile.unit))
        return super().get(attr, access)


class ReactiveRegister(CosemObject):
    """Class 3 reactive energy per quadrant (5.8.0-8.8.0, varh), kombi meters only."""

    class_id = CLASS_REGISTER
    attributes = (1, 2, 3)

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, quadrant: int) -> None:
        super().__init__(meter, obis)
        self.quadrant = quadrant

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 2:
            return D.u32(self.meter.reactive(self.meter.local_now())[self.quadrant])
        if attr == 3:
            return D.struct_(D.i8(self.meter.profile.scaler), D.enum(32))  # varh
        return super().get(attr, access)


class ClockObject(CosemObject):
    """Class 8. Setting attribute 2 moves the meter's clock offset (HES-35) and logs both times."""

    class_id = CLASS_CLOCK
    attributes = (1, 2, 3, 4, 5, 6, 7, 8, 9)

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        m = self.meter
        if attr == 2:
            return D.octets(D.datetime_to_octets(m.local_now()))
        if attr == 3:
            return D.i16(-m.profile.utc_offset_minutes)
        if attr == 4:
            return D.u8(0)
        if attr in (5, 6):  # DST not used (Turkey keeps UTC+3): wildcard dates
            return D.octets(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff")
        if attr == 7:
            return D.i8(0)
        if attr == 8:
            return D.boolean(False)
        if attr == 9:
            return D.enum(1)  # clock base: internal crystal
        return super().get(attr, access)

    def set(self, attr: int, value: D.Data) -> None:
        if attr != 2:
            raise AccessError(D.DataAccessResult.READ_WRITE_DENIED)
        try:
            cdt = D.octets_to_datetime(value.value) if value.type in (D.DataType.OCTET_STRING,
                                                                       D.DataType.DATE_TIME) else None
            if cdt is None:
                raise AccessError(D.DataAccessResult.TYPE_UNMATCHED)
            new = cdt.to_datetime()
        except D.DLMSError:
            raise AccessError(D.DataAccessResult.TYPE_UNMATCHED) from None
        if new.tzinfo is None:
            new = new.replace(tzinfo=self.meter.tz)
        self.meter.set_time(new)


class DisconnectControl(CosemObject):
    """Class 70 (Blue Book 4.5.8). control_state 0 disconnected, 1 connected, 2 ready for
    reconnection. Mode 1: remote_reconnect connects at once; modes 2/4: it only arms the relay
    (ready_for_reconnection) and a local button press (:meth:`manual_reconnect`) closes it."""

    class_id = CLASS_DISCONNECT
    attributes = (1, 2, 3, 4)
    methods = (1, 2)

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, mode: int = 1) -> None:
        super().__init__(meter, obis)
        self.control_state = 1
        self.control_mode = mode

    @property
    def output_state(self) -> bool:
        return self.control_state == 1

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 2:
            return D.boolean(self.output_state)
        if attr == 3:
            return D.enum(self.control_state)
        if attr == 4:
            return D.enum(self.control_mode)
        return super().get(attr, access)

    def set(self, attr: int, value: D.Data) -> None:
        if attr == 4 and value.type is D.DataType.ENUM and 0 <= value.value <= 6:
            self.control_mode = value.value
            return
        raise AccessError(D.DataAccessResult.READ_WRITE_DENIED if attr != 4
                          else D.DataAccessResult.TYPE_UNMATCHED)

    def action(self, method: int, param: D.Data | None, session: MeterSession) -> D.Data | None:
        if method == 1:  # remote_disconnect
            if self.control_mode == 0:
                raise AccessError(D.DataAccessResult.TEMPORARY_FAILURE)
            if self.control_state != 0:
                self.control_state = 0
                self.meter.log_event("remote_disconnection")
            return None
        if method == 2:  # remote_reconnect
            if self.control_mode == 0:
                raise AccessError(D.DataAccessResult.TEMPORARY_FAILURE)
            if self.control_state == 0:
                self.control_state = 1 if self.control_mode in (1, 3, 5) else 2
                if self.control_state == 1:
                    self.meter.log_event("remote_reconnection")
            return None
        return super().action(method, param, session)

    def manual_reconnect(self) -> None:
        if self.control_state == 2:
            self.control_state = 1
            self.meter.log_event("remote_reconnection")


def _capture(class_id: int, obis: bytes, attr: int, data_index: int = 0) -> D.Data:
    return D.struct_(D.u16(class_id), D.octets(obis), D.i8(attr), D.u16(data_index))


class ProfileGeneric(CosemObject):
    """Class 7 with selective access: selector 1 = range (restricting object = the clock column,
    Blue Book 4.3.6), selector 2 = entry. Rows come from ``rows(first, last)``."""

    class_id = CLASS_PROFILE
    attributes = (1, 2, 3, 4, 5, 6, 7, 8)
    methods = (1, 2)

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, columns: list[D.Data], period_s: int,
                 rows: Callable[[dt.datetime | None, dt.datetime | None], list[ProfileRow]],
                 capacity: int) -> None:
        super().__init__(meter, obis)
        self.columns = columns
        self.period_s = period_s
        self.rows = rows
        self.capacity = capacity

    def _row(self, r: ProfileRow, cols: range) -> D.Data:
        full = [D.octets(D.datetime_to_octets(r.when)), *r.values]
        return D.struct_(*(full[i] for i in cols))

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 2:
            return self._buffer(access)
        if access is not None:
            raise AccessError(D.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
        if attr == 3:
            return D.array(self.columns)
        if attr == 4:
            return D.u32(self.period_s)
        if attr == 5:
            return D.enum(1)  # fifo
        if attr == 6:
            return _capture(0, bytes(6), 0)
        if attr == 7:
            return D.u32(len(self.rows(None, None)))
        if attr == 8:
            return D.u32(self.capacity)
        return super().get(attr, access)

    def _buffer(self, access: D.AccessSelection | None) -> D.Data:
        ncols = len(self.columns)
        if access is None:
            return D.array(self._row(r, range(ncols)) for r in self.rows(None, None))
        try:
            params = access.parameters.items
            if access.selector == 1:
                restricting = params[0].items
                if restricting[1].value != CLOCK_OBIS or restricting[0].value != CLASS_CLOCK:
                    raise AccessError(D.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
                start, end = D.data_datetime(params[1]), D.data_datetime(params[2])
                start = start if start.tzinfo else start.replace(tzinfo=self.meter.tz)
                end = end if end.tzinfo else end.replace(tzinfo=self.meter.tz)
                selected = params[3].items if len(params) > 3 else ()
                cols = range(ncols)
                if selected:
                    wanted = [c.items[:3] for c in selected]
                    idx = [i for i, col in enumerate(self.columns) if col.items[:3] in wanted]
                    if len(idx) != len(wanted):
                        raise AccessError(D.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
                    return D.array(D.struct_(*(self._row(r, range(ncols)).items[i] for i in idx))
                                   for r in self.rows(start, end))
                return D.array(self._row(r, cols) for r in self.rows(start, end))
            if access.selector == 2:
                from_e, to_e, from_c, to_c = (p.value for p in params[:4])
                rows = self.rows(None, None)
                to_e = len(rows) if to_e == 0 else min(to_e, len(rows))
                to_c = ncols if to_c == 0 else min(to_c, ncols)
                if from_e < 1 or from_c < 1 or from_c > to_c:
                    raise AccessError(D.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)
                return D.array(self._row(r, range(from_c - 1, to_c)) for r in rows[from_e - 1 : to_e])
        except (TypeError, IndexError, AttributeError, D.DLMSError):
            raise AccessError(D.DataAccessResult.TYPE_UNMATCHED) from None
        raise AccessError(D.DataAccessResult.SCOPE_OF_ACCESS_VIOLATED)


class AssociationLN(CosemObject):
    """Class 15: object list, associated partners, and HLS method 1 (reply_to_HLS_authentication)."""

    class_id = CLASS_ASSOCIATION_LN
    version = 1
    attributes = (1, 2, 3, 6, 8)
    methods = (1,)

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr == 2:
            return D.array(self._entry(o) for o in self.meter.objects.values())
        if attr == 3:
            s = self.meter.current_session
            return D.struct_(D.i8(s.client_sap if s else 0), D.u16(1))
        if attr == 6:
            return D.octets(bytes.fromhex("60857405080201") + bytes([self._mech_id()]))
        if attr == 8:
            s = self.meter.current_session
            return D.enum(2 if s and s.associated else 1)
        return super().get(attr, access)

    def _mech_id(self) -> int:
        s = self.meter.current_session
        return {"none": 0, "lls": 1, "hls-gmac": 5}.get(s.policy.mechanism if s and s.policy else "none", 0)

    @staticmethod
    def _entry(o: CosemObject) -> D.Data:
        attrs = D.array(D.struct_(D.i8(a), D.enum(1 if a == 1 else 3), D.null()) for a in o.attributes)
        meths = D.array(D.struct_(D.i8(m), D.enum(1)) for m in o.methods)
        return D.struct_(D.u16(o.class_id), D.u8(o.version), D.octets(o.obis), D.struct_(attrs, meths))

    def action(self, method: int, param: D.Data | None, session: MeterSession) -> D.Data | None:
        if method == 1:
            return session.reply_to_hls(param)
        return super().action(method, param, session)


class CalendarStore(CosemObject):
    """Class 20 (activity calendar) / class 11 (special days): the A-XDR structures are stored as
    they were written, converted to the tariff module's dataclasses by ``osos.protocols.dlms_calendar_axdr``."""

    def __init__(self, meter: SimulatedDlmsMeter, obis: bytes, class_id: int,
                 attrs: dict[int, D.Data], writable: set[int], methods: tuple[int, ...] = ()) -> None:
        super().__init__(meter, obis)
        self.class_id = class_id
        self.values = attrs
        self.writable = writable
        self.attributes = (1, *sorted(attrs))
        self.methods = methods

    def get(self, attr: int, access: D.AccessSelection | None) -> D.Data:
        if attr in self.values:
            return self.values[attr]
        return super().get(attr, access)

    def set(self, attr: int, value: D.Data) -> None:
        if attr not in self.writable:
            raise AccessError(D.DataAccessResult.READ_WRITE_DENIED)
        if value.type is not self.values[attr].type:
            raise AccessError(D.DataAccessResult.TYPE_UNMATCHED)
        if self.class_id == CLASS_SPECIAL_DAYS:  # takes effect at once: it must make a valid calendar
            self.meter.apply_calendar(self.meter.calendar_attrs(), value)
        self.values[attr] = value

    def activate(self, when: dt.datetime | None = None) -> None:
        """Passive -> active (method 1, or the activation time reached); refused if not a valid calendar."""
        candidate = {active: self.values[passive] for active, passive in ((2, 6), (3, 7), (4, 8), (5, 9))}
        self.meter.apply_calendar(candidate, self.meter.special_days_data(), when)
        self.values.update(candidate)

    def action(self, method: int, param: D.Data | None, session: MeterSession) -> D.Data | None:
        if self.class_id == CLASS_ACTIVITY_CALENDAR and method == 1:  # activate_passive_calendar
            self.activate()
            return None
        if self.class_id == CLASS_SPECIAL_DAYS and method in (1, 2):  # insert / delete
            entries = list(self.values[2].items)
            try:
                if method == 1:
                    assert param is not None
                    idx = param.items[0].value
                    entries = [e for e in entries if e.items[0].value != idx] + [param]
                else:
                    assert param is not None
                    entries = [e for e in entries if e.items[0].value != param.value]
            except (AssertionError, TypeError, IndexError, AttributeError):
                raise AccessError(D.DataAccessResult.TYPE_UNMATCHED) from None
            table = D.array(entries)
            self.meter.apply_calendar(self.meter.calendar_attrs(), table)
            self.values[2] = table
            return None
        return super().action(method, param, session)


# --------------------------------------------------------------------------------------------


class SimulatedDlmsMeter:
    """One meter: its objects, its time (injected clock + offset), its event log, its security
    counters. Shared by all sessions; a lock keeps concurrent sessions consistent."""

    def __init__(self, clock: Callable[[], dt.datetime], secrets: MeterSecrets,
                 *, profile: MeterProfile | None = None, clients: dict[int, ClientPolicy] | None = None,
                 system_title: bytes | None = None, disconnect_mode: int = 1,
                 challenge: Callable[[int], bytes] = os.urandom, kind: str = "tri") -> None:
        if kind not in ("mono", "tri", "kombi"):
            raise ValueError("kind is mono, tri or kombi (AMR-3)")
        self.kind = kind
        self.clock = clock
        self.secrets = secrets
        self.profile = profile or MeterProfile.load()
        self.clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.tz = dt.timezone(dt.timedelta(minutes=self.profile.utc_offset_minutes))
        self.system_title = system_title or (self.profile.flag.encode("ascii")[:3]
                                             + int(self.profile.serial).to_bytes(5, "big"))
        if len(self.system_title) != 8:
            raise ValueError("system title must be 8 bytes")
        self.challenge = challenge
        self.lock = threading.RLock()
        self.offset = dt.timedelta(0)
        self.server_ic = 1  # invocation counter of the meter's own ciphered APDUs
        self.client_ic: dict[bytes, int] = {}  # last counter seen per client system title
        self.current_session: MeterSession | None = None
        self.event_hooks: list[Callable[[str], None]] = []  # called with the event name (alarm push)
        start = self.local_now()
        epoch_day = (start - dt.timedelta(days=self.profile.history_days)).date()
        self.epoch = dt.datetime.combine(epoch_day, dt.time(0), tzinfo=self.tz)
        self.energy = EnergyModel(self.profile, self.epoch, self._initial_calendar())
        outage = self.epoch + dt.timedelta(hours=30, minutes=12)
        self.events: list[tuple[dt.datetime, int]] = [
            (outage, self.profile.events["power_down"]),
            (outage + dt.timedelta(minutes=7), self.profile.events["power_up"]),
        ]
        self.objects: dict[tuple[int, bytes], CosemObject] = {}
        self._build_objects(disconnect_mode)

    # time ---------------------------------------------------------------------------------
    def local_now(self) -> dt.datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the meter clock function must return aware datetimes")
        return (now + self.offset).astimezone(self.tz)

    def set_time(self, new: dt.datetime) -> None:
        with self.lock:
            old = self.local_now()
            self.offset = new - self.clock()
            self.log_event("clock_adjusted_old", old)
            self.log_event("clock_adjusted_new", self.local_now())

    def registers(self) -> list[int]:
        return self.energy.registers(self.local_now())

    def log_event(self, name: str, when: dt.datetime | None = None) -> None:
        with self.lock:
            self.events.append((when or self.local_now(), self.profile.events[name]))
            hooks = list(self.event_hooks)
        for hook in hooks:
            hook(name)

    # objects --------------------------------------------------------------------------------
    def add(self, obj: CosemObject) -> None:
        self.objects[(obj.class_id, obj.obis)] = obj

    def find(self, class_id: int, obis: bytes) -> CosemObject | None:
        return self.objects.get((class_id, obis))

    @property
    def disconnector(self) -> DisconnectControl:
        obj = self.objects[(CLASS_DISCONNECT, DISCONNECT_OBIS)]
        assert isinstance(obj, DisconnectControl)
        return obj

    def _periodic_rows(self, period_s: int, capacity: int, values: Callable[[dt.datetime], list[D.Data]],
                       ) -> Callable[[dt.datetime | None, dt.datetime | None], list[ProfileRow]]:
        """Rows of a profile captured every ``period_s`` (aligned to the hour) since the history
        start, plus an entry at the moment of each power cut (AMR-5, status bit 7)."""
        step = dt.timedelta(seconds=period_s)

        def floor(t: dt.datetime) -> dt.datetime:
            return self.epoch + step * ((t - self.epoch) // step)

        def rows(start: dt.datetime | None, end: dt.datetime | None) -> list[ProfileRow]:
            last = floor(self.local_now())
            first = max(self.epoch + step, last - step * (capacity - 1))
            lo = first
            if start is not None:
                s0 = start.astimezone(self.tz)
                lo = max(first, s0 if floor(s0) == s0 else floor(s0) + step)
            hi = last if end is None else min(last, end.astimezone(self.tz))
            out = []
            t = lo
            while t <= hi:
                out.append(ProfileRow(t, [D.u8(0), *values(t)]))
                t += step
            lo_raw = first - step if start is None else max(first - step, start.astimezone(self.tz))
            with self.lock:
                cuts = [w for w, code in self.events if code == self.profile.events["power_down"] and lo_raw < w <= hi]
            for w in cuts:
                if floor(w) != w:
                    out.append(ProfileRow(w, [D.u8(STATUS_POWER_DOWN), *values(w)]))
            out.sort(key=lambda r: r.when)
            return out

        return rows

    def reactive(self, local: dt.datetime) -> list[int]:
        """Kombi meters: [Q1, Q2, Q3, Q4] reactive energy (register units), a fixed share of the active
        energy used since the history start."""
        used = self.energy.registers(local)[0] - sum(self.profile.initial[1:])
        return [q0 + used * pct // 100 for q0, pct in zip(self.profile.reactive_initial,
                                                          self.profile.reactive_percent, strict=True)]

    def _event_rows(self, start: dt.datetime | None, end: dt.datetime | None) -> list[ProfileRow]:
        with self.lock:
            evs = list(self.events)
        return [ProfileRow(w, [D.u8(code)]) for w, code in evs
                if (start is None or w >= start) and (end is None or w <= end)]

    def _build_objects(self, disconnect_mode: int) -> None:
        p = self.profile
        self.add(ClockObject(self, CLOCK_OBIS))
        for t, ob in enumerate(ENERGY_OBIS):
            self.add(EnergyRegister(self, ob, t))
        self.add(DataObject(self, LDN_OBIS, lambda: D.octets(p.logical_device_name.encode("ascii"))))
        self.add(DataObject(self, SERIAL_OBIS, lambda: D.octets(p.serial.encode("ascii"))))
        self.add(DataObject(self, STATUS_OBIS, lambda: D.u8(0)))
        self.add(DataObject(self, EVENT_CODE_OBIS, lambda: D.u8(self.events[-1][1] if self.events else 0)))
        self.add(DataObject(self, INVOCATION_COUNTER_OBIS, self._expected_ic))
        self.add(DisconnectControl(self, DISCONNECT_OBIS, disconnect_mode))
        self.add(ProfileGeneric(
            self, LOAD_PROFILE_OBIS,
            [_capture(CLASS_CLOCK, CLOCK_OBIS, 2), _capture(CLASS_DATA, STATUS_OBIS, 2),
             _capture(CLASS_REGISTER, ENERGY_OBIS[0], 2)],
            3600, self._periodic_rows(3600, p.profile_capacity, lambda t: [D.u32(self.energy.registers(t)[0])]),
            p.profile_capacity))
        if self.kind == "kombi":  # AMR-2/AMR-3: reactive quadrants; AMR-5: load profile 2, 15 minutes
            for q, ob in enumerate(REACTIVE_OBIS):
                self.add(ReactiveRegister(self, ob, q))

            def lp2(t: dt.datetime) -> list[D.Data]:
                q = self.reactive(t)
                return [D.u32(self.energy.registers(t)[0]), D.u32(q[0]), D.u32(q[3])]

            self.add(ProfileGeneric(
                self, LOAD_PROFILE_2_OBIS,
                [_capture(CLASS_CLOCK, CLOCK_OBIS, 2), _capture(CLASS_DATA, STATUS_OBIS, 2),
                 _capture(CLASS_REGISTER, ENERGY_OBIS[0], 2), _capture(CLASS_REGISTER, REACTIVE_OBIS[0], 2),
                 _capture(CLASS_REGISTER, REACTIVE_OBIS[3], 2)],
                p.profile2_period_s, self._periodic_rows(p.profile2_period_s, p.profile2_capacity, lp2),
                p.profile2_capacity))
        self.add(ProfileGeneric(
            self, EVENT_LOG_OBIS,
            [_capture(CLASS_CLOCK, CLOCK_OBIS, 2), _capture(CLASS_DATA, EVENT_CODE_OBIS, 2)],
            0, self._event_rows, 100))
        self.add(AssociationLN(self, ASSOCIATION_OBIS))
        self._build_calendar()

    def _build_calendar(self) -> None:
        from osos.protocols import dlms_calendar_axdr as cc

        active = cc.default_calendar_attributes(self.profile.tariff_by_hour)
        self.add(CalendarStore(self, ACTIVITY_CALENDAR_OBIS, CLASS_ACTIVITY_CALENDAR,
                               {2: active[0], 3: active[1], 4: active[2], 5: active[3],
                                6: active[0], 7: active[1], 8: active[2], 9: active[3],
                                10: D.octets(NO_TIME)},
                               writable={6, 7, 8, 9, 10}, methods=(1,)))
        self.add(CalendarStore(self, SPECIAL_DAYS_OBIS, CLASS_SPECIAL_DAYS,
                               {2: cc.default_special_days()}, writable={2}, methods=(1, 2)))

    # tariff calendar (AMR-4, HES-37) --------------------------------------------------------------
    def calendar_attrs(self) -> dict[int, D.Data]:
        obj = self.objects[(CLASS_ACTIVITY_CALENDAR, ACTIVITY_CALENDAR_OBIS)]
        return {i: obj.get(i, None) for i in (2, 3, 4, 5)}

    def special_days_data(self) -> D.Data:
        return self.objects[(CLASS_SPECIAL_DAYS, SPECIAL_DAYS_OBIS)].get(2, None)

    def apply_calendar(self, active: dict[int, D.Data], special_days: D.Data,
                       when: dt.datetime | None = None) -> None:
        """Make ``active`` + ``special_days`` the calendar the registers follow from ``when`` (now)."""
        from osos.protocols import dlms_calendar_axdr as cc
        from osos.tariff.dlms_calendar import ActivityCalendar, CalendarError

        try:
            calendar = ActivityCalendar.from_dlms(cc.calendar_from_data(active, special_days))
            calendar.day_switches((when or self.local_now()).date())  # evaluates: catches unusable ones
        except (CalendarError, D.DLMSError, TypeError, ValueError):
            raise AccessError(D.DataAccessResult.TYPE_UNMATCHED) from None
        with self.lock:
            self.energy.change_calendar(when or self.local_now(), calendar)

    def tick(self) -> None:
        """Run what is due at the meter's current time: the passive calendar's activation time."""
        cal = self.objects.get((CLASS_ACTIVITY_CALENDAR, ACTIVITY_CALENDAR_OBIS))
        if not isinstance(cal, CalendarStore):
            return
        raw = cal.values[10].value
        try:
            due = D.octets_to_datetime(raw).to_datetime()
        except D.DLMSError:
            return  # wildcard: no activation planned
        due = due if due.tzinfo else due.replace(tzinfo=self.tz)
        if due <= self.local_now():
            cal.values[10] = D.octets(NO_TIME)
            with contextlib.suppress(AccessError):  # an invalid passive calendar is not activated
                cal.activate(due)

    def _initial_calendar(self) -> Any:
        from osos.protocols import dlms_calendar_axdr as cc
        from osos.tariff.dlms_calendar import ActivityCalendar

        attrs = dict(zip((2, 3, 4, 5), cc.default_calendar_attributes(self.profile.tariff_by_hour), strict=True))
        return ActivityCalendar.from_dlms(cc.calendar_from_data(attrs, cc.default_special_days()))

    def _expected_ic(self) -> D.Data:
        """The smallest invocation counter the meter accepts next from the management client."""
        with self.lock:
            seen = max(self.client_ic.values(), default=0)
        return D.u32(seen + 1)

    # push (data notification) ----------------------------------------------------------------
    def push_apdu(self, reason: str = "scheduled", ciphered: bool = False) -> bytes:
        """A DataNotification carrying the IDIS-style push object list: logical device name, clock,
        total import energy, relay state and the last event code (HES-11 pushed alarms, HES-34).
        Ciphered pushes use general-glo-cipher so the listener learns the meter's system title."""
        with self.lock:
            now = self.local_now()
            last_event = self.events[-1][1] if self.events else 0
            self._push_id = getattr(self, "_push_id", 0) + 1
            body = D.struct_(
                D.octets(self.profile.logical_device_name.encode("ascii")),
                D.visible(reason),
                D.octets(D.datetime_to_octets(now)),
                D.u32(self.registers()[0]),
                D.boolean(self.disconnector.output_state),
                D.u8(last_event),
            )
            plain = D.encode_apdu(D.DataNotification(body, self._push_id, D.datetime_to_octets(now)))
            if not ciphered:
                return plain
            if self.secrets.ek is None or self.secrets.ak is None:
                raise ValueError("a ciphered push needs the meter's keys")
            return D.cipher_apdu(plain, system_title=self.system_title, invocation_counter=self.next_server_ic(),
                                 ek=self.secrets.ek, ak=self.secrets.ak, general=True)

    def new_session(self, client_sap: int) -> MeterSession:
        from osos.field.meters.dlms_session import MeterSession

        return MeterSession(self, client_sap)

    def next_server_ic(self) -> int:
        with self.lock:
            ic = self.server_ic
            self.server_ic += 1
            return ic

    def accept_client_ic(self, system_title: bytes, ic: int) -> int | None:
        """Record ``ic`` if it is newer than the last one; else return the counter expected."""
        with self.lock:
            last = self.client_ic.get(system_title, 0)
            if ic <= last:
                return last + 1
            self.client_ic[system_title] = ic
            return None
